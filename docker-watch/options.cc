#include "docker-watch/options.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>

namespace hsp::docker {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string> split_list(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string_view::npos) comma = s.size();
    std::string item(s.substr(start, comma - start));
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back()))) item.pop_back();
    size_t lead = 0;
    while (lead < item.size() && std::isspace(static_cast<unsigned char>(item[lead]))) ++lead;
    out.push_back(item.substr(lead));
    start = comma + 1;
  }
  return out;
}

// Where a value came from, for error messages: "--polling-interval" or
// "CADDY_DOCKER_POLLING_INTERVAL".
using Setter = std::function<std::optional<std::string>(Options&, const std::string& value)>;

std::optional<std::string> set_bool(bool& field, const std::string& value) {
  auto b = parse_bool(value);
  if (!b) return "expected true or false";
  field = *b;
  return std::nullopt;
}

std::optional<std::string> set_duration(std::chrono::milliseconds& field, const std::string& value,
                                        std::chrono::milliseconds min) {
  auto d = parse_go_duration(value);
  if (!d) return "expected a duration such as 100ms, 30s or 1m";
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
  if (ms < min) return "must be at least " + std::to_string(min.count()) + "ms";
  field = ms;
  return std::nullopt;
}

std::optional<std::string> set_sockets(Options& o, const std::string& value) {
  o.docker_sockets.clear();
  for (const auto& item : split_list(value)) {
    if (item.empty()) return "empty socket in the list";
    if (item.rfind("unix://", 0) == 0) {
      o.docker_sockets.push_back(item.substr(7));
    } else if (item.front() == '/') {
      o.docker_sockets.push_back(item);
    } else {
      // Docker over TCP needs TLS client certificates (CADDY_DOCKER_CERTS_PATH); a Swarm
      // manager's socket is what production mounts, so only unix sockets are spoken for now.
      return "'" + item + "': only unix sockets (unix:///path) are supported yet";
    }
    if (o.docker_sockets.back().size() >= 108) return "'" + item + "': socket path too long";
  }
  return std::nullopt;
}

bool valid_cidr(const std::string& s) {
  size_t slash = s.find('/');
  if (slash == std::string::npos) return false;
  std::string addr = s.substr(0, slash);
  std::string bits = s.substr(slash + 1);
  if (bits.empty() || bits.size() > 3) return false;
  for (char c : bits)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  int n = std::atoi(bits.c_str());
  unsigned char buf[16];
  if (inet_pton(AF_INET, addr.c_str(), buf) == 1) return n <= 32;
  if (inet_pton(AF_INET6, addr.c_str(), buf) == 1) return n <= 128;
  return false;
}

struct Spec {
  const char* flag;
  const char* env;
  const char* default_text;
  bool boolean;
  Setter set;
};

const std::vector<Spec>& specs() {
  static const std::vector<Spec> kSpecs = {
      {"mode", "CADDY_DOCKER_MODE", "standalone; or controller, server", false,
       [](Options& o, const std::string& v) -> std::optional<std::string> {
         const std::string m = lower(v);
         if (m == "standalone") {
           o.mode = Mode::standalone;
         } else if (m == "controller") {
           o.mode = Mode::controller;
         } else if (m == "server") {
           o.mode = Mode::server;
         } else {
           return "expected standalone, controller or server";
         }
         return std::nullopt;
       }},
      {"docker-sockets", "CADDY_DOCKER_SOCKETS", "$DOCKER_HOST or unix:///var/run/docker.sock",
       false, set_sockets},
      {"docker-certs-path", "CADDY_DOCKER_CERTS_PATH", "", false,
       [](Options&, const std::string& v) -> std::optional<std::string> {
         for (const auto& item : split_list(v))
           if (!item.empty()) return "TLS to a Docker daemon over TCP is not supported yet";
         return std::nullopt;
       }},
      {"docker-apis-version", "CADDY_DOCKER_APIS_VERSION", "negotiated", false,
       [](Options& o, const std::string& v) -> std::optional<std::string> {
         o.docker_apis_version.clear();
         for (const auto& item : split_list(v)) {
           if (!item.empty()) {
             size_t dot = item.find('.');
             bool ok = dot != std::string::npos && dot > 0 && dot + 1 < item.size();
             for (size_t i = 0; ok && i < item.size(); ++i)
               ok = i == dot || std::isdigit(static_cast<unsigned char>(item[i]));
             if (!ok) return "'" + item + "': expected an API version such as 1.41";
           }
           o.docker_apis_version.push_back(item);
         }
         return std::nullopt;
       }},
      {"controller-network", "CADDY_CONTROLLER_NETWORK", "", false,
       [](Options& o, const std::string& v) -> std::optional<std::string> {
         if (!valid_cidr(v)) return "expected a CIDR such as 10.200.200.0/24";
         o.controller_network = v;
         return std::nullopt;
       }},
      {"ingress-networks", "CADDY_INGRESS_NETWORKS", "the gateway container's networks", false,
       [](Options& o, const std::string& v) -> std::optional<std::string> {
         o.ingress_networks.clear();
         for (const auto& item : split_list(v)) {
           if (item.empty()) return "empty network name in the list";
           o.ingress_networks.push_back(item);
         }
         return std::nullopt;
       }},
      {"caddyfile-path", "CADDY_DOCKER_CADDYFILE_PATH", "", false,
       [](Options& o, const std::string& v) -> std::optional<std::string> {
         o.caddyfile_path = v;
         return std::nullopt;
       }},
      {"envfile", "CADDY_DOCKER_ENVFILE", "", false,
       [](Options& o, const std::string& v) -> std::optional<std::string> {
         o.envfile = v;
         return std::nullopt;
       }},
      {"label-prefix", "CADDY_DOCKER_LABEL_PREFIX", "caddy", false,
       [](Options& o, const std::string& v) -> std::optional<std::string> {
         if (v.empty() || v.find_first_of(". \t") != std::string::npos)
           return "expected a non-empty prefix without dots or spaces";
         o.label_prefix = v;
         return std::nullopt;
       }},
      {"proxy-service-tasks", "CADDY_DOCKER_PROXY_SERVICE_TASKS", "true", true,
       [](Options& o, const std::string& v) { return set_bool(o.proxy_service_tasks, v); }},
      {"process-caddyfile", "CADDY_DOCKER_PROCESS_CADDYFILE", "true", true,
       [](Options& o, const std::string& v) { return set_bool(o.process_caddyfile, v); }},
      {"scan-stopped-containers", "CADDY_DOCKER_SCAN_STOPPED_CONTAINERS", "false", true,
       [](Options& o, const std::string& v) { return set_bool(o.scan_stopped_containers, v); }},
      {"polling-interval", "CADDY_DOCKER_POLLING_INTERVAL", "30s", false,
       [](Options& o, const std::string& v) {
         return set_duration(o.polling_interval, v, std::chrono::milliseconds(1000));
       }},
      {"event-throttle-interval", "CADDY_DOCKER_EVENT_THROTTLE_INTERVAL", "100ms", false,
       [](Options& o, const std::string& v) {
         return set_duration(o.event_throttle_interval, v, std::chrono::milliseconds(0));
       }},
      {"push-secret-file", "HSP_PUSH_SECRET_FILE", "", false,
       [](Options& o, const std::string& v) -> std::optional<std::string> {
         o.push_secret_file = v;
         return std::nullopt;
       }},
      {"controller-servers", "HSP_CONTROLLER_SERVERS", "", false,
       [](Options& o, const std::string& v) -> std::optional<std::string> {
         o.controller_servers.clear();
         for (const auto& item : split_list(v)) {
           if (item.empty()) continue;
           if (item.rfind(':') == std::string::npos || item.back() == ':')
             return "'" + item + "': expected host:port";
           o.controller_servers.push_back(item);
         }
         return std::nullopt;
       }},
      {"admin-listen", "HSP_ADMIN_LISTEN", "<controller network address>:2019", false,
       [](Options& o, const std::string& v) -> std::optional<std::string> {
         if (v.rfind(':') == std::string::npos) return "expected ip:port";
         o.admin_listen = v;
         return std::nullopt;
       }},
      {"push-check-interval", "HSP_PUSH_CHECK_INTERVAL", "5s", false,
       [](Options& o, const std::string& v) {
         return set_duration(o.push_check_interval, v, std::chrono::milliseconds(100));
       }},
      {"log-level", "CADDY_DOCKER_LOG_LEVEL", "info", false,
       [](Options& o, const std::string& v) -> std::optional<std::string> {
         const std::string l = lower(v);
         if (l != "debug" && l != "info" && l != "warn" && l != "error")
           return "expected debug, info, warn or error";
         o.log_level = l;
         return std::nullopt;
       }},
  };
  return kSpecs;
}

}  // namespace

std::optional<bool> parse_bool(std::string_view text) {
  const std::string v = lower(text);
  if (v == "true" || v == "yes" || v == "1") return true;
  if (v == "false" || v == "no" || v == "0") return false;
  return std::nullopt;
}

bool is_option_flag(std::string_view flag) {
  for (const auto& s : specs())
    if (flag == s.flag) return true;
  return false;
}

bool is_bool_flag(std::string_view flag) {
  for (const auto& s : specs())
    if (flag == s.flag) return s.boolean;
  return false;
}

Getenv process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

Result<Options> resolve(const FlagValues& flags, const Getenv& env, std::string default_socket) {
  Options o;
  Errors errors;
  for (const auto& [flag, value] : flags) {
    if (!is_option_flag(flag)) errors.push_back({{}, "unknown option --" + flag});
  }
  auto docker_host = env("DOCKER_HOST");
  if (docker_host && !docker_host->empty()) {
    if (auto err = set_sockets(o, *docker_host)) errors.push_back({{}, "DOCKER_HOST: " + *err});
  } else {
    o.docker_sockets = {std::move(default_socket)};
  }
  for (const auto& spec : specs()) {
    std::optional<std::string> value;
    std::string origin;
    if (auto e = env(spec.env); e && !e->empty()) {
      value = *e;
      origin = spec.env;
    } else if (auto it = flags.find(spec.flag); it != flags.end()) {
      value = it->second;
      origin = std::string("--") + spec.flag;
    }
    if (!value) continue;
    if (auto err = spec.set(o, *value)) {
      errors.push_back({{}, origin + "='" + *value + "': " + *err});
    }
  }
  if (auto e = env("CADDY_DOCKER_NO_SCOPE"); e && !e->empty()) {
    if (auto err = set_bool(o.no_scope, *e))
      errors.push_back({{}, "CADDY_DOCKER_NO_SCOPE='" + *e + "': " + *err});
  }
  if (o.docker_apis_version.size() > o.docker_sockets.size()) {
    errors.push_back({{}, "--docker-apis-version has more entries than --docker-sockets"});
  }
  o.docker_apis_version.resize(o.docker_sockets.size());
  if (o.mode != Mode::standalone && o.push_secret_file.empty()) {
    errors.push_back({{},
                      std::string("mode ") +
                          (o.mode == Mode::controller ? "controller" : "server") +
                          " needs HSP_PUSH_SECRET_FILE (--push-secret-file): the secret "
                          "that authenticates pushes"});
  }
  if (o.mode == Mode::server && o.controller_network.empty() && o.admin_listen.empty()) {
    errors.push_back({{},
                      "mode server needs CADDY_CONTROLLER_NETWORK (its admin listener binds "
                      "there) or HSP_ADMIN_LISTEN"});
  }
  if (o.mode == Mode::controller && o.controller_network.empty() && o.controller_servers.empty()) {
    errors.push_back({{},
                      "mode controller needs CADDY_CONTROLLER_NETWORK (to find servers in "
                      "Docker) or HSP_CONTROLLER_SERVERS"});
  }
  if (!errors.empty()) return errors;
  return o;
}

std::optional<std::chrono::nanoseconds> parse_go_duration(std::string_view text) {
  if (text == "0") return std::chrono::nanoseconds(0);
  if (text.empty()) return std::nullopt;
  static const std::pair<std::string_view, double> kUnits[] = {
      {"ns", 1.0}, {"us", 1e3}, {"µs", 1e3}, {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
  double total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
      ++i;
    if (i == start) return std::nullopt;
    std::string number(text.substr(start, i - start));
    if (number == "." || number.find('.') != number.rfind('.')) return std::nullopt;
    double n = std::strtod(number.c_str(), nullptr);
    size_t unit_start = i;
    while (i < text.size() && !std::isdigit(static_cast<unsigned char>(text[i])) && text[i] != '.')
      ++i;
    std::string_view unit = text.substr(unit_start, i - unit_start);
    bool found = false;
    for (const auto& [name, scale] : kUnits) {
      if (unit == name) {
        total += n * scale;
        found = true;
        break;
      }
    }
    if (!found) return std::nullopt;
  }
  if (total > 9.2e18) return std::nullopt;
  return std::chrono::nanoseconds(static_cast<int64_t>(std::llround(total)));
}

std::string describe_options() {
  std::string out;
  for (const auto& s : specs()) {
    std::string line = "  --" + std::string(s.flag) + (s.boolean ? "[=BOOL]" : " VALUE");
    line.resize(std::max<size_t>(line.size() + 1, 38), ' ');
    line += std::string(s.env);
    if (*s.default_text) line += std::string(" (default: ") + s.default_text + ")";
    out += line + "\n";
  }
  return out;
}

Errors load_envfile(const std::string& path) {
  Errors errors;
  std::ifstream in(path);
  if (!in) return {Error{{path, 0, 0}, "cannot read the environment file"}};
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t lead = line.find_first_not_of(" \t");
    if (lead == std::string::npos || line[lead] == '#') continue;
    line = line.substr(lead);
    if (line.rfind("export ", 0) == 0) line = line.substr(7);
    size_t eq = line.find('=');
    if (eq == std::string::npos || eq == 0) {
      errors.push_back({{path, n, 1}, "expected KEY=VALUE"});
      continue;
    }
    std::string key = line.substr(0, eq);
    std::string value = line.substr(eq + 1);
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    setenv(key.c_str(), value.c_str(), 0);
  }
  return errors;
}

}  // namespace hsp::docker

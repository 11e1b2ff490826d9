#include "config/address.h"

#include <arpa/inet.h>

#include <cctype>

namespace hsp::config {

bool split_host_port(const std::string& hp, std::string& host, std::string& port) {
  size_t i = hp.rfind(':');
  if (i == std::string::npos) return false;  // missing port
  if (!hp.empty() && hp[0] == '[') {
    size_t end = hp.find(']');
    if (end == std::string::npos) return false;
    if (end + 1 == hp.size()) return false;  // missing port
    if (end + 1 != i) return false;          // too many colons / missing port
    host = hp.substr(1, end - 1);
    if (host.find_first_of("[]") != std::string::npos) return false;
  } else {
    host = hp.substr(0, i);
    if (host.find(':') != std::string::npos) return false;  // too many colons
    if (host.find_first_of("[]") != std::string::npos) return false;
  }
  port = hp.substr(i + 1);
  if (port.find_first_of("[]") != std::string::npos) return false;
  return true;
}

std::string join_host_port(const std::string& host, const std::string& port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + port;
  return host + ":" + port;
}

std::string lower_except_placeholders(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  bool escaped = false;
  bool in_ph = false;
  for (char ch : s) {
    if (ch == '\\' && !escaped) {
      escaped = true;
      out += ch;
      continue;
    }
    if (ch == '{' && !escaped) in_ph = true;
    if (ch == '}' && in_ph && !escaped) in_ph = false;
    out += in_ph ? ch : static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    escaped = false;
  }
  return out;
}

static bool parse_ip(const std::string& s, bool& v6) {
  unsigned char buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) {
    v6 = false;
    return true;
  }
  if (inet_pton(AF_INET6, s.c_str(), buf) == 1) {
    v6 = true;
    return true;
  }
  return false;
}

bool valid_ip_or_cidr(const std::string& s) {
  size_t slash = s.find('/');
  bool v6 = false;
  if (slash == std::string::npos) return parse_ip(s, v6);
  if (!parse_ip(s.substr(0, slash), v6)) return false;
  std::string bits = s.substr(slash + 1);
  if (bits.empty() || bits.size() > 3) return false;
  for (char c : bits)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  int n = std::stoi(bits);
  return n <= (v6 ? 128 : 32);
}

bool parse_site_address(const std::string& key, RawAddress& out, std::string& err) {
  std::string remaining = key;
  size_t b = remaining.find_first_not_of(" \t\r\n");
  size_t e = remaining.find_last_not_of(" \t\r\n");
  remaining = b == std::string::npos ? "" : remaining.substr(b, e - b + 1);
  RawAddress a;
  a.original = remaining;
  size_t sch = remaining.find("://");
  if (sch != std::string::npos) {
    a.scheme = remaining.substr(0, sch);
    remaining = remaining.substr(sch + 3);
  }
  size_t slash = remaining.find('/');
  std::string hostport = remaining.substr(0, slash);
  if (slash != std::string::npos) a.path = "/" + remaining.substr(slash + 1);
  std::string host, port;
  if (split_host_port(hostport, host, port)) {
    a.host = host;
    a.port = port;
  } else if (split_host_port(hostport + ":", host, port)) {
    a.host = host;
    a.port = port;
  } else {
    a.host = hostport;
  }
  if (!a.port.empty()) {
    bool digits = a.port.size() <= 6;
    for (char c : a.port) digits = digits && std::isdigit(static_cast<unsigned char>(c));
    if (!digits) {
      err = "invalid port '" + a.port + "'";
      return false;
    }
    if (std::stoi(a.port) > 65535) {
      err = "port " + a.port + " is out of range";
      return false;
    }
  }
  // Normalize.
  std::string h = a.host;
  bool v6 = false;
  unsigned char buf[16];
  if (inet_pton(AF_INET6, h.c_str(), buf) == 1 && parse_ip(h, v6) && v6) {
    char txt[INET6_ADDRSTRLEN];
    if (inet_ntop(AF_INET6, buf, txt, sizeof txt)) h = txt;
  }
  a.scheme = lower_except_placeholders(a.scheme);
  a.host = lower_except_placeholders(h);
  out = a;
  return true;
}

bool parse_upstream_address(const std::string& text, UpstreamAddress& out, std::string& err) {
  std::string addr = text;
  std::string network, scheme, host, port;
  size_t sch = addr.find("://");
  if (sch != std::string::npos) {
    if (addr.find('{') != std::string::npos) {
      err = "placeholders are not allowed when an upstream address contains a scheme";
      return false;
    }
    scheme = addr.substr(0, sch);
    std::string rest = addr.substr(sch + 3);
    size_t cut = rest.find_first_of("/?#");
    if (cut != std::string::npos) {
      err = "upstream URLs only support scheme, host, and port components";
      return false;
    }
    std::string h, p;
    if (split_host_port(rest, h, p)) {
      host = h;
      port = p;
    } else {
      host = rest;
      if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    }
    if (scheme == "http" && port == "443") {
      err = "upstream address has conflicting scheme (http://) and port (:443, the HTTPS port)";
      return false;
    }
    if (scheme == "https" && port == "80") {
      err = "upstream address has conflicting scheme (https://) and port (:80, the HTTP port)";
      return false;
    }
    if (scheme == "h2c" && port == "443") {
      err = "upstream address has conflicting scheme (h2c://) and port (:443, the HTTPS port)";
      return false;
    }
    if (port.empty()) port = scheme == "https" ? "443" : "80";
  } else {
    size_t slash = addr.find('/');
    if (slash != std::string::npos) {
      network = addr.substr(0, slash);
      for (auto& c : network) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      addr = addr.substr(slash + 1);
    }
    if (!split_host_port(addr, host, port)) {
      host = addr;
      port.clear();
    }
    if (port.empty() && host.find('{') == std::string::npos) port = "80";
  }
  if (network == "unix+h2c") {
    network = "unix";
    scheme = "h2c";
  }
  if (!port.empty()) {
    bool ok = port.find('{') != std::string::npos;
    if (!ok) {
      ok = port.size() <= 5;
      for (char c : port) ok = ok && std::isdigit(static_cast<unsigned char>(c));
      ok = ok && std::stoi(port) <= 65535;
    }
    if (!ok && network.empty()) {
      err = "invalid port '" + port + "'";
      return false;
    }
  }
  out.scheme = scheme;
  out.network = network;
  if (!network.empty())
    out.dial = network + "/" + (port.empty() ? host : join_host_port(host, port));
  else if (port.empty())
    out.dial = host;
  else
    out.dial = join_host_port(host, port);
  return true;
}

}  // namespace hsp::config

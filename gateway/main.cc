// hsp-gateway: run | adapt | validate | certs | version.
//
// Signals are handled synchronously on the main thread (sigwait), so reload and shutdown never
// run inside a signal handler: SIGHUP reloads the config file (a bad file is logged error by
// error and the old snapshot keeps serving); SIGTERM/SIGINT stop accepting, let requests in
// flight finish within grace_period and exit 0; a second SIGTERM/SIGINT exits at once (rc 1).
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "acme/certs_cli.h"
#include "acme/manager.h"
#include "acme/storage.h"
#include "cluster/admin_http.h"
#include "cluster/controller.h"
#include "cluster/server.h"
#include "config/adapt_json.h"
#include "config/compile.h"
#include "docker-watch/options.h"
#include "docker-watch/watcher.h"
#include "engine/engine.h"
#include "engine/tls_certs.h"
#include "http1/server.h"
#include "labels/generate.h"
#include "tls/acme_challenges.h"
#include "util/log.h"

#ifdef HSP_MIMALLOC
#include <mimalloc.h>
#endif

#ifndef HSP_VERSION
#define HSP_VERSION "0.0.0"
#endif

namespace {

using namespace hsp;

// The embedded demo: a proxied site on :8080 whose upstream is a second site on :8081 that
// answers with a small page, so `hsp-gateway run` shows the proxy path working end to end.
std::string demo_caddyfile(int port) {
  std::string front = std::to_string(port);
  std::string back = std::to_string(port + 1);
  return "{\n"
         "\tadmin off\n"
         "}\n"
         "\n"
         "# The site you visit: a reverse proxy to the demo upstream below.\n"
         "http://:" +
         front +
         " {\n"
         "\tbind 127.0.0.1\n"
         "\treverse_proxy 127.0.0.1:" +
         back +
         "\n"
         "}\n"
         "\n"
         "# The demo upstream.\n"
         "http://:" +
         back +
         " {\n"
         "\tbind 127.0.0.1\n"
         "\theader Content-Type \"text/html; charset=utf-8\"\n"
         "\trespond <<HTML\n"
         "\t\t<!doctype html>\n"
         "\t\t<html><head><title>hsp-gateway</title></head><body>\n"
         "\t\t<h1>hsp-gateway works</h1>\n"
         "\t\t<p>This page came from the demo upstream on 127.0.0.1:" +
         back + ", proxied by the site on 127.0.0.1:" + front +
         ".</p>\n"
         "\t\t<p>Run <code>hsp-gateway run --config Caddyfile</code> to serve your own.</p>\n"
         "\t\t</body></html>\n"
         "\t\tHTML 200\n"
         "}\n";
}

struct Args {
  std::string command;
  std::string config;
  std::string labels;                  // adapt --labels FILE
  std::vector<std::string> upstreams;  // adapt --upstream NAME (repeatable)
  bool docker = false;                 // run/adapt --docker
  docker::FlagValues docker_flags;     // CDP's options given as flags
  int threads = 0;
  bool quic_retry = false;    // --quic-retry: every new QUIC client proves its address first
  std::string data_dir;       // --data-dir (else $HSP_DATA_DIR, else the XDG data directory)
  std::string health_listen;  // --health-listen (else $HSP_HEALTH_LISTEN): the health probe
  int demo_port = 8080;
  bool demo_port_set = false;
  bool json = false;                    // certs --json
  std::vector<std::string> positional;  // certs renew NAME
  bool bad = false;
  std::string error;
};

Args parse_args(int argc, char** argv) {
  Args a;
  if (argc < 2) {
    a.bad = true;
    return a;
  }
  a.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* name) -> std::string {
      std::string prefix = std::string(name) + "=";
      if (arg.rfind(prefix, 0) == 0) return arg.substr(prefix.size());
      if (i + 1 < argc) return argv[++i];
      a.bad = true;
      a.error = std::string("missing value for ") + name;
      return {};
    };
    auto number = [&](const char* name, int lo, int hi) {
      std::string v = value(name);
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < lo || n > hi) {
        a.bad = true;
        a.error = std::string("bad value for ") + name + ": '" + v + "' (expected " +
                  std::to_string(lo) + " to " + std::to_string(hi) + ")";
        return 0;
      }
      return static_cast<int>(n);
    };
    if (arg == "--config" || arg.rfind("--config=", 0) == 0) {
      a.config = value("--config");
    } else if (arg == "--labels" || arg.rfind("--labels=", 0) == 0) {
      a.labels = value("--labels");
    } else if (arg == "--upstream" || arg.rfind("--upstream=", 0) == 0) {
      a.upstreams.push_back(value("--upstream"));
    } else if (arg == "--threads" || arg.rfind("--threads=", 0) == 0) {
      a.threads = number("--threads", 1, 1024);
    } else if (arg == "--demo-port" || arg.rfind("--demo-port=", 0) == 0) {
      a.demo_port = number("--demo-port", 1, 65534);  // the demo also takes PORT+1
      a.demo_port_set = true;
    } else if (arg == "--data-dir" || arg.rfind("--data-dir=", 0) == 0) {
      a.data_dir = value("--data-dir");
    } else if (arg == "--health-listen" || arg.rfind("--health-listen=", 0) == 0) {
      a.health_listen = value("--health-listen");
    } else if (a.command == "health" && arg.rfind("--", 0) != 0) {
      a.positional.push_back(arg);
    } else if (arg == "--quic-retry") {
      a.quic_retry = true;
    } else if (arg == "--docker") {
      a.docker = true;
    } else if (a.command == "certs" && arg == "--json") {
      a.json = true;
    } else if (a.command == "certs" && arg.rfind("--", 0) != 0) {
      a.positional.push_back(arg);
    } else if (arg.rfind("--", 0) == 0 &&
               docker::is_option_flag(arg.substr(2, arg.find('=') - 2))) {
      // caddy-docker-proxy's options (docs in `help`); a boolean alone means true.
      std::string name = arg.substr(2, arg.find('=') - 2);
      if (docker::is_bool_flag(name) && arg.find('=') == std::string::npos) {
        // `--flag` alone is true (Go's flag package); `--flag false` is accepted too, where Go
        // would silently take `false` as a stray argument.
        if (i + 1 < argc && docker::parse_bool(argv[i + 1])) {
          a.docker_flags[name] = argv[++i];
        } else {
          a.docker_flags[name] = "true";
        }
      } else {
        a.docker_flags[name] = value(("--" + name).c_str());
      }
    } else if (arg == "--adapter" || arg.rfind("--adapter=", 0) == 0) {
      std::string v = value("--adapter");  // accepted for Caddy's CLI habits
      if (v != "caddyfile") {
        a.bad = true;
        a.error = "only the caddyfile adapter is supported";
      }
    } else {
      a.bad = true;
      a.error = "unknown argument: " + arg;
    }
  }
  if (a.health_listen.empty()) {
    const char* env = std::getenv("HSP_HEALTH_LISTEN");
    if (env) a.health_listen = env;
  }
  if (!a.bad && a.demo_port_set && (!a.config.empty() || a.docker)) {
    a.bad = true;
    a.error = "--demo-port applies to the embedded demo only, not with --config or --docker";
  }
  if (!a.bad && !a.docker_flags.empty() && !a.docker) {
    a.bad = true;
    a.error = "--" + a.docker_flags.begin()->first + " applies with --docker only";
  }
  if (!a.bad && a.docker && !a.config.empty() && a.docker_flags.count("caddyfile-path")) {
    a.bad = true;
    a.error = "--config and --caddyfile-path both name the base Caddyfile: give one";
  }
  return a;
}

void print_usage(FILE* out) {
  std::fprintf(
      out,
      "usage:\n"
      "  hsp-gateway run [--config FILE] [--threads N] [--demo-port PORT]\n"
      "                  [--data-dir DIR] [--quic-retry] [--health-listen ADDR]\n"
      "  hsp-gateway run --docker [--config BASE_CADDYFILE] [--threads N] [--data-dir DIR]\n"
      "                  [--health-listen ADDR] [OPTIONS]\n"
      "  hsp-gateway adapt --config FILE\n"
      "  hsp-gateway adapt --labels FILE [--upstream NAME]...\n"
      "  hsp-gateway adapt --docker [--config BASE_CADDYFILE] [OPTIONS]\n"
      "  hsp-gateway validate --config FILE\n"
      "  hsp-gateway certs [--data-dir DIR] [--json]\n"
      "  hsp-gateway certs renew NAME [--data-dir DIR]\n"
      "  hsp-gateway health [ADDR]\n"
      "  hsp-gateway version\n"
      "  hsp-gateway help\n"
      "--health-listen ADDR (or HSP_HEALTH_LISTEN): answer GET /healthz on ADDR (ip:port);\n"
      "`health` asks it (default ADDR: $HSP_HEALTH_LISTEN, else 127.0.0.1:2020) and exits\n"
      "0 when the gateway is serving (the image's HEALTHCHECK).\n"
      "--data-dir: else $HSP_DATA_DIR, else $XDG_DATA_HOME/hsp-gateway (or ~/.local/share/...).\n"
      "--quic-retry: every new HTTP/3 client proves its address with a Retry first\n"
      "(one more round trip); without it, only under a flood of handshakes.\n"
      "run without --config serves the embedded demo: 127.0.0.1:PORT proxying to a demo\n"
      "page on 127.0.0.1:PORT+1 (PORT defaults to 8080).\n"
      "--docker serves the caddy.* labels of Docker services and containers, as\n"
      "caddy-docker-proxy does; its OPTIONS (an environment variable that is set wins\n"
      "over its flag):\n");
  std::fputs(docker::describe_options().c_str(), out);
}

int usage(const std::string& error) {
  if (!error.empty()) std::fprintf(stderr, "hsp-gateway: %s\n", error.c_str());
  print_usage(stderr);
  return 2;
}

Result<config::Config> load(const Args& a) {
  if (a.config.empty()) return config::load_caddyfile_text(demo_caddyfile(a.demo_port), "<demo>");
  return config::load_caddyfile(a.config);
}

void log_errors(const char* msg, const Errors& errs) {
  for (const auto& e : errs) log::error(msg).kv("error", e.str());
}

void apply_log_level(const config::Config& cfg) {
  log::Level level;
  if (cfg.global.debug) {
    log::set_level(log::Level::debug);
  } else if (log::parse_level(cfg.global.log_level, level)) {
    log::set_level(level);
  }
}

// Publishes snapshots and keeps the listeners in step. Reloads come from the signal loop
// (SIGHUP) or from the Docker watcher's thread; the mutex keeps them from racing each other
// and the data plane's control calls.
class Control {
 public:
  Control(engine::SnapshotStore& store, engine::UpstreamRegistry& registry)
      : store_(store), registry_(registry) {}

  void attach(http1::DataPlane* dp) { dp_ = dp; }
  // Issues the local-CA certificates of HTTPS sites; set before the first publish.
  void set_certs(engine::CertAuthority* certs) { certs_ = certs; }

  // Builds and publishes; on error the current snapshot keeps serving. `initial` publishes
  // before the data plane starts.
  bool publish(const config::Config& cfg, const std::string& source, bool initial,
               const char* fail_msg, bool reload = true) {
    Errors errs = try_publish(cfg, source, initial, reload);
    log_errors(fail_msg, errs);
    return errs.empty();
  }
  // As publish(), returning the snapshot's errors instead of logging them.
  Errors try_publish(const config::Config& cfg, const std::string& source, bool initial,
                     bool reload = true) {
    std::lock_guard lock(mu_);
    auto snap = engine::Snapshot::build(cfg, registry_, generation_ + 1, certs_);
    if (!snap) return snap.errors();
    ++generation_;
    apply_log_level(cfg);
    store_.publish(*snap);
    if (dp_ && !initial) log_errors("listen_failed", dp_->sync_listeners());
    if (!initial) {
      log::info("config_loaded")
          .kv("generation", generation_.load())
          .kv("config", source)
          .kv("source", source == "<docker>"       ? "docker"
                        : source == "<controller>" ? "controller"
                                                   : "file")
          .kv("threads", dp_ ? dp_->threads() : 0)
          .kv("reload", reload);
    }
    return {};
  }

  uint64_t generation() const { return generation_.load(std::memory_order_relaxed); }

  // Rebuilds the current snapshot from its own config so that local-CA leaves past 2/3 of their
  // life are renewed (LocalCa renews only when asked). Connections keep their certificates;
  // new handshakes get the new ones.
  void renew_certificates() {
    std::lock_guard lock(mu_);
    engine::SnapshotPtr cur = store_.load();
    if (!cur) return;
    auto snap = engine::Snapshot::build(cur->config(), registry_, generation_ + 1, certs_);
    if (!snap) {
      log_errors("tls_renewal_failed", snap.errors());
      return;
    }
    ++generation_;
    store_.publish(*snap);
    log::info("tls_certificates_renewed").kv("generation", generation_.load());
  }

 private:
  std::mutex mu_;
  engine::SnapshotStore& store_;
  engine::UpstreamRegistry& registry_;
  http1::DataPlane* dp_ = nullptr;
  engine::CertAuthority* certs_ = nullptr;
  std::atomic<uint64_t> generation_{0};  // read by the health probe's thread
};

sigset_t block_control_signals() {
  // Every thread started from here on inherits the blocked set: the signals reach sigwait only.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return set;
}

// SIGTERM / SIGINT: stop accepting, let requests finish within grace_period, exit 0; a second
// signal exits at once with 1.
int drain_and_stop(http1::DataPlane& dp, engine::SnapshotStore& store, int sig,
                   const sigset_t& set) {
  auto grace = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      store.load()->config().global.grace_period);
  log::info("shutting_down")
      .kv("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT")
      .kv("grace_period_s", std::chrono::duration<double>(grace).count())
      .kv("open_connections", dp.open_connections());
  dp.stop_accepting();
  auto deadline = std::chrono::steady_clock::now() + grace;
  bool drained = false;
  for (;;) {
    if (dp.drain(std::min(deadline,
                          std::chrono::steady_clock::now() + std::chrono::milliseconds(100)))) {
      drained = true;
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    timespec ts{0, 0};
    siginfo_t info;
    int s2 = sigtimedwait(&set, &info, &ts);
    if (s2 == SIGTERM || s2 == SIGINT) {
      log::warn("forced_exit").kv("open_connections", dp.open_connections());
      std::fflush(stdout);
      std::_Exit(1);
    }
  }
  if (!drained) {
    log::warn("grace_period_expired").kv("open_connections", dp.open_connections());
    // Cut what is left so each request still ends with its access-log line.
    dp.abort(std::chrono::steady_clock::now() + std::chrono::seconds(1));
  }
  dp.stop();
  log::info("stopped");
  return 0;
}

// What both run modes share: the routing store, the publisher and the data plane, started on a
// first config. Null (after logging why) when the config does not build or a port cannot be
// bound.
struct Serving {
  // `tune` adjusts the ACME manager's options for a mode (a controller's servers never order).
  Serving(const std::string& data_dir, const std::function<void(acme::Manager::Options&)>& tune)
      : certs(data_dir) {
    control.set_certs(&certs);
    // ACME names: the manager serves what storage holds from the first snapshot on, and asks
    // for a rebuild whenever a certificate arrives or is renewed.
    acme::Manager::Options o;
    o.data_dir = data_dir;
    o.on_change = [this] { control.renew_certificates(); };
    if (tune) tune(o);
    acme = std::make_unique<acme::Manager>(std::move(o));
    certs.set_managed(acme.get());
  }
  ~Serving() {
    // First: its thread calls back into `control`.
    if (acme) acme->stop();
    if (health) health->stop();
    {
      std::lock_guard lock(renew_mu);
      renew_stop = true;
    }
    renew_cv.notify_all();
    if (renewer.joinable()) renewer.join();
  }
  // Checks once a minute whether a local-CA leaf is due for renewal (leaves live 12 hours).
  void start_renewer() {
    renewer = std::thread([this] {
      std::unique_lock lock(renew_mu);
      while (!renew_cv.wait_for(lock, std::chrono::minutes(1), [this] { return renew_stop; })) {
        auto at = certs.renew_at();
        if (!at || certs.now() < *at) continue;
        lock.unlock();
        control.renew_certificates();
        lock.lock();
      }
    });
  }
  engine::CertAuthority certs;  // outlives the snapshots the store holds
  std::unique_ptr<acme::Manager> acme;
  engine::UpstreamRegistry registry;
  engine::SnapshotStore store;
  Control control{store, registry};
  std::unique_ptr<http1::DataPlane> dp;  // null in controller mode: it serves no traffic
  std::unique_ptr<cluster::AdminServer> health;
  std::string mode = "standalone";
  std::function<uint64_t()> config_version;  // server and controller modes: the pushed version
  sigset_t signals;
  std::thread renewer;
  std::mutex renew_mu;
  std::condition_variable renew_cv;
  bool renew_stop = false;
};

// GET /healthz on --health-listen: 200 while the gateway serves (a snapshot is published and,
// except for a controller, the data plane runs). A server still waiting for its first push is
// healthy: it is up and will serve as soon as it has a config.
bool start_health(Serving& s, const std::string& listen) {
  if (listen.empty()) return true;
  cluster::AdminServer::Options o;
  o.listen = listen;
  o.name = "health";
  o.body_limit = 0;
  o.deadline = std::chrono::seconds(3);
  s.health = std::make_unique<cluster::AdminServer>(o, [&s](const cluster::AdminRequest& r) {
    if (r.head.target != "/healthz") return cluster::AdminResponse{404, "text/plain", "\n"};
    if (r.head.method != "GET" && r.head.method != "HEAD")
      return cluster::AdminResponse{405, "text/plain", "GET only\n"};
    nlohmann::json j{
        {"status", "serving"}, {"mode", s.mode}, {"generation", s.control.generation()}};
    if (s.config_version) j["config_version"] = s.config_version();
    bool ok = s.store.load() != nullptr && (s.dp || s.mode == "controller");
    if (!ok) j["status"] = "starting";
    return cluster::AdminResponse{ok ? 200 : 503, "application/json", j.dump() + "\n"};
  });
  Errors errs = s.health->start();
  if (!errs.empty()) {
    log_errors("listen_failed", errs);
    return false;
  }
  log::info("health_listening").kv("address", listen);
  return true;
}

struct StartOptions {
  int threads = 0;
  std::string data_dir;
  bool quic_retry = false;
  bool data_plane = true;  // false: a controller, which only builds snapshots (ACME names)
  std::string health_listen;
  std::string mode = "standalone";
  std::function<void(acme::Manager::Options&)> tune_acme;
};

std::unique_ptr<Serving> start_serving(const config::Config& first, const std::string& source,
                                       const StartOptions& so) {
  // Before any thread starts (the ACME manager's is the first): a thread that leaves SIGHUP
  // unblocked would take a reload signal while the main thread is busy and die of it.
  sigset_t signals = block_control_signals();
  const std::string data_dir = engine::data_dir(so.data_dir);
  auto s = std::make_unique<Serving>(data_dir, so.tune_acme);
  s->signals = signals;
  s->mode = so.mode;
  tls::AcmeChallenges::instance().set_shared_dir(data_dir + "/acme/challenge_tokens");
  if (!s->control.publish(first, source, true, "config_error")) return nullptr;
  if (so.data_plane) {
    s->dp = std::make_unique<http1::DataPlane>(s->store, s->registry,
                                               http1::Options{so.threads, true, so.quic_retry});
    Errors errs = s->dp->start();
    if (!errs.empty()) {
      log_errors("listen_failed", errs);
      return nullptr;
    }
    s->control.attach(s->dp.get());
  }
  if (!start_health(*s, so.health_listen)) return nullptr;
  s->start_renewer();
  return s;
}

StartOptions start_options(const Args& a) {
  StartOptions so;
  so.threads = a.threads;
  so.data_dir = a.data_dir;
  so.quic_retry = a.quic_retry;
  so.health_listen = a.health_listen;
  return so;
}

int run(const Args& a) {
  auto cfg = load(a);
  if (!cfg) {
    log_errors("config_error", cfg.errors());
    return 1;
  }
  const std::string config_name = a.config.empty() ? std::string("<demo>") : a.config;
  auto serving = start_serving(*cfg, config_name, start_options(a));
  if (!serving) return 1;
  Control& control = serving->control;
  http1::DataPlane& dp = *serving->dp;
  const sigset_t& set = serving->signals;
  log::info("config_loaded")
      .kv("generation", control.generation())
      .kv("config", config_name)
      .kv("source", "file")
      .kv("threads", dp.threads())
      .kv("reload", false);

  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      log::info("reload_requested").kv("config", config_name);
      serving->acme->check_now();  // `certs renew`, or another replica's certificate
      auto next = load(a);
      if (!next) {
        log_errors("reload_failed", next.errors());
        continue;
      }
      control.publish(*next, config_name, false, "reload_failed");
      continue;
    }
    return drain_and_stop(dp, serving->store, sig, set);
  }
}

// CDP's options from --docker flags and the environment; --config is the base Caddyfile.
Result<docker::Options> docker_options(const Args& a) {
  auto opts = docker::resolve(a.docker_flags, docker::process_env());
  if (!opts) return opts;
  if (!a.config.empty()) opts->caddyfile_path = a.config;
  if (!opts->envfile.empty()) {
    Errors errs = docker::load_envfile(opts->envfile);
    if (!errs.empty()) return errs;
  }
  if (!opts->log_level.empty()) {
    log::Level level;
    if (log::parse_level(opts->log_level, level)) log::set_level(level);
  }
  return opts;
}

// Every error a config has, as `run` would meet them: the compiler's, then the routing
// snapshot's (regexes, placeholders, CIDRs, certificate files). No local CA is opened.
Errors config_errors(const Result<config::Config>& cfg) {
  if (!cfg) return cfg.errors();
  engine::UpstreamRegistry scratch;
  auto snap = engine::Snapshot::build(cfg.value(), scratch, 1);
  return snap ? Errors{} : snap.errors();
}

// CDP validates each generated block with Caddy's adapter; ours also builds the routing
// snapshot, so that a block with, say, a bad regular expression is dropped on its own instead
// of failing the whole generation at publish time. The last text that loaded is kept with its
// compiled config: the final, whole-file check is almost always that text, and publishing it
// need not compile it again (a large share of a cycle on a big Swarm).
struct Validated {
  std::mutex mu;
  std::string text;
  std::optional<config::Config> config;

  // The compiled config of `caddyfile` when it is the last text validated, else a compile.
  Result<config::Config> take(const std::string& caddyfile) {
    {
      std::lock_guard lock(mu);
      if (config && text == caddyfile) {
        config::Config out = std::move(*config);
        config.reset();
        return out;
      }
    }
    return config::load_caddyfile_text(caddyfile, "<docker>");
  }
};

labels::Validator snapshot_validator(std::shared_ptr<Validated> last = nullptr) {
  return [last](const std::string& text) -> std::optional<std::string> {
    auto cfg = config::load_caddyfile_text(text, "<docker>");
    Errors errs = config_errors(cfg);
    if (errs.empty()) {
      if (last) {
        std::lock_guard lock(last->mu);
        last->text = text;
        last->config = std::move(*cfg);
      }
      return std::nullopt;
    }
    // Positions would point into the text being validated, which no one sees.
    std::string reason;
    for (const auto& e : errs) {
      if (!reason.empty()) reason += "; ";
      reason += e.message;
    }
    return reason;
  };
}

// Top-level site blocks of a generated Caddyfile, by address, with their text: what changed
// between two generations, for the reload log line.
std::map<std::string, std::string> sites_of(const labels::Blocks& blocks) {
  std::map<std::string, std::string> out;
  for (const auto& b : blocks) {
    if (b.is_global() || b.is_snippet()) continue;
    std::string key;
    for (const auto& k : b.keys) key += (key.empty() ? "" : " ") + k;
    out[key] += labels::print_block(b);
  }
  return out;
}

// Logs `sites_changed` for a new generated Caddyfile and remembers its sites.
void log_sites_changed(std::map<std::string, std::string>& sites, const labels::Generated& g,
                       uint64_t generation) {
  auto next = sites_of(g.blocks);
  std::vector<std::string> added, removed, changed;
  for (const auto& [key, text] : next) {
    auto it = sites.find(key);
    if (it == sites.end()) {
      added.push_back(key);
    } else if (it->second != text) {
      changed.push_back(key);
    }
  }
  for (const auto& [key, text] : sites)
    if (!next.count(key)) removed.push_back(key);
  log::info("sites_changed")
      .kv("generation", generation)
      .kv("added", added)
      .kv("removed", removed)
      .kv("changed", changed)
      .kv("sites", static_cast<uint64_t>(next.size()));
  sites = std::move(next);
}

void log_watch_started(const docker::Options& opts, int threads) {
  log::info("docker_watch_started")
      .kv("sockets", opts.docker_sockets)
      .kv("label_prefix", opts.label_prefix)
      .kv("ingress_networks", opts.ingress_networks)
      .kv("polling_interval_s", std::chrono::duration<double>(opts.polling_interval).count())
      .kv("event_throttle_interval_s",
          std::chrono::duration<double>(opts.event_throttle_interval).count())
      .kv("base_caddyfile", opts.caddyfile_path)
      .kv("threads", threads);
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

// Logs why a mode cannot start; the exit status.
int fail_start(const Errors& errs) {
  log_errors("config_error", errs);
  return 1;
}

// Controller mode: watches Docker like standalone, serves no traffic, is the cluster's only
// ACME client, and pushes each version (Caddyfile, certificates, challenge answers) to the
// servers (cluster/controller.h).
int run_controller(const Args& a, const docker::Options& opts) {
  auto key = cluster::PushKey::from_file(opts.push_secret_file);
  if (!key) return fail_start(key.errors());
  cluster::Controller::Options co;
  co.data_dir = engine::data_dir(a.data_dir);
  co.key = *key;
  co.static_servers = opts.controller_servers;
  co.check_interval = opts.push_check_interval;
  co.name = host_name();
  cluster::Controller controller(co);

  StartOptions so = start_options(a);
  so.data_plane = false;
  so.mode = "controller";
  so.tune_acme = [&controller](acme::Manager::Options& o) {
    o.on_change = [&controller, rebuild = std::move(o.on_change)] {
      rebuild();
      controller.files_changed();
    };
    // The CA may reach any server: each must have the answer before it is told to look.
    o.distribute_challenge = [&controller]() -> Result<bool> {
      if (!controller.push_and_wait(std::chrono::seconds(20)))
        log::warn("challenge_not_on_every_server").kv("version", controller.version());
      return true;
    };
  };
  auto empty = config::load_caddyfile_text("", "<docker>");
  if (!empty) return 1;
  auto serving = start_serving(*empty, "<docker>", so);
  if (!serving) return 1;
  serving->config_version = [&controller] { return controller.version(); };
  Errors errs = controller.start();
  if (!errs.empty()) {
    log_errors("config_error", errs);
    return 1;
  }
  Control& control = serving->control;
  log_watch_started(opts, 0);

  std::map<std::string, std::string> sites;
  std::optional<std::string> pushed;  // the Caddyfile the controller pushes; none before one built
  auto validated = std::make_shared<Validated>();
  docker::Watcher watcher(
      opts, snapshot_validator(validated),
      [&](const docker::Generator::Cycle& c) {
        const labels::Generated& g = c.generated;
        auto cfg = validated->take(g.caddyfile);
        if (!cfg) {
          log_errors("reload_failed", cfg.errors());
          return;
        }
        // Handed to the controller first: publishing makes the ACME manager order the new
        // names at once, and their challenge answers must travel with this text, whose sites
        // the servers need in order to answer. Built here too: a text that does not build here
        // would not load on the servers either, so it is taken back.
        std::optional<std::string> previous = std::exchange(pushed, g.caddyfile);
        controller.set_caddyfile(g.caddyfile);
        if (!control.publish(*cfg, "<docker>", false, "reload_failed")) {
          pushed = previous;
          controller.set_caddyfile(previous);
          return;
        }
        log_sites_changed(sites, g, control.generation());
      },
      [&](const docker::Generator::Cycle& c) { controller.set_discovered(c.controlled_servers); });
  watcher.start();

  for (;;) {
    int sig = 0;
    if (sigwait(&serving->signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      log::info("reload_requested").kv("config", "<docker>");
      serving->acme->check_now();
      watcher.trigger();
      controller.files_changed();
      continue;
    }
    log::info("shutting_down").kv("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    watcher.stop();
    serving->acme->stop();
    controller.stop();
    log::info("stopped");
    return 0;
  }
}

// Server mode: no Docker; serves what the controller pushes, and the last push it saved when
// it starts (cluster/server.h).
int run_server(const Args& a, const docker::Options& opts) {
  auto key = cluster::PushKey::from_file(opts.push_secret_file);
  if (!key) return fail_start(key.errors());
  std::string listen = opts.admin_listen;
  if (listen.empty()) {
    auto mine = cluster::local_addresses_in(opts.controller_network);
    if (mine.empty()) {
      log::error("config_error")
          .kv("error", "no address of this host lies in CADDY_CONTROLLER_NETWORK " +
                           opts.controller_network + ": the admin listener has nowhere to bind");
      return 1;
    }
    bool v6 = mine.front().find(':') != std::string::npos;
    listen =
        (v6 ? "[" + mine.front() + "]" : mine.front()) + ":" + std::to_string(docker::kAdminPort);
  }
  StartOptions so = start_options(a);
  so.mode = "server";
  so.tune_acme = [](acme::Manager::Options& o) { o.issue = false; };
  auto empty = config::load_caddyfile_text("", "<controller>");
  if (!empty) return 1;
  auto serving = start_serving(*empty, "<controller>", so);
  if (!serving) return 1;
  Control& control = serving->control;
  std::atomic<bool> stopping{false};
  cluster::PushReceiver receiver({engine::data_dir(a.data_dir), *key},
                                 [&](const std::string& caddyfile, uint64_t version) -> Errors {
                                   auto cfg =
                                       config::load_caddyfile_text(caddyfile, "<controller>");
                                   if (!cfg) return cfg.errors();
                                   if (stopping) return {Error{{}, "shutting down"}};
                                   return control.try_publish(*cfg, "<controller>", false);
                                 });
  serving->config_version = [&receiver] { return receiver.version(); };
  receiver.restore();

  cluster::AdminServer::Options ao;
  ao.listen = listen;
  ao.name = "admin";
  if (!opts.controller_network.empty()) ao.allowed = {opts.controller_network};
  cluster::AdminServer admin(ao,
                             [&](const cluster::AdminRequest& r) { return receiver.handle(r); });
  Errors errs = admin.start();
  if (!errs.empty()) {
    log_errors("listen_failed", errs);
    return 1;
  }
  {
    // A line is written when it goes out of scope: this block's end.
    auto line = log::info("server_listening");
    line.kv("admin", listen);
    if (ao.allowed.empty()) {
      line.kv("allowed", "any");  // only the secret keeps pushes out
    } else {
      line.kv("allowed", ao.allowed);
    }
    line.kv("version", receiver.version()).kv("threads", serving->dp->threads());
  }

  for (;;) {
    int sig = 0;
    if (sigwait(&serving->signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      log::info("reload_requested").kv("config", "<controller>");
      serving->acme->check_now();
      continue;
    }
    // No push lands while draining: new ones get 503, one being applied stops between files
    // and is not published. The admin listener closes when this returns.
    stopping = true;
    receiver.close();
    return drain_and_stop(*serving->dp, serving->store, sig, serving->signals);
  }
}

int run_docker(const Args& a) {
  auto opts = docker_options(a);
  if (!opts) {
    for (const auto& e : opts.errors()) std::fprintf(stderr, "hsp-gateway: %s\n", e.str().c_str());
    return 2;
  }
  if (opts->mode == docker::Mode::controller) return run_controller(a, *opts);
  if (opts->mode == docker::Mode::server) return run_server(a, *opts);
  // Nothing to serve until the first generation: an empty snapshot, no listeners.
  auto empty = config::load_caddyfile_text("", "<docker>");
  if (!empty) return 1;
  auto serving = start_serving(*empty, "<docker>", start_options(a));
  if (!serving) return 1;
  Control& control = serving->control;
  http1::DataPlane& dp = *serving->dp;
  const sigset_t& set = serving->signals;
  log_watch_started(*opts, dp.threads());

  std::map<std::string, std::string> sites;
  bool published = false;
  auto validated = std::make_shared<Validated>();
  docker::Watcher watcher(*opts, snapshot_validator(validated),
                          [&](const docker::Generator::Cycle& c) {
                            const labels::Generated& g = c.generated;
                            log::debug("docker_caddyfile").kv("caddyfile", g.caddyfile);
                            auto cfg = validated->take(g.caddyfile);
                            if (!cfg) {
                              log_errors("reload_failed", cfg.errors());
                              return;
                            }
                            // The first generation replaces the empty start-up config: not a reload
                            // for the reader.
                            if (!control.publish(*cfg, "<docker>", false, "reload_failed",
                                                 !sites.empty() || published)) {
                              return;
                            }
                            published = true;
                            log_sites_changed(sites, g, control.generation());
                          });
  watcher.start();

  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      log::info("reload_requested").kv("config", "<docker>");
      serving->acme->check_now();  // `certs renew`, or another replica's certificate
      watcher.trigger();
      continue;
    }
    watcher.stop();
    return drain_and_stop(dp, serving->store, sig, set);
  }
}

// `adapt --docker`: one generation from the live Docker state, printed as the Caddyfile that
// would be served (after per-block validation); what was dropped goes to stderr.
int adapt_docker(const Args& a) {
  auto opts = docker_options(a);
  if (!opts) {
    for (const auto& e : opts.errors()) std::fprintf(stderr, "hsp-gateway: %s\n", e.str().c_str());
    return 2;
  }
  docker::Generator generator(*opts, snapshot_validator());
  auto cycle = generator.run();
  if (!cycle) {
    for (const auto& e : cycle.errors()) std::fprintf(stderr, "%s\n", e.str().c_str());
    return 1;
  }
  for (const auto& n : cycle->notes) std::fprintf(stderr, "note: %s\n", n.c_str());
  for (const auto& w : cycle->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  for (const auto& p : cycle->generated.problems) std::fprintf(stderr, "%s\n", p.c_str());
  const auto& g = cycle->generated;
  for (size_t i = 0; i < g.dropped.size(); ++i) {
    std::string from;
    for (const auto& s :
         i < g.dropped_sources.size() ? g.dropped_sources[i] : std::vector<std::string>{}) {
      from += (from.empty() ? " (from " : ", ") + s;
    }
    if (!from.empty()) from += ")";
    std::fprintf(stderr, "dropped: %s%s: %s\n", g.dropped[i].block.c_str(), from.c_str(),
                 g.dropped[i].reason.c_str());
  }
  const std::string& out = g.caddyfile;
  std::fwrite(out.data(), 1, out.size(), stdout);
  if (out.empty() || out.back() != '\n') std::fputc('\n', stdout);
  // Like adapt --labels: labels that had to be skipped make the exit status 1 (the text is
  // still printed); blocks dropped by validation do not, since CDP drops them too.
  return g.problems.empty() ? 0 : 1;
}

// `adapt --labels FILE`: one label set in CDP's golden-file format -> the Caddyfile CDP would
// generate from it, {{upstreams}} expanding to the --upstream names. Blocks our compiler cannot
// load yet are named on stderr (CDP would drop them); the text printed is the whole translation.
int adapt_labels(const Args& a) {
  std::ifstream in(a.labels, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "%s: cannot read the label file\n", a.labels.c_str());
    return 1;
  }
  std::stringstream text;
  text << in.rdbuf();
  auto parsed = labels::parse_label_text(text.str());
  if (!parsed) {
    for (const auto& e : parsed.errors()) {
      std::fprintf(stderr, "%s: %s\n", a.labels.c_str(), e.str().c_str());
    }
    return 1;
  }
  labels::Source src;
  src.name = "labels " + a.labels;
  src.labels = std::move(*parsed);
  src.upstream_targets = a.upstreams;
  labels::GenerateOptions opts;
  opts.process = false;
  auto out = labels::generate({src}, opts);
  for (const auto& p : out.problems) std::fprintf(stderr, "%s\n", p.c_str());
  opts.process = true;
  for (const auto& d : labels::generate({src}, opts).dropped) {
    std::fprintf(stderr, "not loadable by hsp-gateway yet: %s: %s\n", d.block.c_str(),
                 d.reason.c_str());
  }
  std::fwrite(out.caddyfile.data(), 1, out.caddyfile.size(), stdout);
  if (out.caddyfile.empty() || out.caddyfile.back() != '\n') std::fputc('\n', stdout);
  return out.problems.empty() ? 0 : 1;
}

int adapt(const Args& a) {
  if (a.docker) {
    if (!a.labels.empty() || !a.upstreams.empty()) {
      return usage("adapt --docker takes no --labels or --upstream");
    }
    return adapt_docker(a);
  }
  if (!a.labels.empty()) {
    if (!a.config.empty()) return usage("adapt takes --config or --labels, not both");
    return adapt_labels(a);
  }
  if (!a.upstreams.empty()) return usage("--upstream goes with adapt --labels");
  if (a.config.empty()) return usage("adapt needs --config FILE or --labels FILE");
  auto cfg = config::load_caddyfile(a.config);
  if (!cfg) {
    for (const auto& e : cfg.errors()) std::fprintf(stderr, "%s\n", e.str().c_str());
    return 1;
  }
  std::string out = config::to_json(*cfg);
  std::fwrite(out.data(), 1, out.size(), stdout);
  if (out.empty() || out.back() != '\n') std::fputc('\n', stdout);
  return 0;
}

int validate(const Args& a) {
  if (a.config.empty()) return usage("validate needs --config FILE");
  Errors errs = config_errors(config::load_caddyfile(a.config));
  for (const auto& e : errs) std::fprintf(stderr, "%s\n", e.str().c_str());
  if (errs.empty()) std::printf("Valid configuration\n");
  return errs.empty() ? 0 : 1;
}

// `certs`: the ACME-managed certificates in the data directory. `certs renew NAME`: marks the
// name due now; a running gateway renews it at its next SIGHUP or periodic check (10 minutes).
int certs(const Args& a) {
  const std::string dir = engine::data_dir(a.data_dir);
  if (a.positional.empty()) {
    std::string out;
    int rc = acme::print_certs(dir, a.json, out);
    std::fwrite(out.data(), 1, out.size(), stdout);
    return rc;
  }
  if (a.positional.size() != 2 || a.positional[0] != "renew") {
    return usage("certs takes no arguments, or: renew NAME");
  }
  const std::string name = tls::normalize_name(a.positional[1]);
  acme::Storage storage(dir);
  int found = 0;
  for (auto& c : storage.list()) {
    if (std::find(c.meta.names.begin(), c.meta.names.end(), name) == c.meta.names.end()) continue;
    c.meta.renew_at = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    c.meta.next_attempt.reset();  // a back-off in progress gives way to the operator
    auto saved = storage.save_meta(c.meta.issuer, name, c.meta);
    if (!saved) {
      std::fprintf(stderr, "hsp-gateway: %s\n", saved.errors().front().str().c_str());
      return 1;
    }
    std::printf(
        "%s (%s): due now; a running gateway renews it at its next SIGHUP or within "
        "10 minutes\n",
        name.c_str(), c.meta.issuer.c_str());
    ++found;
  }
  if (found == 0) {
    std::fprintf(stderr, "hsp-gateway: no managed certificate for %s under %s\n", name.c_str(),
                 dir.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

// `health [ADDR]`: asks a running gateway's health listener; exit 0 when it is serving.
int health(const Args& a) {
  if (a.positional.size() > 1) return usage("health takes at most one address");
  std::string addr = !a.positional.empty()      ? a.positional[0]
                     : !a.health_listen.empty() ? a.health_listen
                                                : std::string("127.0.0.1:2020");
  auto hp = cluster::parse_host_port(addr);
  if (!hp) {
    // 1, not usage's 2: Docker reserves exit status 2 of a HEALTHCHECK.
    std::fprintf(stderr, "hsp-gateway: health: %s\n", hp.errors().front().message.c_str());
    return 1;
  }
  auto r = cluster::http_request(*hp, "GET", "/healthz", "", std::chrono::seconds(3));
  if (!r) {
    std::fprintf(stderr, "hsp-gateway: unhealthy: %s\n", r.errors().front().message.c_str());
    return 1;
  }
  // A 200 from something else on that port (a site, say) is not a healthy gateway.
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  bool serving = r->status == 200 && j.is_object() && j.value("status", "") == "serving";
  if (!serving) {
    std::string first = r->body.substr(0, r->body.find('\n')).substr(0, 200);
    std::fprintf(stderr, "hsp-gateway: unhealthy: %s answered %d: %s\n", addr.c_str(), r->status,
                 first.c_str());
    return 1;
  }
  std::fwrite(r->body.data(), 1, r->body.size(), stdout);
  return 0;
}

int main(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  if (a.command == "help" || a.command == "--help" || a.command == "-h") {
    print_usage(stdout);
    return 0;
  }
  if (a.bad) return usage(a.error);
  if (a.command == "version") {
#ifdef HSP_MIMALLOC
    int v = mi_version();  // also what keeps mimalloc linked under --as-needed
    std::printf("hsp-gateway %s (allocator: mimalloc %d.%d.%d)\n", HSP_VERSION, v / 100,
                v / 10 % 10, v % 10);
#else
    std::printf("hsp-gateway %s (allocator: glibc malloc)\n", HSP_VERSION);
#endif
    return 0;
  }
  if (a.command == "run") return a.docker ? run_docker(a) : run(a);
  if (a.command == "adapt") return adapt(a);
  if (a.command == "validate") return validate(a);
  if (a.command == "certs") return certs(a);
  if (a.command == "health") return health(a);
  return usage("unknown command: " + a.command);
}

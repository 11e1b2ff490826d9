#include "docker-watch/watcher.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "util/log.h"

namespace hsp::docker {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

constexpr milliseconds kMinBackoff{500};
constexpr milliseconds kMaxBackoff{10000};
// Reconnecting the event stream costs one request on a local socket; after an outage the
// events are what makes the next change apply at once, so they retry sooner than listings.
constexpr milliseconds kMaxEventBackoff{2000};

std::string join(const Errors& errors) {
  std::string out;
  for (const auto& e : errors) {
    if (!out.empty()) out += "; ";
    out += e.str();
  }
  return out;
}

// CDP's triggering actions (label-dialect.md §1d); everything else (health_status, exec_*,
// rename, node events...) would only cause useless generations.
bool relevant(const json& event) {
  const std::string type = event.value("Type", std::string());
  const std::string action = event.value("Action", std::string());
  if (type == "container") {
    return action == "create" || action == "start" || action == "stop" || action == "die" ||
           action == "destroy";
  }
  if (type == "service") return action == "create" || action == "update" || action == "remove";
  if (type == "config") return action == "create" || action == "remove";
  if (type == "network") return action == "connect" || action == "disconnect";
  return false;
}

}  // namespace

void log_problems(const labels::Generated& g) {
  for (const auto& p : g.problems) log::warn("labels_skipped").kv("problem", p);
  for (size_t i = 0; i < g.dropped.size(); ++i) {
    const auto& d = g.dropped[i];
    log::error("block_dropped")
        .kv("block", d.key.empty() ? std::string("global options") : d.key)
        .kv("sources",
            i < g.dropped_sources.size() ? g.dropped_sources[i] : std::vector<std::string>{})
        .kv("reason", d.reason);
  }
}

Generator::Generator(Options options, labels::Validator validator)
    : options_(std::move(options)), validator_(std::move(validator)) {
  for (size_t i = 0; i < options_.docker_sockets.size(); ++i) {
    clients_.push_back(std::make_unique<Client>(
        options_.docker_sockets[i],
        i < options_.docker_apis_version.size() ? options_.docker_apis_version[i] : std::string()));
  }
}

Result<IngressSet> Generator::ingress(const std::vector<DaemonState>& daemons, std::string& note) {
  if (!options_.ingress_networks.empty()) {
    IngressSet set = ingress_from_names(options_.ingress_networks, daemons);
    if (set.ids.empty()) {
      note = "none of the ingress networks exists yet: {{upstreams}} is empty";
    }
    return set;
  }
  const std::string id = own_container_id();
  if (id.empty()) {
    note =
        "not running in a container and CADDY_INGRESS_NETWORKS is not set: {{upstreams}} of "
        "services and containers is empty";
    return IngressSet{};
  }
  Errors errors;
  for (auto& c : clients_) {
    auto inspect = c->get("containers/" + Client::escape(id) + "/json");
    if (inspect) return ingress_from_container(*inspect, daemons);
    errors.insert(errors.end(), inspect.errors().begin(), inspect.errors().end());
  }
  // CDP keeps the previous set when its own container cannot be inspected.
  if (last_ingress_) {
    note = "cannot inspect the gateway's container " + id + " (" + join(errors) +
           "): keeping the previous ingress networks";
    return *last_ingress_;
  }
  note = "cannot inspect the gateway's container " + id + " (" + join(errors) +
         "): {{upstreams}} is empty until it can";
  return IngressSet{};
}

Result<Generator::Cycle> Generator::run() {
  std::vector<DaemonState> daemons;
  for (auto& c : clients_) {
    auto d = fetch(*c, options_);
    if (!d) return d.errors();
    daemons.push_back(std::move(*d));
  }
  Cycle cycle;
  std::string note;
  auto set = ingress(daemons, note);
  if (!set) return set.errors();
  if (!note.empty()) cycle.notes.push_back(note);
  last_ingress_ = *set;

  std::vector<labels::Source> sources;
  if (!options_.caddyfile_path.empty()) {
    // Re-read every cycle, as CDP does. Unreadable fails the cycle: serving without the base
    // file's global options and sites would be worse than serving the last good config.
    std::ifstream in(options_.caddyfile_path, std::ios::binary);
    if (!in) return Error{{options_.caddyfile_path, 0, 0}, "cannot read the base Caddyfile"};
    std::stringstream text;
    text << in.rdbuf();
    labels::Source base;
    base.kind = labels::Source::Kind::caddyfile;
    base.name = "base Caddyfile " + options_.caddyfile_path;
    base.caddyfile = text.str();
    sources.push_back(std::move(base));
  }
  Built built = build_sources(daemons, *set, options_);
  for (auto& s : built.sources) sources.push_back(std::move(s));
  cycle.warnings = std::move(built.warnings);

  labels::GenerateOptions gen;
  gen.label_prefix = options_.label_prefix;
  gen.process = options_.process_caddyfile;
  gen.validator = validator_;
  cycle.generated = labels::generate(sources, gen);
  if (options_.mode == Mode::controller && !options_.controller_network.empty())
    cycle.controlled_servers = controlled_servers(daemons, options_.controller_network, kAdminPort);
  return cycle;
}

Watcher::Watcher(Options options, labels::Validator validator, Apply apply, Apply observe)
    : generator_(std::move(options), std::move(validator)),
      apply_(std::move(apply)),
      observe_(std::move(observe)) {}

Watcher::~Watcher() {
  stop();
}

void Watcher::start() {
  loop_thread_ = std::thread([this] { loop(); });
  for (auto& c : generator_.clients()) {
    Client* client = c.get();
    event_threads_.emplace_back([this, client] { follow_events(*client); });
  }
}

void Watcher::stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_.exchange(true)) return;
  }
  cv_.notify_all();
  if (loop_thread_.joinable()) loop_thread_.join();
  for (auto& t : event_threads_)
    if (t.joinable()) t.join();
}

void Watcher::trigger() {
  on_event(true);
}

void Watcher::on_event(bool immediate) {
  {
    std::lock_guard lock(mu_);
    auto at = std::chrono::steady_clock::now() +
              (immediate ? milliseconds(0) : generator_.options().event_throttle_interval);
    if (pending_) {
      pending_at_ = std::min(pending_at_, at);
    } else {
      pending_ = true;
      pending_at_ = at;
    }
  }
  cv_.notify_all();
}

bool Watcher::sleep_for(milliseconds d) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, d, [this] { return stop_.load(); });
  return !stop_.load();
}

void Watcher::loop() {
  using clock = std::chrono::steady_clock;
  bool healthy = true;
  bool first = true;
  milliseconds backoff = kMinBackoff;
  std::vector<std::string> last_notes;
  clock::time_point next_run = clock::now();
  for (;;) {
    {
      // The deadline moves when an event arrives (pending_at_), so it is recomputed after every
      // wake-up rather than fixed once for the whole wait.
      std::unique_lock lock(mu_);
      for (;;) {
        if (stop_.load()) return;
        const auto now = clock::now();
        const auto due = pending_ ? std::min(next_run, pending_at_) : next_run;
        if (due <= now) break;
        cv_.wait_until(lock, due);
      }
      pending_ = false;  // events from here on arm a new delay
    }
    const auto started = clock::now();
    auto cycle = generator_.run();
    if (!cycle) {
      if (healthy || first) {
        log::error("docker_unreachable").kv("error", join(cycle.errors()));
      } else {
        log::debug("docker_unreachable").kv("error", join(cycle.errors()));
      }
      healthy = false;
      first = false;
      next_run = clock::now() + std::min(backoff, generator_.options().polling_interval);
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    if (!healthy) log::info("docker_connected").kv("sockets", generator_.options().docker_sockets);
    healthy = true;
    first = false;
    backoff = kMinBackoff;
    next_run = started + generator_.options().polling_interval;
    if (cycle->notes != last_notes) {
      for (const auto& n : cycle->notes) log::warn("docker_ingress_networks").kv("note", n);
      last_notes = cycle->notes;
    }
    if (cycle->warnings != last_warnings_) {
      for (const auto& w : cycle->warnings) log::warn("docker_upstreams").kv("warning", w);
      last_warnings_ = cycle->warnings;
    }
    // Label problems are logged when they change, whether or not the served text changes: a
    // new service whose only block is dropped leaves the output as it was.
    std::vector<std::string> problems = cycle->generated.problems;
    for (const auto& d : cycle->generated.dropped) problems.push_back(d.key + "\n" + d.reason);
    if (problems != last_problems_) {
      log_problems(cycle->generated);
      last_problems_ = std::move(problems);
    }
    if (observe_) observe_(*cycle);
    if (last_text_ && *last_text_ == cycle->generated.caddyfile) {
      log::debug("docker_generation_unchanged");
      continue;
    }
    last_text_ = cycle->generated.caddyfile;
    apply_(*cycle);
  }
}

void Watcher::follow_events(Client& client) {
  json filters = {
      {"type", {{"service", true}, {"container", true}, {"network", true}, {"config", true}}}};
  if (!generator_.options().no_scope) filters["scope"] = {{"swarm", true}, {"local", true}};
  const std::string query = "filters=" + Client::escape(filters.dump());
  milliseconds backoff = kMinBackoff;
  bool connected_logged = false;
  bool lost_logged = false;
  while (!stop_.load()) {
    auto version = client.negotiate();
    if (!version) {
      if (!lost_logged) {
        log::warn("docker_events_lost")
            .kv("socket", client.socket())
            .kv("error", join(version.errors()));
        lost_logged = true;
        connected_logged = false;
      }
      if (!sleep_for(backoff)) return;
      backoff = std::min(backoff * 2, kMaxEventBackoff);
      continue;
    }
    if (!connected_logged) {
      log::info("docker_events_connected")
          .kv("socket", client.socket())
          .kv("docker_version", *version)
          .kv("api_version", client.api_version());
      connected_logged = true;
      lost_logged = false;
    }
    // Whatever changed while no stream was open is picked up by a generation now.
    on_event(false);
    const auto opened = std::chrono::steady_clock::now();
    Errors errors = client.stream_events(
        query,
        [this](const json& event) {
          if (relevant(event)) on_event(false);
        },
        stop_);
    if (stop_.load()) return;
    if (std::chrono::steady_clock::now() - opened > std::chrono::seconds(10)) {
      backoff = kMinBackoff;
    }
    if (!lost_logged) {
      log::warn("docker_events_lost").kv("socket", client.socket()).kv("error", join(errors));
      lost_logged = true;
      connected_logged = false;
    }
    if (!sleep_for(backoff)) return;
    backoff = std::min(backoff * 2, kMaxEventBackoff);
  }
}

}  // namespace hsp::docker

#include "cluster/controller.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "util/log.h"

namespace hsp::cluster {

using std::chrono::milliseconds;

Controller::Controller(Options options) : options_(std::move(options)) {}

Controller::~Controller() {
  stop();
}

Errors Controller::start() {
  auto saved = load_controller_state(options_.data_dir);
  if (!saved) return saved.errors();
  if (*saved) state_ = **saved;
  for (const auto& s : options_.static_servers) {
    auto hp = parse_host_port(s);
    if (!hp) return hp.errors();
  }
  thread_ = std::thread([this] { loop(); });
  log::info("controller_started")
      .kv("version", state_.version)
      .kv("static_servers", options_.static_servers)
      .kv("check_interval_s", std::chrono::duration<double>(options_.check_interval).count());
  return {};
}

void Controller::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Controller::set_caddyfile(std::optional<std::string> caddyfile) {
  {
    std::lock_guard lock(mu_);
    caddyfile_ = std::move(caddyfile);
    dirty_ = wake_ = true;
  }
  cv_.notify_all();
}

void Controller::set_discovered(std::vector<std::string> servers) {
  std::sort(servers.begin(), servers.end());
  {
    std::lock_guard lock(mu_);
    if (servers == discovered_) return;
    log::info("controller_servers_found").kv("servers", servers);
    discovered_ = std::move(servers);
    wake_ = true;
  }
  cv_.notify_all();
}

void Controller::files_changed() {
  {
    std::lock_guard lock(mu_);
    dirty_ = wake_ = true;
  }
  cv_.notify_all();
}

uint64_t Controller::version() const {
  std::lock_guard lock(mu_);
  return state_.version;
}

bool Controller::push_and_wait(milliseconds wait) {
  std::unique_lock lock(mu_);
  dirty_ = wake_ = true;
  uint64_t mine = ++requested_;
  cv_.notify_all();
  auto until = std::chrono::steady_clock::now() + wait;
  if (!cv_.wait_until(lock, until, [&] { return stop_ || completed_ >= mine; })) return false;
  std::set<std::string> targets(discovered_.begin(), discovered_.end());
  targets.insert(options_.static_servers.begin(), options_.static_servers.end());
  if (targets.empty()) return false;
  for (const auto& t : targets) {
    auto it = have_.find(t);
    if (it == have_.end() || it->second != state_.version) return false;
  }
  return true;
}

bool Controller::rebuild() {
  // Called with mu_ held, from the controller's thread only.
  if (!caddyfile_) return false;
  if (!dirty_ && !sealed_.empty()) return true;
  dirty_ = false;
  Bundle b;
  b.controller = options_.name;
  b.caddyfile = *caddyfile_;
  auto files = collect_files(options_.data_dir);
  if (!files) {
    // The last version keeps being pushed; the next change or round tries again.
    log::warn("controller_files_unreadable").kv("error", files.errors().front().str());
    dirty_ = true;
    return !sealed_.empty();
  }
  b.files = std::move(*files);
  std::string digest = bundle_digest(b);
  if (digest == state_.digest && !sealed_.empty()) return true;
  if (digest != state_.digest) {
    auto now_ms = static_cast<uint64_t>(std::chrono::duration_cast<milliseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count());
    ControllerState next{std::max(state_.version + 1, now_ms), digest};
    auto saved = save_controller_state(options_.data_dir, next);
    if (!saved) {
      // Pushing a version that a restart could reuse for other content would let servers
      // ignore the later one; better to wait for storage.
      log::error("controller_state_unwritable").kv("error", saved.errors().front().str());
      dirty_ = true;
      return !sealed_.empty();
    }
    state_ = next;
    log::info("controller_version")
        .kv("version", state_.version)
        .kv("files", static_cast<uint64_t>(b.files.size()))
        .kv("caddyfile_bytes", static_cast<uint64_t>(b.caddyfile.size()));
  }
  b.version = state_.version;
  sealed_ = options_.key.seal(kConfigPath, bundle_to_json(b));
  return true;
}

void Controller::sync_one(const std::string& target, uint64_t version, const std::string& sealed) {
  auto fail = [&](const std::string& why) {
    std::lock_guard lock(mu_);
    if (error_[target] != why) {
      log::warn("push_failed").kv("server", target).kv("version", version).kv("error", why);
      error_[target] = why;
    }
    have_.erase(target);
  };
  auto hp = parse_host_port(target);
  if (!hp) return fail(hp.errors().front().message);
  auto probe = http_request(*hp, "GET", kVersionPath, "", options_.timeout);
  if (!probe) return fail(probe.errors().front().message);
  uint64_t theirs = 0;
  auto j = nlohmann::json::parse(probe->body, nullptr, false);
  if (probe->status != 200 || !j.is_object() || !j.contains("version") ||
      !j["version"].is_number_unsigned()) {
    return fail("version probe answered " + std::to_string(probe->status));
  }
  theirs = j["version"].get<uint64_t>();
  if (theirs != version) {
    auto pushed = http_request(*hp, "POST", kConfigPath, sealed, options_.timeout);
    if (!pushed) return fail(pushed.errors().front().message);
    if (pushed->status != 200) {
      std::string body = pushed->body.substr(0, 300);
      while (!body.empty() && body.back() == '\n') body.pop_back();
      return fail("push answered " + std::to_string(pushed->status) + ": " + body);
    }
    log::info("push_applied").kv("server", target).kv("version", version).kv("previous", theirs);
  }
  std::lock_guard lock(mu_);
  if (!error_[target].empty()) log::info("push_recovered").kv("server", target);
  error_[target].clear();
  have_[target] = version;
}

void Controller::loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    uint64_t round = requested_;
    if (rebuild()) {
      std::set<std::string> targets(discovered_.begin(), discovered_.end());
      targets.insert(options_.static_servers.begin(), options_.static_servers.end());
      for (auto it = have_.begin(); it != have_.end();)
        it = targets.count(it->first) ? std::next(it) : have_.erase(it);
      uint64_t version = state_.version;
      std::string sealed = sealed_;
      lock.unlock();
      std::vector<std::thread> workers;
      for (const auto& t : targets)
        workers.emplace_back([this, t, version, &sealed] { sync_one(t, version, sealed); });
      for (auto& w : workers) w.join();
      lock.lock();
    }
    completed_ = std::max(completed_, round);
    cv_.notify_all();
    if (requested_ > round) continue;
    cv_.wait_for(lock, options_.check_interval, [this] { return stop_ || wake_; });
    wake_ = false;
  }
  completed_ = requested_;
  cv_.notify_all();
}

}  // namespace hsp::cluster

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
  // Every worker tries once more from now on, also one that failed this version before (its
  // server may be back) and whose next round would otherwise wait for the interval.
  ++kick_;
  std::map<std::string, uint64_t> tries;
  for (const auto& [target, w] : workers_) tries[target] = w->tries;
  cv_.notify_all();
  auto until = std::chrono::steady_clock::now() + wait;
  auto settled = [&] {
    if (stop_) return true;
    if (rebuilt_ < mine) return false;
    for (const auto& [target, w] : workers_) {
      if (w->attempted == state_.version && w->has == state_.version) continue;
      auto it = tries.find(target);
      if (w->attempted < state_.version || (it != tries.end() && w->tries <= it->second))
        return false;
    }
    return true;
  };
  if (!cv_.wait_until(lock, until, settled) || stop_ || workers_.empty() || sealed_.empty())
    return false;
  for (const auto& [target, w] : workers_)
    if (w->has != state_.version) return false;
  return true;
}

bool Controller::rebuild() {
  if (!caddyfile_) return false;
  if (!dirty_) return !sealed_.empty();
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
  bool fresh = digest != state_.digest || state_.version <= floor_;
  if (!fresh && !sealed_.empty()) return true;
  uint64_t version = state_.version;
  if (fresh) {
    auto now_ms = static_cast<uint64_t>(std::chrono::duration_cast<milliseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count());
    version = std::max({state_.version + 1, floor_ + 1, now_ms});
  }
  b.version = version;
  std::string sealed = options_.key.seal(kConfigPath, bundle_to_json(b));
  if (sealed.size() > kMaxPushBytes) {
    // Servers would answer 413 forever; the previous version keeps being pushed.
    log::error("push_too_large")
        .kv("version", version)
        .kv("bytes", static_cast<uint64_t>(sealed.size()))
        .kv("limit", static_cast<uint64_t>(kMaxPushBytes))
        .kv("files", static_cast<uint64_t>(b.files.size()));
    return !sealed_.empty();
  }
  if (fresh) {
    auto saved = save_controller_state(options_.data_dir, {version, digest});
    if (!saved) {
      // Pushing a version that a restart could reuse for other content would let servers
      // ignore the later one; better to wait for storage.
      log::error("controller_state_unwritable").kv("error", saved.errors().front().str());
      dirty_ = true;
      return !sealed_.empty();
    }
    state_ = {version, digest};
    log::info("controller_version")
        .kv("version", version)
        .kv("files", static_cast<uint64_t>(b.files.size()))
        .kv("caddyfile_bytes", static_cast<uint64_t>(b.caddyfile.size()));
  }
  sealed_ = std::move(sealed);
  return true;
}

uint64_t Controller::sync_one(const std::string& target, uint64_t version,
                              const std::string& sealed) {
  auto fail = [&](const std::string& why) -> uint64_t {
    std::lock_guard lock(mu_);
    if (error_[target] != why) {
      log::warn("push_failed").kv("server", target).kv("version", version).kv("error", why);
      error_[target] = why;
    }
    return 0;
  };
  auto hp = parse_host_port(target);
  if (!hp) return fail(hp.errors().front().message);
  auto probe = http_request(*hp, "GET", kVersionPath, "", options_.probe_timeout);
  if (!probe) return fail(probe.errors().front().message);
  auto j = nlohmann::json::parse(probe->body, nullptr, false);
  if (probe->status != 200 || !j.is_object() || !j.contains("version") ||
      !j["version"].is_number_unsigned()) {
    return fail("version probe answered " + std::to_string(probe->status));
  }
  uint64_t theirs = j["version"].get<uint64_t>();
  if (theirs > version) {
    // A newer version than ours: another controller was here with a clock ahead of ours. The
    // answer is not authenticated, so only a plausible one (within a day of our clock) lifts
    // our versions; a server holding an absurd one is reported and left behind.
    uint64_t now_ms = static_cast<uint64_t>(std::chrono::duration_cast<milliseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
    if (theirs > now_ms + kMaxVersionLead) {
      return fail("server reports version " + std::to_string(theirs) +
                  ", more than a day ahead of this controller's clock");
    }
    std::lock_guard lock(mu_);
    if (theirs > floor_) {
      log::warn("controller_version_behind")
          .kv("server", target)
          .kv("server_version", theirs)
          .kv("version", version);
      floor_ = theirs;
      dirty_ = wake_ = true;
      cv_.notify_all();
    }
    return 0;
  }
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
  return version;
}

void Controller::work(Worker& w) {
  std::unique_lock lock(mu_);
  while (!stop_ && !w.stop) {
    if (!sealed_.empty()) {
      uint64_t version = state_.version;
      std::string sealed = sealed_;
      uint64_t kick = kick_;
      lock.unlock();
      uint64_t has = sync_one(w.target, version, sealed);
      lock.lock();
      w.attempted = version;
      w.has = has;
      w.kicked = kick;
      ++w.tries;
      cv_.notify_all();
    }
    // The next interval, or at once when a new version is made or push_and_wait asks.
    uint64_t tried = w.attempted;
    cv_.wait_for(lock, options_.check_interval, [&] {
      return stop_ || w.stop ||
             (!sealed_.empty() && (state_.version != tried || kick_ != w.kicked));
    });
  }
}

void Controller::reconcile(std::unique_lock<std::mutex>& lock) {
  std::set<std::string> targets(discovered_.begin(), discovered_.end());
  targets.insert(options_.static_servers.begin(), options_.static_servers.end());
  std::vector<std::unique_ptr<Worker>> gone;
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (targets.count(it->first)) {
      ++it;
      continue;
    }
    it->second->stop = true;
    gone.push_back(std::move(it->second));
    error_.erase(it->first);
    it = workers_.erase(it);
  }
  for (const auto& t : targets) {
    if (workers_.count(t)) continue;
    auto w = std::make_unique<Worker>();
    w->target = t;
    Worker* raw = w.get();
    w->thread = std::thread([this, raw] { work(*raw); });
    workers_.emplace(t, std::move(w));
  }
  if (gone.empty()) return;
  cv_.notify_all();
  lock.unlock();
  for (auto& w : gone) w->thread.join();  // at most one request's deadline
  lock.lock();
}

void Controller::loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    uint64_t asked = requested_;
    uint64_t before = state_.version;
    rebuild();
    rebuilt_ = std::max(rebuilt_, asked);
    reconcile(lock);
    if (state_.version != before || rebuilt_ >= asked) cv_.notify_all();
    if (requested_ > asked) continue;
    cv_.wait_for(lock, options_.check_interval, [this] { return stop_ || wake_; });
    wake_ = false;
  }
  for (auto& [t, w] : workers_) w->stop = true;
  cv_.notify_all();
  lock.unlock();
  for (auto& [t, w] : workers_) w->thread.join();
  lock.lock();
  workers_.clear();
}

}  // namespace hsp::cluster

// Watches Docker and regenerates the Caddyfile as caddy-docker-proxy does (docs/label-dialect.md
// §1d): events only trigger; every generation rebuilds the whole state from full listings.
//
//   - One thread per Docker socket follows /events (types service, container, network, config)
//     and reconnects with backoff (0.5 s doubling to 10 s); every (re)connection also triggers a
//     generation, so changes made while the stream was down are picked up at once. CDP reads the
//     streams of several sockets one after another and waits 30 s after an error.
//   - The first relevant event arms a one-shot delay of event_throttle_interval (CDP's throttle:
//     a fixed delay after the first event, not a sliding debounce); later events join it.
//   - A full generation also runs at start and polling_interval after each generation.
//   - A failed generation (a daemon unreachable, a listing refused, the base Caddyfile
//     unreadable) changes nothing: the last applied Caddyfile keeps serving; it is retried with
//     the same backoff; errors are logged once per change of state, not once per attempt.
//   - The result is handed to `apply` only when its text differs from the last one handed over.
//     Skipped labels and dropped blocks are logged whenever their list changes.
//   - With several sockets, one daemon that cannot be listed holds back updates from all of
//     them: dropping its services would take their routes down, so nothing changes until every
//     daemon answers (CDP skips a socket whose task listing fails and serves without it).
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "docker-watch/client.h"
#include "docker-watch/options.h"
#include "docker-watch/state.h"
#include "labels/generate.h"

namespace hsp::docker {

// One generation cycle against the live daemons; also what `adapt --docker` runs once.
class Generator {
 public:
  Generator(Options options, labels::Validator validator);

  struct Cycle {
    labels::Generated generated;
    std::vector<std::string> warnings;  // services/containers outside the ingress networks
    std::vector<std::string> notes;     // how the ingress networks were chosen, on change
    // Controller mode: the servers' admin addresses found this cycle (state.h).
    std::vector<std::string> controlled_servers;
  };
  Result<Cycle> run();

  const Options& options() const { return options_; }
  std::vector<std::unique_ptr<Client>>& clients() { return clients_; }

 private:
  Result<IngressSet> ingress(const std::vector<DaemonState>& daemons, std::string& note);

  Options options_;
  labels::Validator validator_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::optional<IngressSet> last_ingress_;
};

// One log line per skipped label or source (`labels_skipped`) and per dropped block
// (`block_dropped`, naming the block, the services/containers it came from and why).
void log_problems(const labels::Generated& generated);

class Watcher {
 public:
  using Apply = std::function<void(const Generator::Cycle&)>;
  // `apply` gets each cycle whose Caddyfile differs from the last; `observe`, when set, every
  // successful cycle (before `apply`), e.g. for the controller's server list.
  Watcher(Options options, labels::Validator validator, Apply apply, Apply observe = nullptr);
  ~Watcher();  // stops
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  void start();
  void stop();
  // Regenerate now (SIGHUP); the result is applied only if it differs from the last one.
  void trigger();

 private:
  void loop();
  void follow_events(Client& client);
  void on_event(bool immediate);
  bool sleep_for(std::chrono::milliseconds d);  // false when stopping

  Generator generator_;
  Apply apply_;
  Apply observe_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stop_{false};
  bool pending_ = false;
  std::chrono::steady_clock::time_point pending_at_;
  std::optional<std::string> last_text_;
  std::vector<std::string> last_warnings_;
  std::vector<std::string> last_problems_;
  std::thread loop_thread_;
  std::vector<std::thread> event_threads_;
};

}  // namespace hsp::docker

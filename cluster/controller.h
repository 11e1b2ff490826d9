// The controller half of a multi-node Swarm (CDP's `controller` mode, made safe): the instance
// that watches Docker on a manager pushes each version of the generated Caddyfile, with the
// ACME certificates and pending challenge answers it holds, to every server.
//
//   - Servers are the static list plus those found in Docker (the `caddy_controlled_server`
//     label); both can change at any time.
//   - Every check interval (and at once after a change) each server is asked for its version
//     (GET /hsp/v1/version) and sent the current one when it differs (POST /hsp/v1/config,
//     sealed with the push key). A server that restarted, lost its data or missed a push while
//     it was down is brought up to date within one interval; CDP never re-pushes to a server
//     that comes back with the same address.
//   - Versions only grow: max(last + 1, Unix time in ms), kept in <data>/cluster/controller.json,
//     so a restarted or moved controller is never taken for an older one. A new version is made
//     only when the Caddyfile or a pushed file changed.
//   - Each server has its own worker thread, so one that hangs (accepts and never answers)
//     delays nobody else: its probe gives up after 2 s, a push after 10 s, and it is tried
//     again the next interval.
//   - A server that answers 409 holds a newer version than this controller (another controller
//     before it, with a clock ahead of ours): the next version is made above the server's.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cluster/admin_http.h"
#include "cluster/bundle.h"
#include "cluster/seal.h"

namespace hsp::cluster {

inline constexpr std::string_view kConfigPath = "/hsp/v1/config";
inline constexpr std::string_view kVersionPath = "/hsp/v1/version";
// How far ahead of a clock a version may be (versions are Unix milliseconds, or just above
// the last one): a day of clock skew between controller and servers.
inline constexpr uint64_t kMaxVersionLead = uint64_t{24} * 3600 * 1000;
// The largest sealed push a server takes (AdminServer's body limit there).
inline constexpr size_t kMaxPushBytes = size_t{64} << 20;

class Controller {
 public:
  struct Options {
    std::string data_dir;
    PushKey key;
    std::vector<std::string> static_servers;  // "host:port"
    std::chrono::milliseconds check_interval{std::chrono::seconds(5)};
    std::chrono::milliseconds probe_timeout{std::chrono::seconds(2)};  // GET version
    std::chrono::milliseconds timeout{std::chrono::seconds(10)};       // POST config
    std::string name;                                                  // this host, in pushes
  };
  explicit Controller(Options options);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  Errors start();  // reads the saved version; starts the thread
  void stop();

  // A new generated Caddyfile (each generation that changed it); nullopt: nothing to push yet
  // (servers keep what they have).
  void set_caddyfile(std::optional<std::string> caddyfile);
  // The servers found in Docker this generation ("ip:port").
  void set_discovered(std::vector<std::string> servers);
  // Certificates or challenge answers changed in the data directory.
  void files_changed();
  // Pushes the current state now and waits until every server has it or has failed to take it
  // (down, hung past its deadline), at most `wait`; true when all have it (and there is at
  // least one server).
  bool push_and_wait(std::chrono::milliseconds wait);

  uint64_t version() const;

 private:
  struct Worker {
    std::string target;
    uint64_t attempted = 0;  // the version last tried on it (taken or failed)
    uint64_t has = 0;        // the version it said it has after that try (0: unknown)
    uint64_t tries = 0;      // attempts finished
    uint64_t kicked = 0;     // the kick_ its last attempt answered
    bool stop = false;
    std::thread thread;
  };

  void loop();
  void work(Worker& w);
  // Rebuilds the bundle when something changed (mu_ held); false when there is nothing to push.
  bool rebuild();
  // Adds and removes workers to match the static and discovered servers (mu_ held via `lock`).
  void reconcile(std::unique_lock<std::mutex>& lock);
  // One probe, and a push when the server is behind: the version it has now, or 0 on failure.
  uint64_t sync_one(const std::string& target, uint64_t version, const std::string& sealed);

  Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool wake_ = false;
  bool dirty_ = false;
  std::optional<std::string> caddyfile_;
  std::vector<std::string> discovered_;
  ControllerState state_;
  uint64_t floor_ = 0;      // a server's newer version (409): the next one goes above it
  std::string sealed_;      // the current version, sealed; empty: nothing to push yet
  uint64_t requested_ = 0;  // rebuilds asked for by push_and_wait
  uint64_t rebuilt_ = 0;    // and done
  uint64_t kick_ = 0;       // push_and_wait: every worker tries again now
  std::map<std::string, std::unique_ptr<Worker>> workers_;
  std::map<std::string, std::string> error_;  // server -> the last failure, logged on change
  std::thread thread_;
};

}  // namespace hsp::cluster

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
//   - Servers are contacted in parallel, each with its own deadline: a dead one delays nobody.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
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

class Controller {
 public:
  struct Options {
    std::string data_dir;
    PushKey key;
    std::vector<std::string> static_servers;  // "host:port"
    std::chrono::milliseconds check_interval{std::chrono::seconds(5)};
    std::chrono::milliseconds timeout{std::chrono::seconds(10)};  // per request
    std::string name;                                             // this host, in pushes
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
  // Pushes the current state now and waits until every server has it or `wait` passed; true
  // when all have it (and there is at least one server).
  bool push_and_wait(std::chrono::milliseconds wait);

  uint64_t version() const;

 private:
  void loop();
  // Rebuilds the bundle when something changed; returns false when there is nothing to push.
  bool rebuild();
  void sync_one(const std::string& target, uint64_t version, const std::string& sealed);

  Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool wake_ = false;
  bool dirty_ = false;
  std::optional<std::string> caddyfile_;
  std::vector<std::string> discovered_;
  ControllerState state_;
  std::string sealed_;                        // the current version, sealed
  std::map<std::string, uint64_t> have_;      // server -> the version it said it has
  std::map<std::string, std::string> error_;  // server -> the last failure, logged on change
  uint64_t requested_ = 0, completed_ = 0;    // rounds asked for by push_and_wait, and done
  std::thread thread_;
};

}  // namespace hsp::cluster

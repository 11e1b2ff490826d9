// The server half of a multi-node Swarm (CDP's `server` mode, made safe): accepts the
// controller's pushes on the admin listener and keeps the last good one.
//
//   GET  /hsp/v1/version  {"version": N, "instance": "..."}; N is 0 before any push
//   POST /hsp/v1/config   a sealed Bundle (cluster/seal.h); answers
//                          200 applied (or already had it), 400 not a bundle,
//                          401 not sealed with our secret (logged: push_refused, with the peer),
//                          409 older than ours, 422 the Caddyfile does not load here (the last
//                          good config keeps serving), 500 the data directory cannot be written
//
// Files are written before the Caddyfile is loaded, so the snapshot built from it finds its
// certificates; the state is saved after it loaded, so a restart serves exactly the last good
// push.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>

#include "cluster/admin_http.h"
#include "cluster/bundle.h"
#include "cluster/seal.h"

namespace hsp::cluster {

class PushReceiver {
 public:
  // Loads a pushed Caddyfile (compile and publish); the errors when it does not load.
  using Apply = std::function<Errors(const std::string& caddyfile, uint64_t version)>;
  struct Options {
    std::string data_dir;
    PushKey key;
  };
  PushReceiver(Options options, Apply apply);

  // Serves the saved state, if any: true when one was loaded. A damaged state file is logged
  // and ignored (the controller pushes again).
  bool restore();
  AdminResponse handle(const AdminRequest& req);
  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  // From now on pushes get 503 and one being applied stops between files (shutdown).
  void close() { closing_ = true; }

 private:
  AdminResponse push(const AdminRequest& req);

  Options options_;
  Apply apply_;
  std::string instance_;  // random per process: tells a restarted server from a running one
  std::mutex mu_;         // one push at a time
  // Read without mu_ (version probes and the health check must not wait for a push).
  std::atomic<uint64_t> version_{0};
  std::atomic<bool> closing_{false};
};

}  // namespace hsp::cluster

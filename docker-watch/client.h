// A Docker Engine API client over a unix socket (HTTP/1.1 on Asio + Beast). Calls block the
// calling thread: the watcher runs them on its own threads, never on a data-plane thread. Every
// call is bounded (connect 2 s, listings 15 s) except the event stream, which runs until stop is
// set or the daemon closes it.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "util/error.h"

namespace hsp::docker {

class Client {
 public:
  // socket: a unix socket path. api_version: "1.41" to pin, "" to negotiate with /version.
  Client(std::string socket, std::string api_version = "");
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& socket() const { return socket_; }
  // The version used in request paths: the pinned one, else the daemon's ApiVersion from the
  // last successful /version (empty before that).
  std::string api_version() const;

  // GET /version (unversioned path); sets the API version unless pinned. Returns the daemon's
  // Version string, e.g. "20.10.24".
  Result<std::string> negotiate();

  // GET /v<api>/<path_and_query> (negotiating first when needed) and parse the JSON body.
  // Errors say which socket, which request, and the daemon's message for non-2xx answers.
  Result<nlohmann::json> get(std::string_view path_and_query);

  // Follows GET /v<api>/events?<query>: on_event gets each JSON object. Returns when `stop`
  // becomes true (an empty error list) or with the error that ended the stream; a stream the
  // daemon closes is an error too ("event stream closed").
  Errors stream_events(std::string_view query,
                       const std::function<void(const nlohmann::json&)>& on_event,
                       const std::atomic<bool>& stop);

  // Percent-encodes a query value (filters JSON).
  static std::string escape(std::string_view value);

 private:
  std::string socket_;
  std::string pinned_;
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace hsp::docker

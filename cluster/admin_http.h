// The cluster's small HTTP/1.1 endpoint and client: a server's admin listener (pushes from the
// controller), the health probe listener, the controller's pushes and `hsp-gateway health`.
// Not the data plane: one request per connection (Connection: close), Content-Length bodies
// only, a thread and a deadline per connection, at most 16 connections and 4 per peer address,
// peers filtered by address before a byte is read (a refused address is logged once a minute).
//
// Known shortcoming: a peer inside the allowed networks can still hold its 4 connections idle,
// and several such peers the 16; the controller's probes then fail until a deadline frees a
// slot. Pushes are retried every check interval, so it delays configuration; it never blocks
// traffic.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "util/error.h"

namespace hsp::cluster {

struct RequestHead {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // names lower-cased; a repeated name is an error
  size_t content_length = 0;
};

// Parses a request head: the bytes up to and including the blank line. Strict: CRLF line ends,
// HTTP/1.0 or 1.1, token methods, origin-form targets, no Transfer-Encoding, one numeric
// Content-Length at most, no obsolete line folding. The Error says what was wrong.
Result<RequestHead> parse_request_head(std::string_view head);

struct AdminRequest {
  RequestHead head;
  std::string body;
  std::string peer;  // "ip:port"
};
struct AdminResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// A host:port (IPv6 in brackets) split into its parts; Error on anything else.
struct HostPort {
  std::string host;
  std::string port;
};
Result<HostPort> parse_host_port(std::string_view text);

class AdminServer {
 public:
  using Handler = std::function<AdminResponse(const AdminRequest&)>;
  struct Options {
    std::string listen;                // "ip:port"
    std::vector<std::string> allowed;  // CIDRs a peer must be in; empty: any
    size_t body_limit = size_t{64} << 20;
    std::chrono::milliseconds deadline{std::chrono::seconds(10)};  // per connection
    std::string name = "admin";                                    // in log lines: which listener
  };
  AdminServer(Options options, Handler handler);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  Errors start();  // binds and listens; the Error names the address
  void stop();

 private:
  static constexpr size_t kMaxConnections = 16;
  static constexpr int kMaxPerPeer = 4;

  void loop();
  void serve(int fd, const std::string& peer);
  bool refused_logged(const std::string& host);  // accept thread only

  Options options_;
  Handler handler_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::thread thread_;
  std::map<std::string, std::chrono::steady_clock::time_point> refused_;
  std::mutex conn_mu_;
  std::condition_variable conn_cv_;
  std::set<int> conn_fds_;               // connections being served, each by its own thread
  std::map<std::string, int> per_peer_;  // by peer address
};

struct ClientResponse {
  int status = 0;
  std::string body;
};
// One request to host:port with a deadline for the whole exchange; an Error when no complete
// answer came (refused, timeout, malformed).
Result<ClientResponse> http_request(const HostPort& to, std::string_view method,
                                    std::string_view target, std::string_view body,
                                    std::chrono::milliseconds deadline);

// Whether `ip` (text, v4 or v6) lies in `cidr` ("10.0.0.0/24"); false for malformed input.
bool address_in_cidr(std::string_view ip, std::string_view cidr);
// This host's interface addresses that lie in `cidr`, IPv4 first.
std::vector<std::string> local_addresses_in(std::string_view cidr);

}  // namespace hsp::cluster

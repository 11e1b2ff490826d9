// The transport is Boost.Asio's unix socket plus Beast's HTTP/1.1 serializer and parser, both
// compiled once in hsp_asio. libcurl used to do this: for a few GETs on a local socket it mapped
// and initialised gnutls, krb5, ldap, ssh2 and more at start-up, ~4 MB of idle RSS (~6.5 MB with
// --docker, measured against dockerd 20.10).
#include "docker-watch/client.h"

#include <sys/un.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "util/blocking_op.h"

namespace hsp::docker {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using Local = asio::local::stream_protocol;

constexpr auto kConnectTimeout = std::chrono::seconds(2);
constexpr auto kListingTimeout = std::chrono::seconds(15);
// How often a wait looks at the caller's stop flag: the flag has no way to wake us, so a stream
// that waits for the next event polls it (4 wake-ups a second while the watcher idles).
constexpr auto kStopPoll = std::chrono::milliseconds(250);
// Listings of a large Swarm are a few MiB; anything far beyond is not a Docker answer.
constexpr std::uint64_t kBodyCap = std::uint64_t{256} << 20;
// An event is one JSON object on one line; no newline within this much is not an event stream.
constexpr std::size_t kLineCap = std::size_t{1} << 20;
// What is kept of a non-2xx answer's body to find the daemon's {"message"}.
constexpr std::size_t kErrorBodyCap = std::size_t{64} << 10;
// Docker's answers carry a handful of short headers; Beast's default (8 KiB) would do too, this
// leaves room for proxies in front of the socket (e.g. a socket proxy adding headers).
constexpr std::uint32_t kHeaderCap = 64u << 10;

// Docker's error bodies are {"message": "..."}.
std::string daemon_message(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("message") && j["message"].is_string())
    return j["message"].get<std::string>();
  std::string s = body.substr(0, 200);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string status_error(unsigned status, const std::string& body) {
  std::string out = std::to_string(status);
  std::string message = daemon_message(body);
  if (!message.empty()) out += " " + message;
  return out;
}

using Outcome = BlockingOutcome;

// One GET on one connection to the daemon, on a private io_context that only the calling
// thread runs. Each step starts one asynchronous operation and runs the context until it
// completes, its deadline passes or the stop flag turns true, which keeps the calls blocking
// and bounded without a thread of their own. Keep-alive is not used: a call is a connection.
class Exchange {
 public:
  Exchange(std::string socket, std::string target)
      : socket_path_(std::move(socket)), target_(std::move(target)) {}

  // Every error names the socket and the request.
  std::string fail(std::string_view why) const {
    return "docker " + socket_path_ + ": GET " + target_ + ": " + std::string(why);
  }

  // Connects (bounded by kConnectTimeout) and sends the request; the error text or nullopt.
  std::optional<std::string> open(const std::atomic<bool>* stop) {
    // Asio's endpoint would throw on a path that does not fit sockaddr_un.
    if (socket_path_.size() >= sizeof(sockaddr_un::sun_path)) {
      return fail("connect: the socket path is longer than " +
                  std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes");
    }
    beast::error_code ec;
    Outcome o =
        run([&](auto handler) { socket_.async_connect(Local::endpoint(socket_path_), handler); },
            Clock::now() + kConnectTimeout, stop, ec);
    if (o == Outcome::stopped) return std::string();
    if (o == Outcome::timed_out) return fail("connect: no answer within 2 s");
    if (ec) return fail("connect: " + ec.message());

    http::request<http::empty_body> req{http::verb::get, target_, 11};
    // What the docker CLI sends; the daemon ignores it, but proxies in front of the socket
    // (docker-socket-proxy and the like) route on a valid Host.
    req.set(http::field::host, "docker");
    req.set(http::field::user_agent, "hsp-gateway");
    req.set(http::field::connection, "close");
    o = run([&](auto handler) { http::async_write(socket_, req, handler); },
            Clock::now() + kConnectTimeout, stop, ec);
    if (o == Outcome::stopped) return std::string();
    if (o == Outcome::timed_out) return fail("the daemon does not take the request");
    if (ec) return fail("sending the request: " + ec.message());
    return std::nullopt;
  }

  // One step, to completion, the deadline or `stop` (may be null; util/blocking_op.h); on the
  // last two the socket is closed, which ends the operation.
  template <typename Start>
  Outcome run(Start&& start, Clock::time_point deadline, const std::atomic<bool>* stop,
              beast::error_code& ec) {
    auto abort = [this] {
      beast::error_code ignored;
      socket_.close(ignored);
    };
    return run_blocking(ioc_, start, abort, deadline, stop, kStopPoll, ec);
  }

  Local::socket& socket() { return socket_; }

 private:
  asio::io_context ioc_{1};
  Local::socket socket_{ioc_};
  std::string socket_path_;
  std::string target_;
};

struct Fetched {
  unsigned status = 0;
  std::string body;
};

// One bounded GET: connect within 2 s, the whole answer within 15 s of the call.
Result<Fetched> fetch_once(const std::string& socket, const std::string& path) {
  const auto deadline = Clock::now() + kListingTimeout;
  Exchange ex(socket, path);
  if (auto failed = ex.open(nullptr)) return Error{{}, *failed};

  http::response_parser<http::string_body> parser;
  parser.header_limit(kHeaderCap);
  parser.body_limit(kBodyCap);
  beast::flat_buffer buffer;
  beast::error_code ec;
  Outcome o = ex.run([&](auto handler) { http::async_read(ex.socket(), buffer, parser, handler); },
                     deadline, nullptr, ec);
  if (o == Outcome::timed_out) return Error{{}, ex.fail("no complete answer within 15 s")};
  if (ec == http::error::body_limit) return Error{{}, ex.fail("answer larger than 256 MiB")};
  if (ec) return Error{{}, ex.fail("reading the answer: " + ec.message())};

  Fetched out;
  out.status = parser.get().result_int();
  out.body = std::move(parser.get().body());
  if (out.status < 200 || out.status > 299) {
    return Error{{}, ex.fail(status_error(out.status, out.body))};
  }
  return out;
}

// Asio throws where it cannot report otherwise (no file descriptor left for the io_context's
// epoll instance, say); no exception leaves the client.
Result<Fetched> fetch(const std::string& socket, const std::string& path) {
  try {
    return fetch_once(socket, path);
  } catch (const boost::system::system_error& e) {
    return Error{{}, "docker " + socket + ": GET " + path + ": " + e.what()};
  }
}

}  // namespace

struct Client::State {
  std::mutex mu;
  std::string api;  // negotiated
};

Client::Client(std::string socket, std::string api_version)
    : socket_(std::move(socket)), pinned_(std::move(api_version)), state_(new State) {}

Client::~Client() = default;

std::string Client::api_version() const {
  if (!pinned_.empty()) return pinned_;
  std::lock_guard lock(state_->mu);
  return state_->api;
}

std::string Client::escape(std::string_view value) {
  std::string out;
  static const char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

Result<std::string> Client::negotiate() {
  auto r = fetch(socket_, "/version");
  if (!r) return r.errors();
  auto j = json::parse(r->body, nullptr, false);
  if (!j.is_object() || !j.contains("ApiVersion") || !j["ApiVersion"].is_string()) {
    return Error{{}, "docker " + socket_ + ": GET /version: not a Docker version answer"};
  }
  {
    std::lock_guard lock(state_->mu);
    state_->api = j["ApiVersion"].get<std::string>();
  }
  return j.value("Version", std::string("unknown"));
}

Result<nlohmann::json> Client::get(std::string_view path_and_query) {
  if (api_version().empty()) {
    auto v = negotiate();
    if (!v) return v.errors();
  }
  std::string path = "/v" + api_version() + "/" + std::string(path_and_query);
  auto r = fetch(socket_, path);
  if (!r) return r.errors();
  auto j = json::parse(r->body, nullptr, false);
  if (j.is_discarded()) {
    return Error{{}, "docker " + socket_ + ": GET " + path + ": the answer is not JSON"};
  }
  return j;
}

namespace {

// Hands each complete line of `pending` to on_event and drops it; keeps the unfinished tail.
// Returns false when the tail outgrew kLineCap.
bool take_lines(std::string& pending, const std::function<void(const json&)>& on_event,
                std::string& bad) {
  size_t start = 0;
  for (;;) {
    size_t nl = pending.find('\n', start);
    if (nl == std::string::npos) break;
    std::string_view line(pending.data() + start, nl - start);
    start = nl + 1;
    if (line.empty() || line == "\r") continue;
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      if (bad.empty()) bad = std::string(line.substr(0, 120));
      continue;
    }
    on_event(j);
  }
  pending.erase(0, start);
  return pending.size() <= kLineCap;
}

// Follows one event stream until stop, an error or the daemon's end of it.
Errors follow(const std::string& socket, const std::string& path,
              const std::function<void(const json&)>& on_event, const std::atomic<bool>& stop) {
  Exchange ex(socket, path);
  if (auto failed = ex.open(&stop)) {
    if (stop.load()) return {};
    return {Error{{}, *failed}};
  }

  // The stream has no end and no length: the body limit is off and the body string doubles as
  // the buffer of the line being received (string_body appends at its current size, so the
  // lines taken out between reads are not seen again).
  http::response_parser<http::string_body> parser;
  parser.header_limit(kHeaderCap);
  parser.body_limit(boost::none);
  beast::flat_buffer buffer;
  beast::error_code ec;
  // The daemon sends the header at once (it flushes before the first event); the same 15 s
  // bound as a listing catches a socket that accepts and never answers.
  Outcome o =
      ex.run([&](auto handler) { http::async_read_header(ex.socket(), buffer, parser, handler); },
             Clock::now() + kListingTimeout, &stop, ec);
  if (o == Outcome::stopped) return {};
  if (o == Outcome::timed_out) return {Error{{}, ex.fail("no answer within 15 s")}};
  if (ec) return {Error{{}, ex.fail("reading the answer: " + ec.message())}};

  const unsigned status = parser.get().result_int();
  const bool ok = status >= 200 && status <= 299;
  // A refusal's body is short and complete; it gets the listings' bound.
  const auto deadline = ok ? Clock::time_point::max() : Clock::now() + kListingTimeout;
  std::string& body = parser.get().body();
  std::string bad;  // the first unparsable line
  std::string why;
  while (!parser.is_done()) {
    o = ex.run([&](auto handler) { http::async_read_some(ex.socket(), buffer, parser, handler); },
               deadline, &stop, ec);
    if (o == Outcome::stopped) return {};
    if (ok && !take_lines(body, on_event, bad)) {
      why = "no end of line within 1 MiB: not an event stream";
      break;
    }
    if (!ok && body.size() > kErrorBodyCap) break;
    if (o == Outcome::timed_out) break;
    if (ec == http::error::end_of_stream || ec == http::error::partial_message) {
      why = "event stream closed by the daemon";
      break;
    }
    if (ec) {
      why = "reading the event stream: " + ec.message();
      break;
    }
  }
  if (stop.load()) return {};
  if (!ok) {
    why = status_error(status, body);
  } else if (why.empty()) {
    why = "event stream closed by the daemon";
  }
  if (!bad.empty()) why += " (unparsable event: " + bad + ")";
  return {Error{{}, ex.fail(why)}};
}

}  // namespace

Errors Client::stream_events(std::string_view query,
                             const std::function<void(const nlohmann::json&)>& on_event,
                             const std::atomic<bool>& stop) {
  if (api_version().empty()) {
    auto v = negotiate();
    if (!v) return v.errors();
  }
  if (stop.load()) return {};
  const std::string path = "/v" + api_version() + "/events?" + std::string(query);
  try {
    return follow(socket_, path, on_event, stop);
  } catch (const boost::system::system_error& e) {
    return {Error{{}, "docker " + socket_ + ": GET " + path + ": " + e.what()}};
  }
}

}  // namespace hsp::docker

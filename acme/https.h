// A small blocking HTTPS client for talking to an ACME CA: one request per connection, the CA's
// certificate and host name verified against the system's roots plus an optional PEM file, and
// the whole exchange (resolve, connect, handshake, write, read) bounded by one timeout. Built on
// the project's compiled Asio + Beast (hsp_asio) with asio::ssl over OpenSSL; no libcurl.
//
// Not a general HTTP client: no redirects (ACME never redirects, RFC 8555 §6.1 wants the exact
// URL), no proxies, no keep-alive (a certificate takes ~15 requests, so the extra handshakes cost
// tens of milliseconds per order), no chunked request bodies.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/error.h"

namespace hsp::acme {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpsUrl {
  std::string host;    // without brackets for an IPv6 literal
  std::string port;    // "443" when the URL has none
  std::string target;  // path and query, "/" when empty
};
// "https://host[:port][/path][?query]"; anything else is an Error naming the URL.
Result<HttpsUrl> parse_https_url(std::string_view url);

struct HttpsRequest {
  std::string method = "GET";  // GET, HEAD or POST
  std::string url;
  Headers headers;  // in addition to Host, User-Agent, Content-Length
  std::string body;
};

struct HttpsResponse {
  int status = 0;
  Headers headers;
  std::string body;

  // The first header called `name` (case-insensitive); nullopt when absent.
  std::optional<std::string> header(std::string_view name) const;
  // Every header called `name`, in order (Link may repeat, RFC 8288 §3).
  std::vector<std::string> headers_named(std::string_view name) const;
};

struct HttpsOptions {
  std::string ca_root_file;  // extra trusted roots (PEM); empty: the system's only
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  std::string user_agent = "hsp-gateway";
  std::size_t body_limit = std::size_t{8} << 20;  // a chain or a directory is a few KiB
  // Set (by another thread) when the process stops: a request under way ends within ~100 ms
  // as if its deadline had passed. Null: never.
  std::shared_ptr<const std::atomic<bool>> cancelled;
};

class HttpsClient {
 public:
  explicit HttpsClient(HttpsOptions options);
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  // Any HTTP status is a response; an Error is a request that got no complete answer (bad URL,
  // DNS, connect, TLS or verification, timeout, malformed answer), with the reason.
  Result<HttpsResponse> send(const HttpsRequest& req);

 private:
  struct Tls;
  HttpsOptions options_;
  std::unique_ptr<Tls> tls_;  // built on first use so that a bad ca_root_file is a request error
};

}  // namespace hsp::acme

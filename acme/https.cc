#include "acme/https.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "http/message.h"  // iequals
#include "util/blocking_op.h"

namespace hsp::acme {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// The reason OpenSSL gives for a failed handshake, verification errors included ("certificate
// verify failed" alone does not tell an unknown root from a wrong host name).
std::string tls_error(const beast::error_code& ec, SSL* ssl) {
  std::string out = ec.message();
  long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    out += " (";
    out += X509_verify_cert_error_string(verify);
    out += ")";
  }
  return out;
}

// One request on one connection, on a private io_context that only the calling thread runs
// (util/blocking_op.h): every step is one asynchronous operation bounded by the request's
// deadline and the cancellation flag.
class Exchange {
 public:
  Exchange(asio::ssl::context& ctx, Clock::time_point deadline, const std::atomic<bool>* cancelled)
      : resolver_(ioc_), stream_(ioc_, ctx), deadline_(deadline), cancelled_(cancelled) {}

  template <typename Start>
  bool run(Start&& start, beast::error_code& ec) {
    auto abort = [this] {
      beast::error_code ignored;
      resolver_.cancel();
      stream_.next_layer().close(ignored);
    };
    // Cancellation looked at every 100 ms, so that a stopping gateway is not held up.
    return run_blocking(ioc_, start, abort, deadline_, cancelled_, std::chrono::milliseconds(100),
                        ec) == BlockingOutcome::done;
  }

  tcp::resolver& resolver() { return resolver_; }
  asio::ssl::stream<tcp::socket>& stream() { return stream_; }

 private:
  asio::io_context ioc_{1};
  tcp::resolver resolver_;
  asio::ssl::stream<tcp::socket> stream_;
  Clock::time_point deadline_;
  const std::atomic<bool>* cancelled_;
};

}  // namespace

Result<HttpsUrl> parse_https_url(std::string_view url) {
  auto bad = [&](const std::string& why) {
    return Error{{}, "URL \"" + std::string(url) + "\": " + why};
  };
  constexpr std::string_view kScheme = "https://";
  if (url.size() < kScheme.size() || !hsp::http::iequals(url.substr(0, kScheme.size()), kScheme)) {
    return bad("not an https:// URL");
  }
  std::string_view rest = url.substr(kScheme.size());
  const std::size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  std::string_view target = end == std::string_view::npos ? "" : rest.substr(end);
  if (const std::size_t hash = target.find('#'); hash != std::string_view::npos) {
    target = target.substr(0, hash);
  }
  if (authority.find('@') != std::string_view::npos) return bad("user info is not supported");
  HttpsUrl out;
  out.port = "443";
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unterminated IPv6 literal");
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("garbage after the IPv6 literal");
      out.port = std::string(after.substr(1));
    }
  } else {
    const std::size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) out.port = std::string(authority.substr(colon + 1));
  }
  if (out.host.empty()) return bad("no host");
  if (out.port.empty() || out.port.size() > 5 ||
      out.port.find_first_not_of("0123456789") != std::string::npos || std::stoi(out.port) == 0 ||
      std::stoi(out.port) > 65535) {
    return bad("invalid port");
  }
  out.target = target.empty() ? "/" : std::string(target);
  if (out.target.front() == '?') out.target.insert(0, "/");
  return out;
}

std::optional<std::string> HttpsResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (hsp::http::iequals(k, name)) return v;
  }
  return std::nullopt;
}

std::vector<std::string> HttpsResponse::headers_named(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : headers) {
    if (hsp::http::iequals(k, name)) out.push_back(v);
  }
  return out;
}

struct HttpsClient::Tls {
  asio::ssl::context ctx{asio::ssl::context::tls_client};
};

HttpsClient::HttpsClient(HttpsOptions options) : options_(std::move(options)) {}
HttpsClient::~HttpsClient() = default;

Result<HttpsResponse> HttpsClient::send(const HttpsRequest& req) {
  const std::string what = req.method + " " + req.url;
  auto fail = [&](const std::string& why) { return Error{{}, what + ": " + why}; };
  auto url = parse_https_url(req.url);
  if (!url) return url.errors();

  // Asio throws where it cannot report otherwise (no descriptor left for the io_context, say);
  // no exception leaves the client.
  try {
    if (!tls_) {
      auto tls = std::make_unique<Tls>();
      beast::error_code ec;
      tls->ctx.set_default_verify_paths(ec);
      if (ec) return fail("loading the system's trusted roots: " + ec.message());
      if (!options_.ca_root_file.empty()) {
        tls->ctx.load_verify_file(options_.ca_root_file, ec);
        if (ec) {
          return fail("loading CA roots from " + options_.ca_root_file + ": " + ec.message());
        }
      }
      tls->ctx.set_verify_mode(asio::ssl::verify_peer);
      SSL_CTX_set_min_proto_version(tls->ctx.native_handle(), TLS1_2_VERSION);
      tls_ = std::move(tls);
    }

    const auto deadline = Clock::now() + options_.timeout;
    const std::string timeout_s =
        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(options_.timeout).count());
    Exchange ex(tls_->ctx, deadline, options_.cancelled.get());
    beast::error_code ec;

    // Resolve with Asio's resolver (getaddrinfo on its private thread, cancellable).
    tcp::resolver::results_type endpoints;
    if (!ex.run(
            [&](auto handler) {
              ex.resolver().async_resolve(
                  url->host, url->port,
                  [&endpoints, handler](beast::error_code e, tcp::resolver::results_type r) {
                    endpoints = std::move(r);
                    handler(e);
                  });
            },
            ec)) {
      return fail("resolving " + url->host + ": no answer within " + timeout_s + " s");
    }
    if (ec) return fail("resolving " + url->host + ": " + ec.message());

    if (!ex.run(
            [&](auto handler) {
              asio::async_connect(
                  ex.stream().next_layer(), endpoints,
                  [handler](beast::error_code e, const tcp::endpoint&) { handler(e); });
            },
            ec)) {
      return fail("connecting to " + url->host + ":" + url->port + ": no answer within " +
                  timeout_s + " s");
    }
    if (ec) return fail("connecting to " + url->host + ":" + url->port + ": " + ec.message());

    // The CA's certificate must name the host of the URL: an IP address is checked against
    // the IP SANs, a name against the DNS SANs (RFC 6125), and only a name goes into SNI
    // (RFC 6066 §3 forbids literal addresses there).
    SSL* ssl = ex.stream().native_handle();
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    boost::system::error_code addr_ec;
    asio::ip::make_address(url->host, addr_ec);
    const bool is_ip = !addr_ec;
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(param, url->host.c_str());
    } else {
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      X509_VERIFY_PARAM_set1_host(param, url->host.c_str(), url->host.size());
      SSL_set_tlsext_host_name(ssl, url->host.c_str());
    }
    if (!ex.run(
            [&](auto handler) {
              ex.stream().async_handshake(asio::ssl::stream_base::client, handler);
            },
            ec)) {
      return fail("TLS handshake with " + url->host + ": no answer within " + timeout_s + " s");
    }
    if (ec) return fail("TLS handshake with " + url->host + ": " + tls_error(ec, ssl));

    http::verb verb = http::string_to_verb(req.method);
    if (verb == http::verb::unknown) return fail("unknown method");
    http::request<http::string_body> out{verb, url->target, 11};
    const bool default_port = url->port == "443";
    std::string host_header =
        url->host.find(':') != std::string::npos ? "[" + url->host + "]" : url->host;
    if (!default_port) host_header += ":" + url->port;
    out.set(http::field::host, host_header);
    out.set(http::field::user_agent, options_.user_agent);
    out.set(http::field::connection, "close");
    for (const auto& [k, v] : req.headers) out.set(k, v);
    if (verb == http::verb::post || !req.body.empty()) {
      out.body() = req.body;
      out.prepare_payload();
    }
    if (!ex.run([&](auto handler) { http::async_write(ex.stream(), out, handler); }, ec)) {
      return fail("sending the request: no progress within " + timeout_s + " s");
    }
    if (ec) return fail("sending the request: " + ec.message());

    http::response_parser<http::string_body> parser;
    parser.body_limit(options_.body_limit);
    parser.skip(verb == http::verb::head);  // a HEAD answer announces a length it never sends
    beast::flat_buffer buffer;
    if (!ex.run([&](auto handler) { http::async_read(ex.stream(), buffer, parser, handler); },
                ec)) {
      return fail("no complete answer within " + timeout_s + " s");
    }
    // A server that closes without close_notify after a complete answer is common and harmless
    // here: the parser already has the whole message.
    if (ec && ec != asio::ssl::error::stream_truncated) {
      if (ec == http::error::body_limit) {
        return fail("answer larger than " + std::to_string(options_.body_limit) + " bytes");
      }
      return fail("reading the answer: " + ec.message());
    }
    if (!parser.is_header_done()) return fail("reading the answer: connection closed");

    HttpsResponse res;
    res.status = static_cast<int>(parser.get().result_int());
    for (const auto& field : parser.get()) {
      res.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    res.body = std::move(parser.get().body());
    // No TLS shutdown: the request said Connection: close and nothing more is read, so a
    // close_notify exchange would only add a round trip.
    beast::error_code ignored;
    ex.stream().next_layer().close(ignored);
    return res;
  } catch (const boost::system::system_error& e) {
    return fail(e.what());
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}

}  // namespace hsp::acme

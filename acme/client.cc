// The RFC 8555 flow over acme/https.h. Knowingly missing, and what it costs:
// - External Account Binding (§7.3.4): CAs that require it (ZeroSSL, Google) refuse newAccount.
// - Account key rollover, deactivation (§7.3.5, §7.3.6) and revocation (§7.6): not needed to
//   keep certificates current; an operator does these with another client.
// - Only ES256 account keys (jws.h); Caddy's default key type is the same.
#include "acme/client.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <strings.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "acme/https.h"
#include "acme/storage.h"  // parse_rfc3339
#include "util/log.h"

namespace hsp::acme {
namespace {

using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr std::string_view kProblemPrefix = "urn:ietf:params:acme:error:";
constexpr auto kDefaultPoll = std::chrono::seconds(1);

// RFC 9110 §10.2.3: Retry-After is delay-seconds or an HTTP-date (IMF-fixdate; the obsolete
// RFC 850 and asctime forms are accepted too, as §5.6.7 asks of recipients).
std::optional<std::chrono::seconds> parse_retry_after(const std::string& value) {
  std::string v = value;
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.erase(0, 1);
  if (v.empty()) return std::nullopt;
  if (v.find_first_not_of("0123456789") == std::string::npos) {
    if (v.size() > 9) return std::chrono::seconds(999999999);
    return std::chrono::seconds(std::stol(v));
  }
  for (const char* format :
       {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y"}) {
    std::tm tm{};
    const char* end = ::strptime(v.c_str(), format, &tm);
    if (end == nullptr || *end != '\0') continue;
    const std::time_t when = ::timegm(&tm);
    const std::time_t now = std::time(nullptr);
    return std::chrono::seconds(when > now ? when - now : 0);
  }
  return std::nullopt;
}

std::string method_of(const std::string& step) {
  if (step == "directory" || step == "renewal_info") return "GET";
  if (step == "nonce") return "HEAD";
  return "POST";
}

// A Failure for an HTTP answer outside 2xx: the problem document (RFC 8555 §6.7, RFC 7807)
// when the body is one, else the start of the body as the detail.
Failure answer_failure(const std::string& step, const std::string& url, const HttpsResponse& r) {
  Failure f;
  f.step = step;
  f.url = url;
  f.http_status = r.status;
  if (auto ra = r.header("Retry-After")) f.retry_after = parse_retry_after(*ra);
  json doc = json::parse(r.body, nullptr, false);
  if (doc.is_object()) {
    f.problem = r.body;
    if (doc.contains("type") && doc["type"].is_string()) f.problem_type = doc["type"];
    if (doc.contains("detail") && doc["detail"].is_string()) f.detail = doc["detail"];
    // RFC 8555 §6.7.1: a compound problem carries the per-identifier ones; show them, since the
    // top-level detail is often only "Errors occurred".
    if (doc.contains("subproblems") && doc["subproblems"].is_array()) {
      for (const auto& sub : doc["subproblems"]) {
        if (!sub.is_object()) continue;
        f.detail += "; ";
        if (sub.contains("identifier") && sub["identifier"].is_object() &&
            sub["identifier"].contains("value") && sub["identifier"]["value"].is_string()) {
          f.detail += sub["identifier"]["value"].get<std::string>() + ": ";
        }
        if (sub.contains("detail") && sub["detail"].is_string()) {
          f.detail += sub["detail"].get<std::string>();
        }
      }
    }
  } else {
    f.detail = r.body.substr(0, 200);
    while (!f.detail.empty() && (f.detail.back() == '\n' || f.detail.back() == '\r')) {
      f.detail.pop_back();
    }
    if (f.detail.empty()) f.detail = "no problem document";
    // ACME requests are not redirected (RFC 8555 §6.1 gives every resource its URL): a 3xx
    // usually means acme_ca names a web page rather than a directory.
    if (r.status >= 300 && r.status < 400) {
      auto location = r.header("Location");
      f.detail = "redirected to " + (location ? std::string(*location) : std::string("?")) +
                 ": ACME is not redirected; is the directory URL right?";
    }
  }
  return f;
}

// A Failure carried inside an object (a challenge's or an order's `error`, RFC 8555 §7.1.3,
// §7.1.6) rather than in an HTTP error answer.
Failure document_failure(const std::string& step, const std::string& url, const json& error,
                         const std::string& fallback_detail) {
  Failure f;
  f.step = step;
  f.url = url;
  f.detail = fallback_detail;
  if (error.is_object()) {
    f.problem = error.dump();
    if (error.contains("type") && error["type"].is_string()) f.problem_type = error["type"];
    if (error.contains("detail") && error["detail"].is_string()) f.detail = error["detail"];
    // The problem's own `status` member (RFC 7807 §3.1) is what the CA would have answered.
    if (error.contains("status") && error["status"].is_number_integer()) {
      f.http_status = error["status"];
    }
  }
  return f;
}

Failure local_failure(const std::string& step, const std::string& url, std::string detail) {
  Failure f;
  f.step = step;
  f.url = url;
  f.detail = std::move(detail);
  return f;
}

std::string string_member(const json& j, const char* key) {
  if (j.is_object() && j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
  return {};
}

// The URLs of `Link: <url>;rel="alternate"` (RFC 8555 §7.4.2, RFC 8288), across repeated
// headers and comma-separated values.
std::vector<std::string> alternate_links(const HttpsResponse& r) {
  std::vector<std::string> out;
  for (const std::string& value : r.headers_named("Link")) {
    std::size_t pos = 0;
    while (true) {
      const std::size_t open = value.find('<', pos);
      if (open == std::string::npos) break;
      const std::size_t close = value.find('>', open);
      if (close == std::string::npos) break;
      const std::string target = value.substr(open + 1, close - open - 1);
      const std::size_t next = value.find('<', close);
      std::string params =
          value.substr(close + 1, next == std::string::npos ? next : next - close - 1);
      params.erase(std::remove_if(params.begin(), params.end(),
                                  [](char c) { return c == ' ' || c == '"' || c == '\t'; }),
                   params.end());
      std::transform(params.begin(), params.end(), params.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (params.find("rel=alternate") != std::string::npos) out.push_back(target);
      pos = close + 1;
    }
  }
  return out;
}

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

std::vector<X509Ptr> read_chain(const std::string& pem) {
  std::vector<X509Ptr> out;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return out;
  while (X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) out.emplace_back(x);
  ERR_clear_error();  // the end of the input reads as an error
  BIO_free(bio);
  return out;
}

// The issuer CN of the chain's last certificate: the root it chains to, which is how Caddy's
// preferred_chains (root_common_name) chooses among alternates.
std::string top_issuer_cn(const std::string& chain_pem) {
  auto chain = read_chain(chain_pem);
  if (chain.empty()) return {};
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_issuer_name(chain.back().get()), NID_commonName, buf,
                            sizeof buf);
  return buf;
}

// RFC 8555 §7.4: a PKCS#10 CSR with every name in the SAN (and the first as the CN, which CAs
// ignore but some tooling still displays), signed by the certificate key.
Result<std::string> make_csr_der(const std::vector<std::string>& names,
                                 const std::string& key_pem) {
  BIO* bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr) : nullptr;
  BIO_free(bio);
  if (key == nullptr)
    return Error{{}, openssl_error("the certificate key is not a PEM private key")};
  X509_REQ* req = X509_REQ_new();
  std::string der;
  std::string error;
  do {
    if (req == nullptr || X509_REQ_set_version(req, 0) != 1) {
      error = openssl_error("X509_REQ_new");
      break;
    }
    X509_NAME* subject = X509_REQ_get_subject_name(req);
    // A CN longer than 64 bytes is invalid (RFC 5280 ub-common-name); leave it out then.
    if (!names.empty() && names.front().size() <= 64 &&
        X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(names.front().c_str()),
                                   -1, -1, 0) != 1) {
      error = openssl_error("CSR subject");
      break;
    }
    GENERAL_NAMES* sans = sk_GENERAL_NAME_new_null();
    for (const std::string& name : names) {
      GENERAL_NAME* gn = GENERAL_NAME_new();
      ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
      ASN1_STRING_set(ia5, name.data(), static_cast<int>(name.size()));
      GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
      sk_GENERAL_NAME_push(sans, gn);
    }
    STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION* ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, sans);
    GENERAL_NAMES_free(sans);
    if (ext == nullptr) {
      sk_X509_EXTENSION_free(exts);
      error = openssl_error("CSR subjectAltName");
      break;
    }
    sk_X509_EXTENSION_push(exts, ext);
    const int added = X509_REQ_add_extensions(req, exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    if (added != 1) {
      error = openssl_error("CSR extensions");
      break;
    }
    if (X509_REQ_set_pubkey(req, key) != 1) {
      error = openssl_error("CSR public key");
      break;
    }
    // Ed25519 keys take no digest; EC and RSA keys sign SHA-256.
    const EVP_MD* md = EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
    if (X509_REQ_sign(req, key, md) <= 0) {
      error = openssl_error("CSR signature");
      break;
    }
    const int len = i2d_X509_REQ(req, nullptr);
    if (len <= 0) {
      error = openssl_error("CSR encoding");
      break;
    }
    der.resize(static_cast<std::size_t>(len));
    auto* p = reinterpret_cast<unsigned char*>(der.data());
    i2d_X509_REQ(req, &p);
  } while (false);
  X509_REQ_free(req);
  EVP_PKEY_free(key);
  if (!error.empty()) return Error{{}, error};
  return der;
}

}  // namespace

std::string Failure::str() const {
  std::string out = step + ": ";
  out += http_status == 0 ? "no answer" : std::to_string(http_status);
  if (!problem_type.empty()) out += " " + problem_type;
  if (!detail.empty()) out += ": " + detail;
  if (retry_after) out += " (retry after " + std::to_string(retry_after->count()) + " s)";
  if (!url.empty()) out += " (" + method_of(step) + " " + url + ")";
  return out;
}

HttpsOptions https_options(const ClientOptions& o) {
  HttpsOptions h;
  h.ca_root_file = o.ca_root_file;
  h.timeout = o.timeout;
  h.user_agent = o.user_agent;
  h.cancelled = o.cancelled;
  return h;
}

struct Client::Impl {
  explicit Impl(const ClientOptions& o) : https(https_options(o)) {}

  HttpsClient https;
  std::optional<json> directory;
  // The newest Replay-Nonce seen (RFC 8555 §6.5); empty: fetch one from newNonce.
  std::string nonce;

  Outcome<json> get_directory(const ClientOptions& options);
  Outcome<std::string> fresh_nonce(const ClientOptions& options);
  Outcome<HttpsResponse> post(const ClientOptions& options, const std::string& step,
                              const std::string& url, const AccountKey& key, const std::string& kid,
                              const std::string& payload, const Headers& extra = {});
  Outcome<json> post_json(const ClientOptions& options, const std::string& step,
                          const std::string& url, const AccountKey& key, const std::string& kid,
                          const std::string& payload);

  void keep_nonce(const HttpsResponse& r) {
    if (auto n = r.header("Replay-Nonce"); n && !n->empty()) nonce = *n;
  }
};

Outcome<json> Client::Impl::get_directory(const ClientOptions& options) {
  if (directory) return *directory;
  auto r = https.send({"GET", options.directory_url, {}, {}});
  if (!r) return local_failure("directory", options.directory_url, r.errors().front().message);
  if (r->status != 200) return answer_failure("directory", options.directory_url, *r);
  json doc = json::parse(r->body, nullptr, false);
  // RFC 8555 §7.1.1: newNonce, newAccount and newOrder are what every flow needs.
  if (!doc.is_object() || string_member(doc, "newNonce").empty() ||
      string_member(doc, "newAccount").empty() || string_member(doc, "newOrder").empty()) {
    Failure f = local_failure("directory", options.directory_url,
                              "not an ACME directory (newNonce, newAccount or newOrder missing)");
    f.http_status = r->status;
    return f;
  }
  directory = doc;
  return doc;
}

Outcome<std::string> Client::Impl::fresh_nonce(const ClientOptions& options) {
  auto dir = get_directory(options);
  if (!dir) return dir.failure();
  const std::string url = string_member(*dir, "newNonce");
  // RFC 8555 §7.2: HEAD answers 200, GET 204; both carry Replay-Nonce.
  auto r = https.send({"HEAD", url, {}, {}});
  if (!r) return local_failure("nonce", url, r.errors().front().message);
  if (r->status != 200 && r->status != 204) return answer_failure("nonce", url, *r);
  auto n = r->header("Replay-Nonce");
  if (!n || n->empty()) {
    Failure f = local_failure("nonce", url, "the answer has no Replay-Nonce");
    f.http_status = r->status;
    return f;
  }
  return *n;
}

Outcome<HttpsResponse> Client::Impl::post(const ClientOptions& options, const std::string& step,
                                          const std::string& url, const AccountKey& key,
                                          const std::string& kid, const std::string& payload,
                                          const Headers& extra) {
  for (int attempt = 0;; ++attempt) {
    if (nonce.empty()) {
      auto n = fresh_nonce(options);
      if (!n) return n.failure();
      nonce = *n;
    }
    // A nonce is good for one request whatever the outcome (§6.5); forget it before sending.
    const std::string used = std::exchange(nonce, std::string());
    auto body = key.sign(payload, used, url, kid);
    if (!body) return local_failure(step, url, body.errors().front().message);
    Headers headers = {{"Content-Type", "application/jose+json"}};
    headers.insert(headers.end(), extra.begin(), extra.end());
    auto r = https.send({"POST", url, std::move(headers), std::move(*body)});
    if (!r) return local_failure(step, url, r.errors().front().message);
    keep_nonce(*r);
    if (r->status >= 200 && r->status <= 299) return std::move(*r);
    Failure f = answer_failure(step, url, *r);
    // RFC 8555 §6.5: badNonce answers carry a fresh nonce to retry with; the CA may reject
    // good nonces too (Pebble does so on purpose), so this is routine, not an error.
    if (f.http_status == 400 && f.problem_type == std::string(kProblemPrefix) + "badNonce" &&
        attempt < options.bad_nonce_retries) {
      log::debug("acme_bad_nonce_retry").kv("step", step).kv("url", url).kv("attempt", attempt + 1);
      continue;
    }
    return f;
  }
}

Outcome<json> Client::Impl::post_json(const ClientOptions& options, const std::string& step,
                                      const std::string& url, const AccountKey& key,
                                      const std::string& kid, const std::string& payload) {
  auto r = post(options, step, url, key, kid, payload);
  if (!r) return r.failure();
  json doc = json::parse(r->body, nullptr, false);
  if (!doc.is_object()) {
    Failure f = local_failure(step, url, "the answer is not a JSON object");
    f.http_status = r->status;
    f.problem = r->body.substr(0, 200);
    return f;
  }
  return doc;
}

Client::Client(ClientOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(options_)) {}
Client::~Client() = default;

Outcome<std::string> Client::account(const AccountKey& key, const std::string& email) {
  auto dir = impl_->get_directory(options_);
  if (!dir) return dir.failure();
  const std::string url = string_member(*dir, "newAccount");
  // RFC 8555 §7.3.1: onlyReturnExisting finds the account this key already has without
  // creating one; the answer's Location is the kid.
  auto found = impl_->post(options_, "account", url, key, "", R"({"onlyReturnExisting":true})");
  if (found) {
    if (auto loc = found->header("Location"); loc && !loc->empty()) return *loc;
    Failure f = local_failure("account", url, "the answer has no Location (account URL)");
    f.http_status = found->status;
    return f;
  }
  if (found.failure().problem_type != std::string(kProblemPrefix) + "accountDoesNotExist") {
    return found.failure();
  }
  // §7.3: a new account; the terms are agreed to as Caddy's `agreed` does, since the operator
  // chose this CA.
  json payload = {{"termsOfServiceAgreed", true}};
  if (!email.empty()) payload["contact"] = json::array({"mailto:" + email});
  auto made = impl_->post(options_, "account", url, key, "", payload.dump());
  if (!made) return made.failure();
  auto loc = made->header("Location");
  if (!loc || loc->empty()) {
    Failure f = local_failure("account", url, "the answer has no Location (account URL)");
    f.http_status = made->status;
    return f;
  }
  log::info("acme_account_created").kv("ca", options_.directory_url).kv("account", *loc);
  return *loc;
}

namespace {

// Polls `url` (POST-as-GET, RFC 8555 §6.3) until `done(doc)` holds, honouring Retry-After
// (§7.4 / §8.2) and otherwise waiting kDefaultPoll, for at most poll_limit.
template <typename Impl, typename Done>
Outcome<json> poll(Impl& impl, const ClientOptions& options, const std::string& step,
                   const std::string& url, const AccountKey& key, const std::string& kid,
                   Done done) {
  const auto deadline = SteadyClock::now() + options.poll_limit;
  while (true) {
    auto r = impl.post(options, step, url, key, kid, "");
    if (!r) return r.failure();
    json doc = json::parse(r->body, nullptr, false);
    if (!doc.is_object()) {
      Failure f = local_failure(step, url, "the answer is not a JSON object");
      f.http_status = r->status;
      return f;
    }
    if (done(doc)) return doc;
    std::chrono::seconds wait = kDefaultPoll;
    if (auto ra = r->header("Retry-After")) {
      // At least the default: "Retry-After: 0" must not turn polling into a flood.
      if (auto parsed = parse_retry_after(*ra)) wait = std::max(*parsed, kDefaultPoll);
    }
    const auto now = SteadyClock::now();
    if (now + wait > deadline) {
      Failure f =
          local_failure(step, url,
                        "still \"" + string_member(doc, "status") + "\" after polling for " +
                            std::to_string(options.poll_limit.count()) + " s");
      f.http_status = r->status;
      f.problem = doc.dump();
      return f;
    }
    // In slices, so that a stopping process is not held up by a CA's long Retry-After.
    for (auto until = SteadyClock::now() + wait; SteadyClock::now() < until;) {
      if (options.cancelled && options.cancelled->load()) {
        return local_failure(step, url, "cancelled: the gateway is stopping");
      }
      std::this_thread::sleep_for(std::min<SteadyClock::duration>(until - SteadyClock::now(),
                                                                  std::chrono::milliseconds(100)));
    }
  }
}

}  // namespace

Outcome<Issued> Client::obtain(const AccountKey& key, const std::string& kid,
                               const OrderRequest& req, Solver& solver) {
  auto dir = impl_->get_directory(options_);
  if (!dir) return dir.failure();
  if (req.names.empty()) return local_failure("order", "", "no names to order");

  // RFC 8555 §7.4: newOrder with one dns identifier per name.
  json identifiers = json::array();
  for (const std::string& name : req.names) {
    identifiers.push_back({{"type", "dns"}, {"value", name}});
  }
  json order_payload = {{"identifiers", identifiers}};
  // RFC 9773 §5: tell the CA which certificate this order renews (only when it speaks ARI,
  // since a CA without it may reject an unknown member).
  if (!req.replaces.empty() && dir->contains("renewalInfo"))
    order_payload["replaces"] = req.replaces;
  const std::string new_order = string_member(*dir, "newOrder");
  auto created = impl_->post(options_, "order", new_order, key, kid, order_payload.dump());
  if (!created) return created.failure();
  const auto order_loc = created->header("Location");
  json order = json::parse(created->body, nullptr, false);
  if (!order_loc || order_loc->empty() || !order.is_object()) {
    Failure f = local_failure("order", new_order, "the answer has no Location or no order object");
    f.http_status = created->status;
    return f;
  }
  const std::string order_url = *order_loc;

  // §7.5: each authorization; ones already valid (reused, §7.1.4) need nothing.
  const json authz_urls = order.value("authorizations", json::array());
  for (const auto& authz_url_j : authz_urls) {
    if (!authz_url_j.is_string()) continue;
    const std::string authz_url = authz_url_j;
    auto authz = impl_->post_json(options_, "authorization", authz_url, key, kid, "");
    if (!authz) return authz.failure();
    const std::string status = string_member(*authz, "status");
    if (status == "valid") continue;
    const std::string name = string_member(authz->value("identifier", json::object()), "value");
    if (status != "pending") {
      Failure f = local_failure("authorization", authz_url,
                                "authorization for " + name + " is \"" + status + "\"");
      f.problem = authz->dump();
      return f;
    }
    // §7.5.1 / §8: one challenge, the first type in the caller's preference the CA offers.
    const json challenges = authz->value("challenges", json::array());
    const json* chosen = nullptr;
    for (const std::string& type : req.challenge_types) {
      for (const auto& c : challenges) {
        if (string_member(c, "type") == type) {
          chosen = &c;
          break;
        }
      }
      if (chosen != nullptr) break;
    }
    if (chosen == nullptr) {
      std::string offered;
      for (const auto& c : challenges)
        offered += (offered.empty() ? "" : ", ") + string_member(c, "type");
      Failure f = local_failure("authorization", authz_url,
                                "no usable challenge for " + name + " (offered: " + offered + ")");
      f.problem = authz->dump();
      return f;
    }
    Challenge ch;
    ch.type = string_member(*chosen, "type");
    ch.name = name;
    ch.token = string_member(*chosen, "token");
    ch.key_authorization = key.key_authorization(ch.token);
    ch.url = string_member(*chosen, "url");
    if (ch.token.empty() || ch.url.empty()) {
      return local_failure("challenge", authz_url, ch.type + " challenge without token or url");
    }
    auto presented = solver.present(ch);
    if (!presented) {
      solver.cleanup(ch);
      return local_failure(
          "challenge", ch.url,
          "presenting " + ch.type + " for " + name + ": " + presented.errors().front().message);
    }
    // §7.5.1: the client says it is ready by POSTing an empty object to the challenge.
    auto responded = impl_->post_json(options_, "challenge", ch.url, key, kid, "{}");
    if (!responded) {
      solver.cleanup(ch);
      return responded.failure();
    }
    auto settled = poll(*impl_, options_, "authorization", authz_url, key, kid, [](const json& a) {
      const std::string s = string_member(a, "status");
      return s != "pending";
    });
    solver.cleanup(ch);
    if (!settled) return settled.failure();
    const std::string final_status = string_member(*settled, "status");
    if (final_status != "valid") {
      // §7.1.6: the challenge that failed carries the CA's reason in `error`.
      json error;
      for (const auto& c : settled->value("challenges", json::array())) {
        if (string_member(c, "url") == ch.url && c.contains("error")) error = c["error"];
      }
      Failure f = document_failure(
          "challenge", ch.url, error,
          ch.type + " for " + name + " failed: authorization is \"" + final_status + "\"");
      log::warn("acme_challenge_failed")
          .kv("name", name)
          .kv("type", ch.type)
          .kv("problem_type", f.problem_type)
          .kv("detail", f.detail);
      return f;
    }
  }

  // §7.4: the order turns ready once every authorization is valid.
  auto ready = poll(*impl_, options_, "order", order_url, key, kid, [](const json& o) {
    const std::string s = string_member(o, "status");
    return s != "pending";
  });
  if (!ready) return ready.failure();
  std::string status = string_member(*ready, "status");
  if (status == "invalid") {
    return document_failure("order", order_url, ready->value("error", json()), "order is invalid");
  }

  if (status == "ready") {
    auto csr = make_csr_der(req.names, req.cert_key_pem);
    if (!csr) return local_failure("csr", "", csr.errors().front().message);
    const std::string finalize_url = string_member(*ready, "finalize");
    json fin = {{"csr", base64url(*csr)}};
    auto finalized = impl_->post_json(options_, "finalize", finalize_url, key, kid, fin.dump());
    if (!finalized) return finalized.failure();
  }

  // §7.4: processing until the certificate is issued.
  auto issued = poll(*impl_, options_, "finalize", order_url, key, kid, [](const json& o) {
    const std::string s = string_member(o, "status");
    return s != "processing" && s != "ready";
  });
  if (!issued) return issued.failure();
  status = string_member(*issued, "status");
  const std::string cert_url = string_member(*issued, "certificate");
  if (status != "valid" || cert_url.empty()) {
    return document_failure("finalize", order_url, issued->value("error", json()),
                            "order is \"" + status + "\" after finalization");
  }

  // §7.4.2: the chain, leaf first.
  const Headers accept = {{"Accept", "application/pem-certificate-chain"}};
  auto cert = impl_->post(options_, "certificate", cert_url, key, kid, "", accept);
  if (!cert) return cert.failure();
  Issued out{cert->body, cert_url};
  if (read_chain(out.chain_pem).empty()) {
    Failure f = local_failure("certificate", cert_url, "the answer holds no PEM certificate");
    f.http_status = cert->status;
    return f;
  }
  if (!req.preferred_chain.empty() && top_issuer_cn(out.chain_pem) != req.preferred_chain) {
    for (const std::string& alt : alternate_links(*cert)) {
      auto other = impl_->post(options_, "certificate", alt, key, kid, "", accept);
      // A broken alternate leaves the default chain, which is valid too.
      if (!other) continue;
      if (top_issuer_cn(other->body) == req.preferred_chain && !read_chain(other->body).empty()) {
        out = Issued{other->body, alt};
        break;
      }
    }
  }
  // The manager logs the outcome (acme_certificate_obtained) once it has stored it.
  log::debug("acme_certificate_downloaded")
      .kv("ca", options_.directory_url)
      .kv("names", req.names)
      .kv("certificate", out.url);
  return out;
}

Outcome<bool> Client::has_renewal_info() {
  auto dir = impl_->get_directory(options_);
  if (!dir) return dir.failure();
  return !string_member(*dir, "renewalInfo").empty();
}

Outcome<RenewalInfo> Client::renewal_info(const std::string& cert_pem) {
  auto dir = impl_->get_directory(options_);
  if (!dir) return dir.failure();
  std::string base = string_member(*dir, "renewalInfo");
  if (base.empty()) {
    return local_failure("renewal_info", options_.directory_url,
                         "the CA's directory has no renewalInfo (RFC 9773)");
  }
  auto id = ari_cert_id(cert_pem);
  if (!id) return local_failure("renewal_info", base, id.errors().front().message);
  if (base.back() != '/') base += '/';
  const std::string url = base + *id;
  // RFC 9773 §4.2: a plain GET, no JWS.
  auto r = impl_->https.send({"GET", url, {}, {}});
  if (!r) return local_failure("renewal_info", url, r.errors().front().message);
  if (r->status != 200) return answer_failure("renewal_info", url, *r);
  json doc = json::parse(r->body, nullptr, false);
  const json window = doc.is_object() ? doc.value("suggestedWindow", json()) : json();
  auto start = parse_rfc3339(string_member(window, "start"));
  auto end = parse_rfc3339(string_member(window, "end"));
  // §4.2: a window whose end is not after its start is invalid.
  if (!start || !end || *end <= *start) {
    Failure f = local_failure("renewal_info", url, "no valid suggestedWindow in the answer");
    f.http_status = r->status;
    f.problem = r->body.substr(0, 500);
    return f;
  }
  RenewalInfo info;
  info.window_start = *start;
  info.window_end = *end;
  info.explanation_url = string_member(doc, "explanationURL");
  if (auto ra = r->header("Retry-After")) info.retry_after = parse_retry_after(*ra);
  return info;
}

Result<std::string> ari_cert_id(const std::string& cert_pem) {
  auto chain = read_chain(cert_pem);
  if (chain.empty()) return Error{{}, "ARI certificate id: no PEM certificate"};
  X509* leaf = chain.front().get();
  // RFC 9773 §4.1: the keyIdentifier of the Authority Key Identifier extension ...
  const ASN1_OCTET_STRING* aki = X509_get0_authority_key_id(leaf);
  if (aki == nullptr) {
    return Error{{}, "ARI certificate id: the certificate has no authority key identifier"};
  }
  const std::string aki_bytes(reinterpret_cast<const char*>(ASN1_STRING_get0_data(aki)),
                              static_cast<std::size_t>(ASN1_STRING_length(aki)));
  // ... and the DER encoding of the serial number without its tag and length, so that a serial
  // with the high bit set keeps its leading zero byte.
  const ASN1_INTEGER* serial = X509_get0_serialNumber(leaf);
  unsigned char* der = nullptr;
  const int len = i2d_ASN1_INTEGER(serial, &der);
  if (len < 3 || der == nullptr) {
    OPENSSL_free(der);
    return Error{{}, "ARI certificate id: cannot encode the serial number"};
  }
  std::size_t header = 2;
  if (der[1] & 0x80) header += der[1] & 0x7f;  // long-form length
  std::string serial_bytes;
  if (header < static_cast<std::size_t>(len)) {
    serial_bytes.assign(reinterpret_cast<const char*>(der) + header, len - header);
  }
  OPENSSL_free(der);
  return base64url(aki_bytes) + "." + base64url(serial_bytes);
}

}  // namespace hsp::acme

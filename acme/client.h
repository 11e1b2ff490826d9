// An RFC 8555 ACME client: directory, nonces, accounts, orders, authorizations, challenges,
// finalization, certificate download, and ACME Renewal Information (RFC 9773). Blocking: the
// ACME manager (manager.h) runs it on its own thread, never on the data plane. Every call that
// talks to the CA returns an Outcome: the value, or a Failure saying which step failed, what
// the CA answered (its problem document, RFC 8555 §6.7) and when it allows a retry.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "acme/jws.h"
#include "util/error.h"

namespace hsp::acme {

// Why a step failed. `http_status` 0: no HTTP answer (DNS, connect, TLS, timeout).
struct Failure {
  std::string step;  // "directory", "nonce", "account", "order", "authorization",
                     // "challenge", "finalize", "certificate", "renewal_info", "csr"
  std::string url;   // the request that failed, when there was one
  int http_status = 0;
  std::string problem_type;  // e.g. "urn:ietf:params:acme:error:rateLimited"; empty if none
  std::string detail;        // the problem's detail, or the transport error
  std::string problem;       // the CA's problem document as received (JSON), for logs
  std::optional<std::chrono::seconds> retry_after;  // from Retry-After, when present

  bool rate_limited() const {
    return http_status == 429 || problem_type == "urn:ietf:params:acme:error:rateLimited";
  }
  // "finalize: 403 urn:ietf:params:acme:error:unauthorized: <detail> (POST <url>)"
  std::string str() const;
};

template <typename T>
class Outcome {
 public:
  Outcome(T value) : v_(std::move(value)) {}
  Outcome(Failure f) : v_(std::move(f)) {}
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }
  const Failure& failure() const { return std::get<1>(v_); }

 private:
  std::variant<T, Failure> v_;
};

struct ClientOptions {
  std::string directory_url;  // e.g. https://acme-v02.api.letsencrypt.org/directory
  // PEM file of extra roots trusted for the CA's HTTPS (Caddy's `acme_ca_root`), in addition to
  // the system's; empty: the system's only.
  std::string ca_root_file;
  std::chrono::seconds timeout{30};  // per HTTP request
  // Upper bound on polling an authorization or an order (RFC 8555 §7.5.1, §7.4).
  std::chrono::seconds poll_limit{std::chrono::minutes(3)};
  int bad_nonce_retries = 10;  // RFC 8555 §6.5: retry with the fresh nonce the error carries
  std::string user_agent = "hsp-gateway";
  // Set by another thread when the process stops: requests and polling end within ~100 ms
  // with a Failure whose detail says so. Null: never.
  std::shared_ptr<const std::atomic<bool>> cancelled;
};

// One challenge the client needs answered before it tells the CA to validate.
struct Challenge {
  std::string type;  // "http-01" or "tls-alpn-01"
  std::string name;  // the identifier (DNS name)
  std::string token;
  std::string key_authorization;  // "<token>.<thumbprint>"
  std::string url;
};

// Serves challenges while the CA validates: present() before the client POSTs to the challenge,
// cleanup() once the authorization has left `pending` (valid or not).
class Solver {
 public:
  virtual ~Solver() = default;
  virtual Result<bool> present(const Challenge& c) = 0;
  virtual void cleanup(const Challenge& c) = 0;
};

struct OrderRequest {
  std::vector<std::string> names;  // DNS identifiers; the first is the CSR's subject CN
  std::string cert_key_pem;        // the certificate's private key (the CSR is signed with it)
  std::vector<std::string> challenge_types = {"http-01", "tls-alpn-01"};  // by preference
  std::string replaces;         // RFC 9773 §5: the ARI certificate id being renewed
  std::string preferred_chain;  // issuer CN of the root to prefer among alternates
};

struct Issued {
  std::string chain_pem;  // leaf first (RFC 8555 §7.4.2, application/pem-certificate-chain)
  std::string url;        // where it was downloaded
};

// RFC 9773 §4.2.
struct RenewalInfo {
  std::chrono::system_clock::time_point window_start;
  std::chrono::system_clock::time_point window_end;
  std::string explanation_url;
  std::optional<std::chrono::seconds> retry_after;
};

// Not thread-safe: it keeps the directory and the newest nonce between calls, so one thread at a
// time (the manager's) uses a Client.
class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const { return options_; }

  // RFC 8555 §7.3: the account URL (kid) for `key`: an existing account
  // (onlyReturnExisting), else a new one with `email` as contact (may be empty) and the terms
  // agreed to.
  Outcome<std::string> account(const AccountKey& key, const std::string& email);

  // RFC 8555 §7.4: new order, authorizations (already-valid ones are skipped, §7.1.4), one
  // challenge each by `req.challenge_types`, finalize with a CSR, poll (honouring Retry-After),
  // download the chain; with `preferred_chain`, the alternates in `Link: rel="alternate"` are
  // tried for one whose topmost issuer matches.
  Outcome<Issued> obtain(const AccountKey& key, const std::string& kid, const OrderRequest& req,
                         Solver& solver);

  // Whether the directory offers renewalInfo (RFC 9773 §3).
  Outcome<bool> has_renewal_info();
  // RFC 9773 §4: the suggested window for the leaf of `cert_pem`.
  Outcome<RenewalInfo> renewal_info(const std::string& cert_pem);

 private:
  struct Impl;
  ClientOptions options_;
  std::unique_ptr<Impl> impl_;
};

// RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial DER without tag/length).
Result<std::string> ari_cert_id(const std::string& cert_pem);

}  // namespace hsp::acme

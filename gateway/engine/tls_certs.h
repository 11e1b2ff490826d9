// Certificates for TLS servers, built with each routing snapshot (Snapshot::build): certificate
// files are loaded and checked there (a bad file rejects the snapshot; the old one keeps
// serving), and names without a file get a leaf from the local CA. The data plane only reads
// the result (Snapshot::server_tls) during handshakes.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "engine/engine.h"
#include "tls/local_ca.h"
#include "util/error.h"

namespace hsp::engine {

// Where the gateway keeps its state (the local CA), as Caddy's default but named for us:
// $XDG_DATA_HOME/hsp-gateway, else $HOME/.local/share/hsp-gateway, else ./hsp-gateway-data.
// `explicit_dir` (the --data-dir flag) wins, then $HSP_DATA_DIR.
std::string data_dir(const std::string& explicit_dir);

// A name whose certificate comes from an ACME CA, as one snapshot wants it.
struct AcmeName {
  std::string name;
  std::string ca;       // directory URL
  std::string ca_root;  // PEM file of extra roots for the CA's HTTPS; may be empty
  std::string email;
  std::vector<std::string> challenges;  // "http-01", "tls-alpn-01", by preference
  bool operator==(const AcmeName&) const = default;
};

// Where ACME-managed certificates come from (acme::Manager). Snapshot builds call want() with
// every ACME name of the new configuration, then current() for each: what is in hand now, or
// null until the first certificate arrives (handshakes for the name fail meanwhile, as in
// Caddy). The manager obtains and renews in the background and asks for a rebuild when a
// certificate changes. Thread-safe; want() returns without waiting for any CA.
class ManagedCerts {
 public:
  virtual ~ManagedCerts() = default;
  virtual void want(const std::vector<AcmeName>& names) = 0;
  virtual std::shared_ptr<const tls::CertifiedKey> current(const std::string& name) = 0;
};

// The process's certificate authority for snapshots: the local CA, opened (and on first use
// created) only when a snapshot needs it, so configurations without local names never write
// to the data directory. Outlives every snapshot built with it. Thread-safe.
class CertAuthority {
 public:
  explicit CertAuthority(std::string dir, tls::LocalCa::Options options = {});
  ~CertAuthority();
  CertAuthority(const CertAuthority&) = delete;
  CertAuthority& operator=(const CertAuthority&) = delete;

  const std::string& dir() const { return dir_; }
  // Opens the local CA on first use; LocalCa::open logs its root's path then (once per
  // process: it is never installed anywhere, users decide whether to trust it).
  Result<tls::LocalCa*> local_ca();
  // ACME names go to `managed` (null: such names get no certificate, e.g. in `validate`).
  void set_managed(ManagedCerts* managed) { managed_ = managed; }
  ManagedCerts* managed() const { return managed_; }

  // Local-CA leaves last only 12 hours and are renewed only when a snapshot build asks for them
  // again: the earliest renewal point (2/3 of a leaf's life) of the last successful build, so
  // that the process can rebuild the current snapshot then. Empty when it issued none.
  std::optional<std::chrono::system_clock::time_point> renew_at() const;
  void set_renew_at(std::optional<std::chrono::system_clock::time_point> t);
  // The clock the local CA uses (injected in tests).
  std::chrono::system_clock::time_point now() const;

 private:
  std::string dir_;
  tls::LocalCa::Options options_;
  mutable std::mutex mu_;
  std::unique_ptr<tls::LocalCa> ca_;
  ManagedCerts* managed_ = nullptr;
  std::optional<std::chrono::system_clock::time_point> renew_at_;
};

// One entry per cfg.servers[i]: the selector and protocol range of each TLS server, and an
// empty ServerTls for cleartext ones. Without `certs`, names that need the local CA get no
// certificate (validate and adapt check files only; nothing is created on disk).
Result<std::vector<ServerTls>> build_server_tls(const config::Config& cfg, CertAuthority* certs);

}  // namespace hsp::engine

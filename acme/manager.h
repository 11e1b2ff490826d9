// Keeps the certificate of every ACME-managed name current, as Caddy's certmagic does: what the
// shared storage holds is served at once; missing certificates are obtained and due ones
// renewed on one background thread, never on the data plane. A certificate being renewed keeps
// serving until its successor is stored; failures back off (one minute, doubling, up to one
// day; a CA's Retry-After when it asks for longer) and are logged with the name, the CA, the
// step and the CA's problem document, and recorded in the name's metadata for
// `hsp-gateway certs`.
//
// Replicas sharing the data directory order each name once: the one holding the name's storage
// lock orders; the others wait for the lock to go and load the result from storage.
//
// Known cost: want() re-reads each wanted name's files under the manager's lock on the thread
// that builds the snapshot (start, SIGHUP, each Docker generation): three small reads per
// name, so a reload with thousands of ACME names spends milliseconds there, and a hung volume
// would hold the reload up.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "acme/client.h"
#include "acme/storage.h"
#include "engine/tls_certs.h"
#include "tls/certified_key.h"

namespace hsp::acme {

// The delay before attempt `failures + 1` after `failures` consecutive failures (>= 1): one
// minute doubling up to one day, or the CA's Retry-After when that is longer.
std::chrono::seconds backoff_delay(int failures, std::optional<std::chrono::seconds> retry_after);
// When a certificate valid from `not_before` to `not_after` is renewed without ARI: once a
// third of its lifetime is left (Caddy's default renewal ratio).
SystemTime renewal_time(SystemTime not_before, SystemTime not_after);

class Manager : public engine::ManagedCerts {
 public:
  struct Options {
    std::string data_dir;
    // This process, in lock files: host name, pid and a random part when empty.
    std::string holder;
    // Called on the manager's thread, without its lock held, whenever the certificate of a
    // wanted name changes (obtained, renewed, or picked up from storage): the owner rebuilds
    // the routing snapshot so that new handshakes get it.
    std::function<void()> on_change;
    // How often storage is re-read and due names are looked for (certmagic's 10 minutes).
    std::chrono::seconds check_interval{std::chrono::minutes(10)};
    // A lock not refreshed for this long is taken over (its holder died mid-order). Known
    // shortcoming: the holder does not refresh it during an order, so an order slower than this
    // (both polls near their 3-minute limit) lets another replica order too; the CA then
    // issues twice and both certificates are valid: a rate-limit cost, nothing breaks.
    std::chrono::seconds lock_ttl{std::chrono::minutes(5)};
    // How often a replica waiting for another's lock looks again.
    std::chrono::milliseconds lock_poll{std::chrono::seconds(2)};
    // False on a server configured by a controller (cluster/): the certificates the controller
    // pushed into storage are served and re-read, nothing is ever ordered from a CA.
    bool issue = true;
    // Called on the manager's thread once a challenge answer is in storage and before the CA is
    // told to validate: a controller pushes the answer to its servers here, since the CA may
    // reach any of them. An error fails the attempt (and backs off).
    std::function<Result<bool>()> distribute_challenge;
  };

  explicit Manager(Options options);
  ~Manager() override;  // stops the thread; an order under way is abandoned (~100 ms)
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  void want(const std::vector<engine::AcmeName>& names) override;
  std::shared_ptr<const tls::CertifiedKey> current(const std::string& name) override;

  // Wakes the thread to re-read storage and act on due names now (SIGHUP, `certs renew`).
  void check_now();
  void stop();

 private:
  struct Entry {
    engine::AcmeName want;
    std::string issuer;  // issuer_key(want.ca)
    std::shared_ptr<const tls::CertifiedKey> cert;
    std::string cert_pem;  // as stored: what tells a new stored certificate from ours
    CertMeta meta;
    bool waiting_logged = false;  // acme_waiting_for_lock said once per wait
  };

  void run();
  // Re-reads the name's storage; true when it holds a different certificate than `e` serves
  // (adopted into `e`). Called with mu_ held.
  bool refresh_from_storage(Entry& e);
  bool due(const Entry& e, SystemTime now) const;
  SystemTime next_wake(SystemTime now) const;
  // One attempt for `name`; returns whether the served certificate changed.
  bool attempt(const std::string& name);
  // Logs acme_failed, backs off, records the error in storage; returns the new metadata.
  CertMeta record_failure(const Entry& snap, Failure failure, SystemTime now);
  Outcome<std::string> account(Client& client, const engine::AcmeName& want,
                               const std::string& issuer, std::optional<AccountKey>& key);
  Client& client_for(const engine::AcmeName& want);

  Options options_;
  Storage storage_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Entry> entries_;  // by name
  bool stop_ = false;
  bool wake_ = false;
  // Given to every Client: stop() sets it so that an order under way ends within ~100 ms.
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
  std::map<std::string, std::unique_ptr<Client>> clients_;  // by CA + roots; thread only
  std::thread thread_;
};

}  // namespace hsp::acme

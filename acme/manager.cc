#include "acme/manager.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>

#include "tls/acme_challenges.h"
#include "util/log.h"

namespace hsp::acme {
namespace {

using std::chrono::seconds;

int64_t unix_seconds(SystemTime t) {
  return static_cast<int64_t>(std::chrono::system_clock::to_time_t(t));
}

std::string default_holder() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  // getrandom, not RAND_bytes: a configuration without TLS never initialises OpenSSL (its
  // start-up alone is ~2.5 MB of resident memory).
  unsigned char r[4] = {0, 0, 0, 0};
  if (getrandom(r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) {
    // No entropy yet (early boot): the pid and host name still tell holders apart.
  }
  char tail[16];
  std::snprintf(tail, sizeof tail, "%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
  return std::string(host) + "-" + std::to_string(getpid()) + "-" + tail;
}

// A fresh P-256 key for a certificate, as PKCS#8 PEM (Caddy's default key type).
Result<std::string> new_cert_key_pem() {
  tls::EvpPkeyPtr key(EVP_EC_gen("P-256"));
  std::string pem = key ? tls::private_key_pem(key.get()) : std::string();
  if (pem.empty()) return Error{{}, "cannot make a P-256 certificate key: " + tls::openssl_error()};
  return pem;
}

// Answers the CA's validation from this process (tls::AcmeChallenges, which the listeners
// read) and from storage, where the other replicas behind the same name find it.
class GatewaySolver : public Solver {
 public:
  GatewaySolver(const Storage& storage, const std::function<Result<bool>()>& distribute)
      : storage_(storage), distribute_(distribute) {}

  Result<bool> present(const Challenge& c) override {
    auto stored = store(c);
    if (!stored || !distribute_) return stored;
    return distribute_();
  }

  Result<bool> store(const Challenge& c) {
    auto& reg = tls::AcmeChallenges::instance();
    if (c.type == "http-01") {
      reg.put_http01(c.token, c.key_authorization);
      return storage_.put_http01(c.token, c.key_authorization);
    }
    if (c.type == "tls-alpn-01") {
      reg.put_tls_alpn01(c.name, c.key_authorization);
      return storage_.put_tls_alpn01(c.name, c.key_authorization);
    }
    return Error{{}, "challenge type '" + c.type + "' is not answered by hsp-gateway"};
  }

  void cleanup(const Challenge& c) override {
    auto& reg = tls::AcmeChallenges::instance();
    if (c.type == "http-01") {
      reg.remove_http01(c.token);
      storage_.remove_http01(c.token);
    } else if (c.type == "tls-alpn-01") {
      reg.remove_tls_alpn01(c.name);
      storage_.remove_tls_alpn01(c.name);
    }
  }

 private:
  const Storage& storage_;
  const std::function<Result<bool>()>& distribute_;
};

}  // namespace

seconds backoff_delay(int failures, std::optional<seconds> retry_after) {
  const seconds min = std::chrono::minutes(1), max = std::chrono::hours(24);
  seconds d = min;
  for (int i = 1; i < failures && d < max; ++i) d *= 2;
  d = std::min(d, max);
  if (retry_after && *retry_after > d) d = *retry_after;
  return d;
}

SystemTime renewal_time(SystemTime not_before, SystemTime not_after) {
  // Whole seconds: the metadata and `certs` print it.
  return std::chrono::floor<seconds>(not_after - (not_after - not_before) / 3);
}

Manager::Manager(Options options) : options_(std::move(options)), storage_(options_.data_dir) {
  if (options_.holder.empty()) options_.holder = default_holder();
}

Manager::~Manager() {
  stop();
}

void Manager::stop() {
  cancelled_->store(true);
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Manager::check_now() {
  {
    std::lock_guard lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

void Manager::want(const std::vector<engine::AcmeName>& names) {
  std::lock_guard lock(mu_);
  std::map<std::string, Entry> next;
  for (const auto& w : names) {
    auto it = entries_.find(w.name);
    if (it != entries_.end() && it->second.want.ca == w.ca) {
      Entry e = std::move(it->second);
      e.want = w;
      entries_.erase(it);
      // SIGHUP or a new Docker generation: pick up what `certs renew` or another replica
      // left in storage since.
      refresh_from_storage(e);
      next.emplace(w.name, std::move(e));
      continue;
    }
    Entry e;
    e.want = w;
    e.issuer = issuer_key(w.ca);
    refresh_from_storage(e);
    next.emplace(w.name, std::move(e));
  }
  entries_ = std::move(next);
  // Started with the first ACME name: a configuration without any costs no thread.
  if (!entries_.empty() && !thread_.joinable() && !stop_) thread_ = std::thread([this] { run(); });
  wake_ = true;
  cv_.notify_all();
}

std::shared_ptr<const tls::CertifiedKey> Manager::current(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.cert;
}

bool Manager::refresh_from_storage(Entry& e) {
  auto stored = storage_.load_cert(e.issuer, e.want.name);
  if (!stored) {
    log::warn("acme_storage_unreadable")
        .kv("name", e.want.name)
        .kv("error", stored.errors().front().str());
    return false;
  }
  if (!stored->has_value()) return false;
  StoredCert& sc = **stored;
  e.meta = sc.meta;
  if (sc.cert_pem.empty()) return false;
  if (e.cert && e.cert_pem == sc.cert_pem) return false;
  auto ck = tls::CertifiedKey::from_pem(sc.cert_pem, sc.key_pem, e.want.name + ".crt",
                                        e.want.name + ".key");
  if (!ck) {
    log::warn("acme_storage_unreadable")
        .kv("name", e.want.name)
        .kv("error", ck.errors().front().str());
    return false;
  }
  // Only a newer certificate replaces the one served (storage may hold an older one when our
  // last write failed).
  if (e.cert && ck->not_after() <= e.cert->not_after()) return false;
  e.cert = std::make_shared<const tls::CertifiedKey>(std::move(*ck));
  e.cert_pem = sc.cert_pem;
  // At start, or another replica's (or an earlier run's) order: served from the next rebuild.
  log::info("acme_certificate_loaded")
      .kv("name", e.want.name)
      .kv("ca", e.want.ca)
      .kv("serial", e.cert->serial_hex())
      .kv("not_after_unix", unix_seconds(e.cert->not_after()));
  return true;
}

bool Manager::due(const Entry& e, SystemTime now) const {
  if (e.meta.next_attempt && now < *e.meta.next_attempt) return false;
  if (!e.cert) return true;
  if (e.meta.renew_at) return now >= *e.meta.renew_at;
  return now >= renewal_time(e.cert->not_before(), e.cert->not_after());
}

SystemTime Manager::next_wake(SystemTime now) const {
  SystemTime wake = now + options_.check_interval;
  if (!options_.issue) return wake;  // nothing is ever due: only storage is re-read
  for (const auto& [name, e] : entries_) {
    SystemTime t = now;
    if (e.cert) {
      t = e.meta.renew_at ? *e.meta.renew_at
                          : renewal_time(e.cert->not_before(), e.cert->not_after());
    }
    if (e.meta.next_attempt) t = std::max(t, *e.meta.next_attempt);
    wake = std::min(wake, std::max(t, now));
  }
  return wake;
}

void Manager::run() {
  // Process signals are the main thread's (sigwait); this thread, and the resolver threads it
  // starts, never take one, whatever the mask it was started with.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  std::unique_lock lock(mu_);
  SystemTime last_refresh = std::chrono::system_clock::now();
  while (!stop_) {
    SystemTime now = std::chrono::system_clock::now();
    bool changed = false;
    if (now - last_refresh >= options_.check_interval) {
      for (auto& [name, e] : entries_) changed |= refresh_from_storage(e);
      last_refresh = now;
    }
    std::vector<std::string> todo;
    for (const auto& [name, e] : entries_)
      if (options_.issue && due(e, now)) todo.push_back(name);
    if (changed && options_.on_change) {
      lock.unlock();
      options_.on_change();
      lock.lock();
    }
    for (const auto& name : todo) {
      if (stop_) break;
      lock.unlock();
      bool c = attempt(name);
      if (c && options_.on_change) options_.on_change();
      lock.lock();
    }
    if (stop_) break;
    if (!todo.empty()) continue;  // a pass may have made others due (a lock went away)
    SystemTime wake = next_wake(std::chrono::system_clock::now());
    cv_.wait_until(lock, wake, [this] { return stop_ || wake_; });
    if (wake_) {
      wake_ = false;
      bool adopted = false;
      for (auto& [name, e] : entries_) adopted |= refresh_from_storage(e);
      // After the loop: the rebuild calls want(), which replaces entries_.
      if (adopted && options_.on_change) {
        lock.unlock();
        options_.on_change();
        lock.lock();
      }
    }
  }
}

Client& Manager::client_for(const engine::AcmeName& want) {
  std::string key = want.ca + "\n" + want.ca_root;
  auto& c = clients_[key];
  if (!c) {
    ClientOptions o;
    o.directory_url = want.ca;
    o.ca_root_file = want.ca_root;
    o.cancelled = cancelled_;
    c = std::make_unique<Client>(std::move(o));
  }
  return *c;
}

Outcome<std::string> Manager::account(Client& client, const engine::AcmeName& want,
                                      const std::string& issuer, std::optional<AccountKey>& key) {
  auto fail = [&](const std::string& detail) {
    Failure f;
    f.step = "account";
    f.detail = detail;
    return f;
  };
  auto stored = storage_.load_account(issuer, want.email);
  if (!stored) return fail(stored.errors().front().str());
  if (stored->has_value() && !(*stored)->key_pem.empty()) {
    auto k = AccountKey::from_pem((*stored)->key_pem, "account key of " + want.email);
    if (!k) return fail(k.errors().front().str());
    key.emplace(std::move(*k));
    if (!(*stored)->kid.empty()) return (*stored)->kid;
  } else {
    auto k = AccountKey::generate();
    if (!k) return fail(k.errors().front().str());
    key.emplace(std::move(*k));
  }
  // RFC 8555 §7.3.1: onlyReturnExisting first, so a key stored without its URL (or another
  // replica's fresh account) is found rather than duplicated.
  auto kid = client.account(*key, want.email);
  if (!kid) return kid;
  StoredAccount acc{want.email, *kid, key->pem()};
  if (auto saved = storage_.save_account(issuer, acc); !saved) {
    return fail("account created but not stored: " + saved.errors().front().str());
  }
  return kid;
}

CertMeta Manager::record_failure(const Entry& snap, Failure failure, SystemTime now) {
  // A CA's problem document is the CA's to size: a few KiB is all a log line and `certs` need.
  auto cap = [](std::string& text) {
    constexpr size_t kMax = 2048;
    if (text.size() > kMax) {
      text = text.substr(0, kMax) + "... (" + std::to_string(text.size()) + " bytes)";
    }
  };
  cap(failure.detail);
  cap(failure.problem);
  const std::string& name = snap.want.name;
  const bool renewal = snap.cert != nullptr;
  CertMeta meta = snap.meta;
  meta.names = {name};
  meta.issuer = snap.issuer;
  meta.ca = snap.want.ca;
  meta.failures += 1;
  seconds delay = backoff_delay(meta.failures, failure.retry_after);
  meta.last_error = failure.str();
  meta.last_error_at = std::chrono::floor<seconds>(now);  // whole seconds, as `certs` prints
  meta.next_attempt = std::chrono::floor<seconds>(now) + delay;
  if (auto saved = storage_.save_meta(snap.issuer, name, meta); !saved) {
    log::warn("acme_storage_write_failed")
        .kv("name", name)
        .kv("error", saved.errors().front().str());
  }
  auto l = log::error("acme_failed");
  l.kv("name", name)
      .kv("ca", snap.want.ca)
      .kv("step", failure.step)
      .kv("url", failure.url)
      .kv("status", failure.http_status)
      .kv("problem_type", failure.problem_type)
      .kv("detail", failure.detail)
      .kv("problem", failure.problem)
      .kv("failures", meta.failures)
      .kv("next_attempt_s", static_cast<int64_t>(delay.count()))
      .kv("renewal", renewal);
  if (failure.retry_after) {
    l.kv("retry_after_s", static_cast<int64_t>(failure.retry_after->count()));
  }
  if (renewal) {
    l.kv("serving_serial", snap.cert->serial_hex());
    l.kv("serving_expired", snap.cert->expired(now));
  }
  return meta;
}

bool Manager::attempt(const std::string& name) {
  Entry snap;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) return false;
    snap = it->second;
  }
  const engine::AcmeName& want = snap.want;
  const std::string key = lock_key(snap.issuer, name);
  const SystemTime started = std::chrono::system_clock::now();

  // One replica orders; the others wait for its lock to go, then load its result.
  auto locked = storage_.try_lock(key, options_.holder, options_.lock_ttl);
  if (!locked) {
    // Not another replica's lock: storage itself fails (read-only volume, permissions). A
    // failure like any other, backed off and shown by `certs`, not a silent wait.
    Failure f;
    f.step = "storage";
    f.detail = "cannot take the order lock " + key + ": " + locked.errors().front().str();
    CertMeta meta = record_failure(snap, f, std::chrono::system_clock::now());
    std::lock_guard lock(mu_);
    if (auto it = entries_.find(name); it != entries_.end()) it->second.meta = meta;
    return false;
  }
  if (!*locked) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) return false;
    Entry& e = it->second;
    if (!e.waiting_logged) {
      log::info("acme_waiting_for_lock").kv("name", name).kv("lock", key);
      e.waiting_logged = true;
    }
    bool adopted = refresh_from_storage(e);
    if (due(e, started)) {
      SystemTime again =
          started + std::chrono::duration_cast<SystemTime::duration>(options_.lock_poll);
      e.meta.next_attempt = std::max(e.meta.next_attempt.value_or(again), again);
    }
    return adopted;
  }

  // Under the lock: another replica may have finished while we waited.
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      storage_.unlock(key, options_.holder);
      return false;
    }
    Entry& e = it->second;
    e.waiting_logged = false;
    bool adopted = refresh_from_storage(e);
    if (!due(e, started)) {
      storage_.unlock(key, options_.holder);
      return adopted;
    }
    snap = e;
  }

  const bool renewal = snap.cert != nullptr;
  log::info("acme_obtain_started")
      .kv("name", name)
      .kv("ca", want.ca)
      .kv("renewal", renewal)
      .kv("challenges", want.challenges);

  Client& client = client_for(want);
  std::optional<AccountKey> account_key;
  Outcome<Issued> issued = Failure{};
  std::string cert_key_pem;
  auto kid = account(client, want, snap.issuer, account_key);
  if (!kid) {
    issued = kid.failure();
  } else if (auto k = new_cert_key_pem(); !k) {
    Failure f;
    f.step = "csr";
    f.detail = k.errors().front().str();
    issued = f;
  } else {
    cert_key_pem = *k;
    OrderRequest req;
    req.names = {name};
    req.cert_key_pem = cert_key_pem;
    req.challenge_types = want.challenges;
    if (renewal && !snap.meta.ari_id.empty()) req.replaces = snap.meta.ari_id;
    GatewaySolver solver(storage_, options_.distribute_challenge);
    issued = client.obtain(*account_key, *kid, req, solver);
  }

  if (!issued && cancelled_->load()) {
    // Stopping: not the CA's failure, so nothing is recorded; the next start orders again.
    storage_.unlock(key, options_.holder);
    return false;
  }
  std::shared_ptr<const tls::CertifiedKey> cert;
  Failure failure;
  if (issued) {
    auto ck = tls::CertifiedKey::from_pem(issued->chain_pem, cert_key_pem, issued->url,
                                          "the new key of " + name);
    if (ck) {
      // What the CA sent must be what was ordered, and usable now: a certificate for another
      // name, or one outside its validity window (a CA or host clock far off), would be served
      // broken and, being due at once, ordered again without pause.
      const auto& dns = ck->dns_names();
      const SystemTime at = std::chrono::system_clock::now();
      const auto skew = std::chrono::minutes(5);
      if (std::find(dns.begin(), dns.end(), tls::normalize_name(name)) == dns.end()) {
        failure.step = "certificate";
        failure.url = issued->url;
        failure.detail = "the CA issued a certificate that does not name " + name;
      } else if (ck->not_before() > at + skew || ck->expired(at)) {
        failure.step = "certificate";
        failure.url = issued->url;
        failure.detail = "the CA issued a certificate that is not valid now (not before " +
                         rfc3339(ck->not_before()) + ", not after " + rfc3339(ck->not_after()) +
                         "): is this host's clock right?";
      } else {
        cert = std::make_shared<const tls::CertifiedKey>(std::move(*ck));
      }
    } else {
      failure.step = "certificate";
      failure.url = issued->url;
      failure.detail = "the CA's chain does not load: " + ck.errors().front().str();
    }
  } else {
    failure = issued.failure();
  }

  const SystemTime now = std::chrono::system_clock::now();
  CertMeta meta = snap.meta;
  meta.names = {name};
  meta.issuer = snap.issuer;
  meta.ca = want.ca;
  bool changed = false;
  if (cert) {
    meta.not_before = cert->not_before();
    meta.not_after = cert->not_after();
    meta.obtained_at = std::chrono::floor<seconds>(now);
    meta.renew_at = renewal_time(cert->not_before(), cert->not_after());
    meta.ari_id.clear();
    // RFC 9773: the CA's suggested window, when it has one, over the fixed ratio.
    if (auto has = client.has_renewal_info(); has && *has) {
      if (auto id = ari_cert_id(issued->chain_pem)) meta.ari_id = *id;
      if (auto ri = client.renewal_info(issued->chain_pem)) meta.renew_at = ri->window_start;
    }
    // A window already open (ARI saying "now", a short-lived certificate) renews at most once
    // an hour: never an order loop against the CA's rate limits.
    const SystemTime earliest = std::chrono::floor<seconds>(now) + std::chrono::hours(1);
    meta.renew_at = std::max(*meta.renew_at, earliest);
    meta.last_error.clear();
    meta.last_error_at.reset();
    meta.next_attempt.reset();
    meta.failures = 0;
    StoredCert sc{issued->chain_pem, cert_key_pem, meta};
    if (auto saved = storage_.save_cert(snap.issuer, name, sc); !saved) {
      // Served from memory all the same; the next start (or another replica) orders again.
      log::error("acme_storage_write_failed")
          .kv("name", name)
          .kv("error", saved.errors().front().str());
    }
    log::info("acme_certificate_obtained")
        .kv("name", name)
        .kv("ca", want.ca)
        .kv("renewal", renewal)
        .kv("serial", cert->serial_hex())
        .kv("not_after_unix", unix_seconds(cert->not_after()))
        .kv("renew_at_unix", unix_seconds(*meta.renew_at))
        .kv("duration_s", std::chrono::duration<double>(now - started).count());
    changed = true;
  } else {
    meta = record_failure(snap, failure, now);
  }
  storage_.unlock(key, options_.holder);

  std::lock_guard lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return false;
  it->second.meta = meta;
  if (cert) {
    it->second.cert = cert;
    it->second.cert_pem = issued->chain_pem;
  }
  return changed;
}

}  // namespace hsp::acme

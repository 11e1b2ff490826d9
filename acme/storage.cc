#include "acme/storage.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <utility>

#include "tls/certified_key.h"
#include "util/log.h"

namespace hsp::acme {
namespace {

using json = nlohmann::json;
using std::chrono::duration_cast;
using std::chrono::nanoseconds;

constexpr std::string_view kWildcard = "wildcard_";

Error error_at(const std::string& path, std::string message) {
  return Error{SourceLoc{path, 0, 0}, std::move(message)};
}

Error storage_error(std::string message) {
  return Error{SourceLoc{}, "acme storage: " + std::move(message)};
}

std::string sys_error(const char* step, int err) {
  return std::string("cannot ") + step + ": " + std::strerror(err);
}

// A value quoted for an error message, with control bytes (a NUL among them) made visible.
std::string shown(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// One component of a path we build. Names come from configuration and container labels and
// tokens from the CA, so whatever could leave the data directory is refused rather than
// cleaned up: a cleaned-up name could silently alias another one's files. A leading '.' is
// refused too, because temporary and set-aside files start with one and loaders skip them.
Result<bool> check_component(const char* what, const std::string& value) {
  const char* why = nullptr;
  if (value.empty()) {
    why = "is empty";
  } else if (value.find('\0') != std::string::npos) {
    why = "contains a NUL byte";
  } else if (value.find('/') != std::string::npos || value.find('\\') != std::string::npos) {
    why = "contains a path separator";
  } else if (value.find("..") != std::string::npos) {
    why = "contains \"..\"";
  } else if (value.front() == '.') {
    why = "starts with '.'";
  } else if (value.size() > 255) {
    why = "is longer than 255 bytes";
  }
  if (why == nullptr) return true;
  return storage_error(std::string(what) + " " + shown(value) + " " + why +
                       ": it could name a file outside its directory");
}

bool is_base64url(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

std::string lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

// "wildcard_.a.example" -> "*.a.example": the name a directory stands for when its metadata is
// missing.
std::string display_name(const std::string& stored) {
  if (stored.compare(0, kWildcard.size(), kWildcard) == 0) {
    return "*" + stored.substr(kWildcard.size());
  }
  return stored;
}

// Unique within this host (pid, counter) and across hosts sharing a volume (random bits).
std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%d-%llu-%016llx", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(counter.fetch_add(1)),
                static_cast<unsigned long long>(rng()));
  return buf;
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// A rename or a new file is durable only once its directory entry is on disk.
void fsync_dir(const std::string& dir) {
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// mkdir -p; directories made here are 0700, existing ones are left as they are.
Result<bool> make_dirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return error_at(prefix, "acme storage: " + sys_error("create directory", errno));
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return error_at(dir, "acme storage: not a directory");
  }
  return true;
}

bool write_all(int fd, const std::string& content) {
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

Result<std::string> read_fd(int fd, const std::string& path) {
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return error_at(path, "acme storage: " + sys_error("read", errno));
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

// The file's content, or nullopt when it does not exist; only a regular file of at most 1 MiB,
// opened without waiting (tls::read_file_if_exists): a FIFO or a device planted in the data
// directory must not hang the thread that loads certificates (the control thread, at start and
// on reloads).
Result<std::optional<std::string>> read_file(const std::string& path) {
  auto text = tls::read_file_if_exists(path, size_t{1} << 20);
  if (!text) return error_at(path, "acme storage: " + text.errors().front().message);
  return std::move(*text);
}

Result<bool> write_atomic(const std::string& path, const std::string& content, unsigned mode) {
  std::string dir = parent_of(path);
  auto made = make_dirs(dir);
  if (!made) return made.errors();
  // The temporary lives in the same directory (rename does not cross file systems) and starts
  // with '.', which loaders skip: a crash before the rename leaves the old file in force.
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
    tmp = dir + "/." + base_of(path) + ".tmp-" + unique_suffix();
    // The mode is set here, at creation, so a key is never readable by others even briefly.
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0 && errno != EEXIST) {
      return error_at(path, "acme storage: " + sys_error("create temporary file", errno));
    }
  }
  if (fd < 0) return error_at(path, "acme storage: no unique temporary file name");
  auto fail = [&](const char* step) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return error_at(path, "acme storage: " + sys_error(step, err));
  };
  if (!write_all(fd, content)) return fail("write");
  if (::fsync(fd) != 0) return fail("fsync");
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return error_at(path, "acme storage: " + sys_error("close", err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return error_at(path, "acme storage: " + sys_error("rename", err));
  }
  fsync_dir(dir);
  return true;
}

void remove_file(const std::string& path) {
  if (::unlink(path.c_str()) == 0) {
    fsync_dir(parent_of(path));
  } else if (errno != ENOENT) {
    log::warn("acme_storage_remove_failed").kv("file", path).kv("error", std::strerror(errno));
  }
}

// Reads members of one JSON object; a missing or null member leaves the target empty, a member
// of the wrong type is an error naming the file.
class JsonReader {
 public:
  JsonReader(const json& j, std::string path) : j_(j), path_(std::move(path)) {}

  void str(const char* key, std::string& out) {
    const json* v = find(key);
    if (v == nullptr) return;
    if (!v->is_string()) return wrong(key, "a string");
    out = v->get<std::string>();
  }
  void strings(const char* key, std::vector<std::string>& out) {
    const json* v = find(key);
    if (v == nullptr) return;
    bool ok = v->is_array() &&
              std::all_of(v->begin(), v->end(), [](const json& e) { return e.is_string(); });
    if (!ok) return wrong(key, "an array of strings");
    out = v->get<std::vector<std::string>>();
  }
  void time(const char* key, std::optional<SystemTime>& out) {
    const json* v = find(key);
    if (v == nullptr) return;
    std::optional<SystemTime> t;
    if (v->is_string()) t = parse_rfc3339(v->get<std::string>());
    if (!t) return wrong(key, "an RFC 3339 time");
    out = t;
  }
  void integer(const char* key, int& out) {
    const json* v = find(key);
    if (v == nullptr) return;
    if (!v->is_number_integer()) return wrong(key, "an integer");
    out = v->get<int>();
  }
  // The reader for a member's type, for each_meta_member().
  void operator()(const char* key, std::string& out) { str(key, out); }
  void operator()(const char* key, std::vector<std::string>& out) { strings(key, out); }
  void operator()(const char* key, std::optional<SystemTime>& out) { time(key, out); }
  void operator()(const char* key, int& out) { integer(key, out); }
  Errors& errors() { return errors_; }

 private:
  const json* find(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  void wrong(const char* key, const char* expected) {
    errors_.push_back(
        error_at(path_, std::string("acme storage: \"") + key + "\" is not " + expected));
  }

  const json& j_;
  std::string path_;
  Errors errors_;
};

Result<json> parse_object(const std::string& text, const std::string& path) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return error_at(path, "acme storage: not a JSON object");
  }
  return j;
}

// CertMeta's members under their JSON names: the one list both meta_to_json() and
// meta_from_json() walk, so that no member can be written and not read, or the reverse.
template <typename Meta, typename Visit>
void each_meta_member(Meta& m, Visit&& visit) {
  visit("names", m.names);
  visit("issuer", m.issuer);
  visit("ca", m.ca);
  visit("not_before", m.not_before);
  visit("not_after", m.not_after);
  visit("obtained_at", m.obtained_at);
  visit("renew_at", m.renew_at);
  visit("ari_id", m.ari_id);
  visit("last_error", m.last_error);
  visit("last_error_at", m.last_error_at);
  visit("next_attempt", m.next_attempt);
  visit("failures", m.failures);
}

template <typename T>
json to_json_member(const T& v) {
  return json(v);
}
json to_json_member(const std::optional<SystemTime>& t) {
  return t ? json(rfc3339(*t)) : json(nullptr);
}

std::string meta_to_json(const CertMeta& m) {
  json j = json::object();
  each_meta_member(m, [&j](const char* key, const auto& v) { j[key] = to_json_member(v); });
  return j.dump(2) + "\n";
}

Result<CertMeta> meta_from_json(const std::string& text, const std::string& path) {
  auto j = parse_object(text, path);
  if (!j) return j.errors();
  CertMeta m;
  JsonReader r(*j, path);
  each_meta_member(m, r);
  if (!r.errors().empty()) return r.errors();
  return m;
}

// Whether the first certificate in cert_pem belongs to the key in key_pem; an error when
// either does not parse.
Result<bool> pair_matches(const std::string& cert_pem, const std::string& key_pem,
                          const std::string& path) {
  BIO* cb = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  X509* cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
  BIO_free(cb);
  BIO* kb = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  BIO_free(kb);
  Result<bool> out = true;
  if (cert == nullptr) {
    out = error_at(path + ".crt", "acme storage: no PEM certificate");
  } else if (key == nullptr) {
    out = error_at(path + ".key", "acme storage: no PEM private key");
  } else {
    out = X509_check_private_key(cert, key) == 1;
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

struct LockInfo {
  std::string holder;
  std::optional<SystemTime> created, expires;
};

std::string lock_to_json(const std::string& holder, SystemTime created, SystemTime expires) {
  json j = {{"holder", holder}, {"created", rfc3339(created)}, {"expires", rfc3339(expires)}};
  return j.dump() + "\n";
}

// nullopt when the file is not (yet) a complete lock: a contender can see it between the
// creation and the write.
std::optional<LockInfo> parse_lock(const std::string& text, const std::string& path) {
  auto j = parse_object(text, path);
  if (!j) return std::nullopt;
  LockInfo info;
  JsonReader r(*j, path);
  r.str("holder", info.holder);
  r.time("created", info.created);
  r.time("expires", info.expires);
  if (!r.errors().empty() || info.holder.empty() || !info.expires) return std::nullopt;
  return info;
}

// Serialises every change to an existing lock file in one locks directory: refreshing it,
// removing an expired one and unlocking. Creating a free lock needs no guard (O_EXCL decides),
// and a lock file can only appear where none exists, so under the guard the file that was
// judged is still the one at its path when it is replaced or removed. An flock on a regular
// file opened for writing, so that it also holds on NFS (where flock is emulated by fcntl
// locks); the kernel releases it when a holder dies.
class LockGuard {
 public:
  static Result<LockGuard> take(const std::string& dir) {
    std::string path = dir + "/.guard";
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return error_at(path, "acme storage: " + sys_error("open lock guard", errno));
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return error_at(path, "acme storage: " + sys_error("take lock guard", err));
    }
    return LockGuard(fd);
  }
  LockGuard(LockGuard&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  LockGuard& operator=(LockGuard&&) = delete;
  ~LockGuard() {
    if (fd_ >= 0) ::close(fd_);  // releases the flock
  }

 private:
  explicit LockGuard(int fd) : fd_(fd) {}
  int fd_;
};

// Creates the lock file with O_EXCL: true when this call created it, false when it exists.
Result<bool> create_lock(const std::string& path, const std::string& holder,
                         std::chrono::seconds ttl) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == EEXIST) return false;
    return error_at(path, "acme storage: " + sys_error("create lock", errno));
  }
  auto now = std::chrono::system_clock::now();
  bool ok = write_all(fd, lock_to_json(holder, now, now + ttl)) && ::fsync(fd) == 0;
  int err = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    ::unlink(path.c_str());  // ours, made just now: nobody else can hold it yet
    return error_at(path, "acme storage: " + sys_error("write lock", err));
  }
  fsync_dir(parent_of(path));
  return true;
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

// Reads exactly `n` digits at `pos`.
bool digits(std::string_view s, size_t& pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    out = out * 10 + (c - '0');
  }
  pos += n;
  return true;
}

bool expect(std::string_view s, size_t& pos, std::string_view chars) {
  if (pos >= s.size() || chars.find(s[pos]) == std::string_view::npos) return false;
  ++pos;
  return true;
}

}  // namespace

Result<bool> write_file_atomic(const std::string& path, const std::string& content, unsigned mode) {
  return write_atomic(path, content, mode);
}

std::string rfc3339(SystemTime t) {
  int64_t ns = duration_cast<nanoseconds>(t.time_since_epoch()).count();
  int64_t secs = floor_div(ns, 1'000'000'000);
  int64_t frac = ns - secs * 1'000'000'000;
  std::time_t tt = static_cast<std::time_t>(secs);
  struct tm tm {};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = buf;
  if (frac != 0) {
    char f[16];
    std::snprintf(f, sizeof f, "%09lld", static_cast<long long>(frac));
    std::string fs = f;
    fs.erase(fs.find_last_not_of('0') + 1);
    out += "." + fs;
  }
  return out + "Z";
}

std::optional<SystemTime> parse_rfc3339(std::string_view s) {
  size_t pos = 0;
  int year, mon, day, hour, min, sec;
  bool ok = digits(s, pos, 4, year) && expect(s, pos, "-") && digits(s, pos, 2, mon) &&
            expect(s, pos, "-") && digits(s, pos, 2, day) && expect(s, pos, "Tt ") &&
            digits(s, pos, 2, hour) && expect(s, pos, ":") && digits(s, pos, 2, min) &&
            expect(s, pos, ":") && digits(s, pos, 2, sec);
  if (!ok || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60) {
    return std::nullopt;
  }
  int64_t frac_ns = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t start = pos;
    int64_t scale = 100'000'000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      frac_ns += (s[pos] - '0') * scale;  // digits past nanoseconds are dropped
      scale /= 10;
      ++pos;
    }
    if (pos == start) return std::nullopt;
  }
  int64_t offset_s = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int sign = s[pos] == '-' ? -1 : 1;
    ++pos;
    int oh, om;
    if (!digits(s, pos, 2, oh) || !expect(s, pos, ":") || !digits(s, pos, 2, om) || oh > 23 ||
        om > 59) {
      return std::nullopt;
    }
    offset_s = sign * (oh * 3600 + om * 60);
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  struct tm tm {};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;  // a leap second (60) rolls over to the next minute
  int64_t secs = static_cast<int64_t>(timegm(&tm)) - offset_s;
  return SystemTime(
      duration_cast<SystemTime::duration>(std::chrono::seconds(secs) + nanoseconds(frac_ns)));
}

// Like Caddy's certmagic: the directory URL's host[:port] and path, with '/' and ':' spelled
// '-', lower-cased ("https://127.0.0.1:14000/dir" -> "127.0.0.1-14000-dir").
std::string issuer_key(const std::string& directory_url) {
  std::string rest = directory_url;
  auto scheme = rest.find("://");
  if (scheme != std::string::npos) rest = rest.substr(scheme + 3);
  rest = rest.substr(0, rest.find_first_of("?#"));
  auto at = rest.find('@');  // userinfo has no place in a directory name
  if (at != std::string::npos && at < rest.find('/')) rest = rest.substr(at + 1);
  std::string out;
  for (char c : rest) out += (c == '/' || c == ':' || c == '\\') ? '-' : c;
  size_t b = out.find_first_not_of('-');
  size_t e = out.find_last_not_of('-');
  out = b == std::string::npos ? std::string() : out.substr(b, e - b + 1);
  return lower(out);
}

std::string storage_name(const std::string& name) {
  std::string out;
  for (char c : lower(name)) {
    if (c == '*') {
      out += kWildcard;
    } else {
      out += c;
    }
  }
  return out;
}

std::string lock_key(const std::string& issuer, const std::string& name) {
  return issuer + "-" + storage_name(name);
}

Storage::Storage(std::string data_dir) : dir_(std::move(data_dir)) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

namespace {

std::string user_dir_name(const std::string& email) {
  return email.empty() ? "default" : storage_name(email);
}

struct CertPaths {
  std::string dir;
  std::string base;  // dir + "/" + storage name, without extension
};

Result<CertPaths> cert_paths(const std::string& data_dir, const std::string& issuer,
                             const std::string& name) {
  std::string stored = storage_name(name);
  auto ok = check_component("issuer", issuer);
  if (!ok) return ok.errors();
  ok = check_component("certificate name", stored);
  if (!ok) return ok.errors();
  CertPaths p;
  p.dir = data_dir + "/certificates/" + issuer + "/" + stored;
  p.base = p.dir + "/" + stored;
  return p;
}

// The certificate directory's files. Without `with_key` the key is not read (the listing has
// no use for it) and the pair is not checked.
Result<std::optional<StoredCert>> load_cert_files(const std::string& data_dir,
                                                  const std::string& issuer,
                                                  const std::string& name, bool with_key) {
  auto paths = cert_paths(data_dir, issuer, name);
  if (!paths) return paths.errors();
  const std::string& base = paths->base;
  // save_cert writes certificate, key, metadata in that order; a reader racing with it can
  // pick up an old certificate and a new key. That shows as a mismatched pair, and the next
  // read a moment later sees the finished write.
  for (int attempt = 0;; ++attempt) {
    auto meta = read_file(base + ".json");
    if (!meta) return meta.errors();
    auto crt = read_file(base + ".crt");
    if (!crt) return crt.errors();
    Result<std::optional<std::string>> key = std::optional<std::string>{};
    if (with_key) key = read_file(base + ".key");
    if (!key) return key.errors();
    if (!*meta && !*crt && !*key) return std::optional<StoredCert>{};

    StoredCert out;
    std::optional<Errors> bad_meta;
    if (*meta) {
      auto parsed = meta_from_json(**meta, base + ".json");
      if (parsed) {
        out.meta = std::move(*parsed);
      } else {
        bad_meta = parsed.errors();
      }
    }
    if (bad_meta && (!*crt || !*key)) return *bad_meta;
    if (bad_meta || !*meta) {
      // Damaged metadata next to a certificate and key: the pair still serves (and is checked
      // below); the metadata is rebuilt from it on the next write.
      if (bad_meta) {
        log::warn("acme_storage_meta_damaged")
            .kv("file", base + ".json")
            .kv("error", bad_meta->front().str())
            .kv("using", "the certificate and key beside it");
      }
      out.meta.names = {display_name(storage_name(name))};
      out.meta.issuer = issuer;
    }
    if (*crt) out.cert_pem = std::move(**crt);
    if (*key) out.key_pem = std::move(**key);
    if (!with_key || (out.cert_pem.empty() && out.key_pem.empty())) {
      return std::optional<StoredCert>(std::move(out));
    }
    if (out.key_pem.empty()) return error_at(base + ".key", "acme storage: key missing");
    if (out.cert_pem.empty()) return error_at(base + ".crt", "acme storage: certificate missing");
    auto match = pair_matches(out.cert_pem, out.key_pem, base);
    if (!match) return match.errors();
    if (*match) return std::optional<StoredCert>(std::move(out));
    if (attempt == 4) {
      return error_at(base + ".key", "acme storage: the key does not belong to the certificate");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

Result<std::optional<StoredAccount>> Storage::load_account(const std::string& issuer,
                                                           const std::string& email) const {
  std::string user = user_dir_name(email);
  auto ok = check_component("issuer", issuer);
  if (ok) ok = check_component("account email", user);
  if (!ok) return ok.errors();
  std::string dir = dir_ + "/acme/" + issuer + "/users/" + user;
  auto key = read_file(dir + "/account.key");
  if (!key) return key.errors();
  if (!*key) return std::optional<StoredAccount>{};
  StoredAccount account;
  account.email = email;
  account.key_pem = std::move(**key);
  // Without account.json (a crash after the key was written) the key alone is enough: the
  // client finds the account again with onlyReturnExisting (RFC 8555 §7.3.1).
  auto meta = read_file(dir + "/account.json");
  if (!meta) return meta.errors();
  if (*meta) {
    auto j = parse_object(**meta, dir + "/account.json");
    if (!j) return j.errors();
    JsonReader r(*j, dir + "/account.json");
    r.str("kid", account.kid);
    if (!r.errors().empty()) return r.errors();
  }
  return std::optional<StoredAccount>(std::move(account));
}

Result<bool> Storage::save_account(const std::string& issuer, const StoredAccount& account) const {
  std::string user = user_dir_name(account.email);
  auto ok = check_component("issuer", issuer);
  if (ok) ok = check_component("account email", user);
  if (!ok) return ok.errors();
  if (account.key_pem.empty()) return storage_error("an account needs its key");
  std::string dir = dir_ + "/acme/" + issuer + "/users/" + user;
  auto wrote = write_atomic(dir + "/account.key", account.key_pem, 0600);
  if (!wrote) return wrote;
  json j = {{"email", account.email}, {"kid", account.kid}};
  return write_atomic(dir + "/account.json", j.dump(2) + "\n", 0644);
}

Result<std::optional<StoredCert>> Storage::load_cert(const std::string& issuer,
                                                     const std::string& name) const {
  return load_cert_files(dir_, issuer, name, true);
}

Result<bool> Storage::save_cert(const std::string& issuer, const std::string& name,
                                const StoredCert& cert) const {
  auto paths = cert_paths(dir_, issuer, name);
  if (!paths) return paths.errors();
  if (cert.cert_pem.empty() || cert.key_pem.empty()) {
    return storage_error(
        "save_cert needs a certificate and its key (save_meta records a "
        "failure without one)");
  }
  auto wrote = write_atomic(paths->base + ".crt", cert.cert_pem, 0644);
  if (wrote) wrote = write_atomic(paths->base + ".key", cert.key_pem, 0600);
  if (wrote) wrote = write_atomic(paths->base + ".json", meta_to_json(cert.meta), 0644);
  return wrote;
}

Result<bool> Storage::save_meta(const std::string& issuer, const std::string& name,
                                const CertMeta& meta) const {
  auto paths = cert_paths(dir_, issuer, name);
  if (!paths) return paths.errors();
  return write_atomic(paths->base + ".json", meta_to_json(meta), 0644);
}

std::vector<StoredCert> Storage::list() const {
  std::vector<StoredCert> out;
  auto subdirs = [](const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return names;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.empty() || n.front() == '.') continue;  // ".", "..", temporaries
      struct stat st {};
      if (::stat((dir + "/" + n).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    return names;
  };
  std::string root = dir_ + "/certificates";
  for (const auto& issuer : subdirs(root)) {
    for (const auto& name : subdirs(root + "/" + issuer)) {
      auto loaded = load_cert_files(dir_, issuer, name, false);
      if (loaded && !*loaded) continue;  // an empty directory: nothing managed there
      if (loaded) {
        out.push_back(std::move(**loaded));
        continue;
      }
      StoredCert bad;
      bad.meta.names = {display_name(name)};
      bad.meta.issuer = issuer;
      bad.meta.last_error = loaded.errors().front().str();
      out.push_back(std::move(bad));
    }
  }
  return out;
}

Result<bool> Storage::try_lock(const std::string& key, const std::string& holder,
                               std::chrono::seconds ttl) const {
  auto ok = check_component("lock key", key);
  if (!ok) return ok;
  if (holder.empty() || holder.find('\0') != std::string::npos) {
    return storage_error("a lock holder needs a name without NUL bytes");
  }
  std::string dir = dir_ + "/locks";
  auto made = make_dirs(dir);
  if (!made) return made;
  std::string path = dir + "/" + key + ".lock";

  auto created = create_lock(path, holder, ttl);
  if (!created || *created) return created;

  // The lock exists: ours to refresh, someone else's, or expired. Decided under the guard.
  auto guard = LockGuard::take(dir);
  if (!guard) return guard.errors();
  // Without waiting: a FIFO at the lock's path is an error, not a hang.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0 && errno == ENOENT) return create_lock(path, holder, ttl);  // released meanwhile
  if (fd < 0) return error_at(path, "acme storage: " + sys_error("open lock", errno));
  struct stat st {};
  auto text = read_fd(fd, path);
  bool stat_ok = ::fstat(fd, &st) == 0;
  ::close(fd);
  if (!stat_ok || !text) return error_at(path, "acme storage: cannot read lock");
  auto info = parse_lock(*text, path);
  auto now = std::chrono::system_clock::now();
  // Every holder refreshes its lock (a rename, so the mtime moves) well within the ttl: a lock
  // not touched for a ttl is dead whatever expiry it claims (a far-future one would block the
  // name forever). An incomplete lock (its writer died mid-write) is judged the same way.
  auto mtime = SystemTime(duration_cast<SystemTime::duration>(
      std::chrono::seconds(st.st_mtim.tv_sec) + nanoseconds(st.st_mtim.tv_nsec)));
  bool expired = now >= mtime + ttl || (info && now >= *info->expires);

  if (info && info->holder == holder && !expired) {
    // Replaced by rename, so no reader ever sees a partial lock.
    auto wrote =
        write_atomic(path, lock_to_json(holder, info->created.value_or(now), now + ttl), 0644);
    if (!wrote) return wrote;
    return true;
  }
  if (!expired) return false;
  // A contender creating the lock without the guard can only do so once this unlink has freed
  // the path; then its O_EXCL create or ours wins, never both.
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return error_at(path, "acme storage: " + sys_error("remove expired lock", errno));
  }
  fsync_dir(dir);
  created = create_lock(path, holder, ttl);
  if (created && *created) {
    log::info("acme_lock_taken_over")
        .kv("lock", path)
        .kv("previous_holder", info ? info->holder : std::string("(incomplete lock file)"))
        .kv("holder", holder);
  }
  return created;
}

void Storage::unlock(const std::string& key, const std::string& holder) const {
  if (!check_component("lock key", key)) return;
  std::string dir = dir_ + "/locks";
  std::string path = dir + "/" + key + ".lock";
  auto guard = LockGuard::take(dir);
  if (!guard) {
    log::warn("acme_unlock_failed").kv("lock", path).kv("error", guard.errors().front().str());
    return;
  }
  auto text = read_file(path);
  if (!text || !*text) return;
  auto info = parse_lock(**text, path);
  // Someone else's lock (ours expired and was taken over) stays where it is.
  if (!info || info->holder != holder) return;
  if (::unlink(path.c_str()) == 0) fsync_dir(dir);
}

std::string Storage::challenge_dir() const {
  return dir_ + "/acme/challenge_tokens";
}

Result<bool> Storage::put_http01(const std::string& token,
                                 const std::string& key_authorization) const {
  auto ok = check_component("HTTP-01 token", token);
  if (!ok) return ok;
  // RFC 8555 §8.3: a token is base64url; anything else is not from a CA we speak to.
  if (!is_base64url(token))
    return storage_error("HTTP-01 token " + shown(token) + " is not base64url (RFC 8555 §8.3)");
  return write_atomic(challenge_dir() + "/http-01/" + token, key_authorization, 0644);
}

void Storage::remove_http01(const std::string& token) const {
  if (!check_component("HTTP-01 token", token)) return;
  remove_file(challenge_dir() + "/http-01/" + token);
}

Result<bool> Storage::put_tls_alpn01(const std::string& name,
                                     const std::string& key_authorization) const {
  std::string stored = storage_name(name);
  auto ok = check_component("TLS-ALPN-01 name", stored);
  if (!ok) return ok;
  return write_atomic(challenge_dir() + "/tls-alpn-01/" + stored, key_authorization, 0644);
}

void Storage::remove_tls_alpn01(const std::string& name) const {
  std::string stored = storage_name(name);
  if (!check_component("TLS-ALPN-01 name", stored)) return;
  remove_file(challenge_dir() + "/tls-alpn-01/" + stored);
}

Result<bool> Storage::write_file(const std::string& path, const std::string& content,
                                 unsigned mode) const {
  if (path.empty() || path.back() == '/' || path.find('\0') != std::string::npos) {
    return storage_error("cannot write to " + shown(path));
  }
  return write_atomic(path.front() == '/' ? path : dir_ + "/" + path, content, mode);
}

}  // namespace hsp::acme

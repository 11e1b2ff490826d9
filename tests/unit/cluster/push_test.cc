// Pushes end to end on loopback: a Controller, PushReceivers behind real AdminServers, the
// files they carry, versions, restarts and refusals. The receiver's `apply` stands in for the
// gateway's compile-and-publish (main.cc), which the namespace test (integration/docker/
// test_cluster_netns.py) runs for real.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "../acme/acme_test_util.h"
#include "acme/storage.h"
#include "cluster/bundle.h"
#include "cluster/controller.h"
#include "cluster/server.h"

namespace hsp::cluster {
namespace {

using acme::testing::read_text;
using acme::testing::write_text;
using std::chrono::milliseconds;
using tls::testing::TempDir;
namespace fs = std::filesystem;

PushKey key_of(std::string_view secret) {
  return *PushKey::from_secret(secret);
}

const char* kCert = "certificates/acme-v02.example-directory/a.example/a.example.crt";
const char* kKey = "certificates/acme-v02.example-directory/a.example/a.example.key";
const char* kToken = "acme/challenge_tokens/http-01/tok1";

void put(const std::string& dir, const std::string& rel, const std::string& text,
         unsigned mode = 0644) {
  ASSERT_TRUE(acme::write_file_atomic(dir + "/" + rel, text, mode));
}

TEST(ClusterBundle, JsonRoundTripAndPathChecks) {
  Bundle b;
  b.version = 42;
  b.controller = "mgr1";
  b.caddyfile = "a.example {\n\trespond hi\n}\n";
  b.files = {{kCert, 0644, "CERT\n"}, {kKey, 0600, std::string("\0key", 4)}};
  auto back = bundle_from_json(bundle_to_json(b));
  ASSERT_TRUE(back) << back.errors().front().message;
  EXPECT_EQ(back->version, 42u);
  EXPECT_EQ(back->controller, "mgr1");
  EXPECT_EQ(back->caddyfile, b.caddyfile);
  EXPECT_EQ(back->files, b.files);

  auto with_path = [&](const std::string& path, unsigned mode = 0644) {
    Bundle x = b;
    x.files = {{path, mode, "x"}};
    auto r = bundle_from_json(bundle_to_json(x));
    return r ? std::string("accepted") : r.errors().front().message;
  };
  EXPECT_EQ(with_path("locks/x.lock"),
            "push bundle: path 'locks/x.lock' is outside the pushed trees");
  EXPECT_EQ(with_path("certificates/../cluster/server.json"),
            "push bundle: path 'certificates/../cluster/server.json' has a bad component");
  EXPECT_EQ(with_path("certificates//a"),
            "push bundle: path 'certificates//a' has a bad component");
  EXPECT_EQ(with_path("certificates/.hidden"),
            "push bundle: path 'certificates/.hidden' has a bad component");
  EXPECT_EQ(with_path("/certificates/a"),
            "push bundle: path '/certificates/a' is outside the pushed trees");
  EXPECT_EQ(with_path("certificates/a", 0777),
            "push bundle: path 'certificates/a': mode must be 0600 or 0644");
  EXPECT_EQ(bundle_from_json("[]").errors().front().message, "push bundle: not a JSON object");
  EXPECT_EQ(bundle_from_json(std::string(1000, '[')).errors().front().message,
            "push bundle: JSON nested too deep");
  EXPECT_EQ(with_path("certificates/" + std::string(256, 'a')),
            "push bundle: path 'certificates/" + std::string(256, 'a') +
                "' has a component over 255 bytes");
  // Found by fuzzing: a mode read as 32 bits would have taken 2^32 + 0600 for 0600.
  EXPECT_EQ(bundle_from_json(R"({"version": 1, "caddyfile": "", "files": [{"path":
                "certificates/a", "mode": 4294967680, "data": "eA"}]})")
                .errors()
                .front()
                .message,
            "push bundle: path 'certificates/a': mode must be 0600 or 0644");
  EXPECT_EQ(
      bundle_from_json(R"({"version": -1, "caddyfile": "", "files": []})").errors().front().message,
      "push bundle: 'version' must be an unsigned integer");
}

TEST(ClusterBundle, CollectAndApplyFiles) {
  TempDir ctl, srv;
  put(ctl.path(), kCert, "CERT\n");
  put(ctl.path(), kKey, "KEY\n", 0600);
  put(ctl.path(), kToken, "tok1.thumb");
  put(ctl.path(), "certificates/x/.a.crt.tmp-1", "partial");  // a temporary: skipped
  put(ctl.path(), "accounts/x/account.key", "not pushed", 0600);
  auto files = collect_files(ctl.path());
  ASSERT_TRUE(files) << files.errors().front().str();
  ASSERT_EQ(files->size(), 3u);
  EXPECT_EQ((*files)[0].path, kToken);
  EXPECT_EQ((*files)[2].path, kKey);
  EXPECT_EQ((*files)[2].mode, 0600u);

  put(srv.path(), "acme/challenge_tokens/http-01/finished", "old");
  auto n = apply_files(srv.path(), *files);
  ASSERT_TRUE(n) << n.errors().front().str();
  EXPECT_EQ(*n, 4u);  // three written, one finished challenge removed
  EXPECT_EQ(read_text(srv.path() + "/" + kKey), "KEY\n");
  struct stat st {};
  ASSERT_EQ(::stat((srv.path() + "/" + kKey).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(fs::exists(srv.path() + "/acme/challenge_tokens/http-01/finished"));
  // Again: nothing differs, nothing written.
  EXPECT_EQ(*apply_files(srv.path(), *files), 0u);

  // A symbolic link planted in the data directory takes nothing outside it: no write through
  // it, and no deletion of what it points to.
  TempDir other, victim;
  put(victim.path(), "keep.me", "precious");
  fs::remove_all(srv.path() + "/certificates");
  fs::create_directory_symlink(other.path(), srv.path() + "/certificates");
  auto through = apply_files(srv.path(), *files);
  ASSERT_FALSE(through);
  EXPECT_NE(through.errors().front().message.find("goes through a symbolic link"),
            std::string::npos);
  EXPECT_TRUE(fs::is_empty(other.path()));
  fs::remove(srv.path() + "/certificates");
  fs::remove_all(srv.path() + "/acme/challenge_tokens");
  fs::create_directory_symlink(victim.path(), srv.path() + "/acme/challenge_tokens");
  auto none = apply_files(srv.path(), {});  // "every answer is finished": none is removed
  ASSERT_TRUE(none) << none.errors().front().str();
  EXPECT_EQ(*none, 0u);
  EXPECT_EQ(read_text(victim.path() + "/keep.me"), "precious");
}

TEST(ClusterBundle, SavedStatesRoundTripAndDamagedOnesAreErrorsNamingTheFile) {
  TempDir d;
  EXPECT_FALSE(*load_server_state(d.path()));  // none yet
  ASSERT_TRUE(save_server_state(d.path(), {7, "mgr", "a {\n}\n"}));
  auto s = load_server_state(d.path());
  ASSERT_TRUE(s && *s);
  EXPECT_EQ((*s)->version, 7u);
  EXPECT_EQ((*s)->controller, "mgr");
  EXPECT_EQ((*s)->caddyfile, "a {\n}\n");
  ASSERT_TRUE(save_controller_state(d.path(), {9, "abc"}));
  EXPECT_EQ((*load_controller_state(d.path()))->digest, "abc");

  const std::string file = d.path() + "/cluster/server.json";
  auto damaged = [&](const std::string& text) {
    write_text(file, text);
    auto r = load_server_state(d.path());
    return r ? std::string("loaded") : r.errors().front().str();
  };
  EXPECT_EQ(damaged("{\"version\": 1"), file + ": not a JSON object");
  EXPECT_EQ(damaged("{\"version\": -1, \"caddyfile\": \"\"}"),
            file + ": needs 'version' and 'caddyfile'");
  EXPECT_EQ(damaged(std::string(100, '[')), file + ": JSON nested too deep");
  // A controller of the wrong type is not worth refusing the saved config for.
  EXPECT_EQ(damaged("{\"version\": 1, \"caddyfile\": \"\", \"controller\": 5}"), "loaded");
}

// One server: a receiver behind an AdminServer on a loopback port, applying into a data dir.
struct TestServer {
  explicit TestServer(const std::string& secret, const std::string& listen = "127.0.0.1:0")
      : receiver({dir.path(), key_of(secret)}, [this](const std::string& text, uint64_t v) {
          std::lock_guard lock(mu);
          if (text.find("broken") != std::string::npos)
            return Errors{Error{{"<controller>", 3, 1}, "unknown directive 'broken'"}};
          served = text;
          ++applies;
          return Errors{};
        }) {
    start(listen);
  }
  void start(const std::string& listen) {
    for (int port = 21000 + (::getpid() * 13 + count++ * 97) % 18000;; ++port) {
      std::string addr = listen == "127.0.0.1:0" ? "127.0.0.1:" + std::to_string(port) : listen;
      AdminServer::Options o;
      o.listen = addr;
      admin = std::make_unique<AdminServer>(
          o, [this](const AdminRequest& r) { return receiver.handle(r); });
      if (admin->start().empty()) {
        address = addr;
        return;
      }
      if (listen != "127.0.0.1:0") FAIL() << "cannot listen on " << listen;
    }
  }
  std::string serving() {
    std::lock_guard lock(mu);
    return served;
  }
  static inline int count = 0;
  TempDir dir;
  std::mutex mu;
  std::string served;
  int applies = 0;
  PushReceiver receiver;
  std::unique_ptr<AdminServer> admin;
  std::string address;
};

template <typename Pred>
bool eventually(Pred pred, milliseconds limit = milliseconds(5000)) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return pred();
}

const std::string kSecret = "a shared secret for the tests";

uint64_t now_ms() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

Controller::Options controller_options(const std::string& dir, std::vector<std::string> servers) {
  Controller::Options o;
  o.data_dir = dir;
  o.key = key_of(kSecret);
  o.static_servers = std::move(servers);
  o.check_interval = milliseconds(100);
  o.timeout = milliseconds(1000);
  o.name = "test-controller";
  return o;
}

TEST(ClusterPush, ControllerBringsEveryServerToItsVersionAndFiles) {
  TestServer s1(kSecret), s2(kSecret);
  TempDir ctl;
  put(ctl.path(), kCert, "CERT-1\n");
  Controller c(controller_options(ctl.path(), {s1.address, s2.address}));
  ASSERT_TRUE(c.start().empty());
  c.set_caddyfile("a.example {\n\trespond one\n}\n");
  ASSERT_TRUE(c.push_and_wait(milliseconds(5000)));
  EXPECT_EQ(s1.serving(), "a.example {\n\trespond one\n}\n");
  EXPECT_EQ(s2.serving(), "a.example {\n\trespond one\n}\n");
  EXPECT_EQ(read_text(s2.dir.path() + "/" + kCert), "CERT-1\n");
  uint64_t v1 = c.version();
  EXPECT_EQ(s1.receiver.version(), v1);

  // A renewed certificate alone is a new version too.
  put(ctl.path(), kCert, "CERT-2\n");
  c.files_changed();
  ASSERT_TRUE(eventually([&] { return read_text(s1.dir.path() + "/" + kCert) == "CERT-2\n"; }));
  EXPECT_GT(c.version(), v1);

  // Nothing changed: rounds go on, but no new version and no new apply.
  int applies = s1.applies;
  uint64_t v2 = c.version();
  std::this_thread::sleep_for(milliseconds(350));
  EXPECT_EQ(c.version(), v2);
  EXPECT_EQ(s1.applies, applies);

  // The saved state: a restarted server serves the last push before any controller is up.
  c.stop();
  TestServer* again = nullptr;
  {
    PushReceiver r({s1.dir.path(), key_of(kSecret)}, [&](const std::string& text, uint64_t) {
      EXPECT_EQ(text, "a.example {\n\trespond one\n}\n");
      return Errors{};
    });
    EXPECT_TRUE(r.restore());
    EXPECT_EQ(r.version(), v2);
  }
  (void)again;
}

TEST(ClusterPush, AServerThatMissedAPushGetsItWhenItComesBack) {
  TestServer s1(kSecret), s2(kSecret);
  TempDir ctl;
  Controller c(controller_options(ctl.path(), {s1.address, s2.address}));
  ASSERT_TRUE(c.start().empty());
  c.set_caddyfile("v1\n");
  ASSERT_TRUE(c.push_and_wait(milliseconds(5000)));
  // s2 goes down (its listener closes); a new version reaches s1 only.
  s2.admin->stop();
  c.set_caddyfile("v2\n");
  ASSERT_TRUE(eventually([&] { return s1.serving() == "v2\n"; }));
  EXPECT_FALSE(c.push_and_wait(milliseconds(500)));
  EXPECT_EQ(s2.serving(), "v1\n");
  // It comes back on the same address: the next round's version probe finds it behind.
  s2.start(s2.address);
  ASSERT_TRUE(eventually([&] { return s2.serving() == "v2\n"; }));
  EXPECT_TRUE(c.push_and_wait(milliseconds(5000)));
}

TEST(ClusterPush, RefusedStaleRejectedAndRepeatedPushes) {
  TestServer s(kSecret);
  auto to = *parse_host_port(s.address);
  auto push = [&](const PushKey& key, uint64_t version, const std::string& text) {
    Bundle b;
    b.version = version;
    b.caddyfile = text;
    auto r = http_request(to, "POST", kConfigPath, key.seal(kConfigPath, bundle_to_json(b)),
                          milliseconds(2000));
    EXPECT_TRUE(r) << r.errors().front().message;
    return r ? *r : ClientResponse{};
  };
  PushKey right = key_of(kSecret), wrong = key_of("not the shared secret at all");

  auto refused = push(wrong, 10, "evil\n");
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(s.serving(), "");
  EXPECT_EQ(push(right, 10, "good\n").status, 200);
  EXPECT_EQ(s.serving(), "good\n");
  auto same = push(right, 10, "good\n");
  EXPECT_EQ(same.status, 200);
  EXPECT_EQ(nlohmann::json::parse(same.body)["applied"], false);
  EXPECT_EQ(push(right, 9, "older\n").status, 409);
  // Far in the future (a broken clock, or a hostile peer with the secret): refused, else every
  // later push would look older.
  EXPECT_EQ(push(right, ~uint64_t{0}, "forever\n").status, 400);
  EXPECT_EQ(push(right, now_ms() + 2 * kMaxVersionLead, "forever\n").status, 400);
  auto rejected = push(right, 11, "broken\n");
  EXPECT_EQ(rejected.status, 422);
  EXPECT_NE(rejected.body.find("<controller>:3:1: unknown directive 'broken'"), std::string::npos);
  EXPECT_EQ(s.serving(), "good\n");
  EXPECT_EQ(s.receiver.version(), 10u);
  // Not sealed at all, and not JSON inside a good seal.
  auto raw = http_request(to, "POST", kConfigPath, "{\"version\": 99}", milliseconds(2000));
  EXPECT_EQ(raw->status, 401);
  auto junk =
      http_request(to, "POST", kConfigPath, right.seal(kConfigPath, "junk"), milliseconds(2000));
  EXPECT_EQ(junk->status, 400);
  EXPECT_EQ(http_request(to, "GET", kConfigPath, "", milliseconds(2000))->status, 405);
  EXPECT_EQ(http_request(to, "GET", "/other", "", milliseconds(2000))->status, 404);
  auto v = http_request(to, "GET", kVersionPath, "", milliseconds(2000));
  EXPECT_EQ(nlohmann::json::parse(v->body)["version"], 10);
}

TEST(ClusterPush, VersionsOnlyGrowAcrossControllerRestarts) {
  TestServer s(kSecret);
  TempDir ctl;
  uint64_t first = 0;
  {
    Controller c(controller_options(ctl.path(), {s.address}));
    ASSERT_TRUE(c.start().empty());
    c.set_caddyfile("v1\n");
    ASSERT_TRUE(c.push_and_wait(milliseconds(5000)));
    first = c.version();
  }
  Controller c(controller_options(ctl.path(), {s.address}));
  ASSERT_TRUE(c.start().empty());
  EXPECT_EQ(c.version(), first);  // restored, not restarted from zero
  c.set_caddyfile("v2\n");
  ASSERT_TRUE(c.push_and_wait(milliseconds(5000)));
  EXPECT_GT(c.version(), first);
  EXPECT_EQ(s.serving(), "v2\n");
}

TEST(ClusterPush, AControllerWithAnotherSecretChangesNothing) {
  TestServer s(kSecret);
  TempDir ctl;
  auto o = controller_options(ctl.path(), {s.address});
  o.key = key_of("the wrong secret, long enough");
  Controller c(o);
  ASSERT_TRUE(c.start().empty());
  c.set_caddyfile("evil\n");
  EXPECT_FALSE(c.push_and_wait(milliseconds(2000)));
  EXPECT_EQ(s.serving(), "");
  EXPECT_EQ(s.receiver.version(), 0u);
}

// A listening socket nobody accepts from: connections complete (the kernel's backlog) and
// then nothing is ever answered, like a hung process.
struct HungServer {
  HungServer() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(::listen(fd, 16), 0);
    socklen_t len = sizeof sa;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    address = "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  }
  ~HungServer() { ::close(fd); }
  int fd;
  std::string address;
};

TEST(ClusterPush, AHungServerDelaysNobodyElse) {
  TestServer s1(kSecret), s2(kSecret);
  HungServer hung;
  TempDir ctl;
  auto o = controller_options(ctl.path(), {s1.address, hung.address, s2.address});
  o.probe_timeout = milliseconds(1500);
  o.timeout = milliseconds(1500);
  Controller c(o);
  ASSERT_TRUE(c.start().empty());
  c.set_caddyfile("v1\n");
  ASSERT_TRUE(eventually([&] { return s1.serving() == "v1\n" && s2.serving() == "v1\n"; }));
  // A new version while the hung server's worker is stuck in its probe: the others get it
  // well within one probe deadline.
  auto start = std::chrono::steady_clock::now();
  c.set_caddyfile("v2\n");
  ASSERT_TRUE(eventually([&] { return s1.serving() == "v2\n" && s2.serving() == "v2\n"; }));
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(1000));
  // push_and_wait gives up on the hung one after its deadline, not after the whole wait.
  start = std::chrono::steady_clock::now();
  EXPECT_FALSE(c.push_and_wait(milliseconds(20000)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(5000));
}

TEST(ClusterPush, AServerAheadOfTheControllerLiftsItsNextVersion) {
  TestServer s(kSecret);
  // Another controller, with a clock an hour ahead, was here first.
  Bundle b;
  b.version = now_ms() + 3600 * 1000;
  b.caddyfile = "from the other controller\n";
  auto r = http_request(*parse_host_port(s.address), "POST", kConfigPath,
                        key_of(kSecret).seal(kConfigPath, bundle_to_json(b)), milliseconds(2000));
  ASSERT_EQ(r->status, 200);
  TempDir ctl;
  Controller c(controller_options(ctl.path(), {s.address}));
  ASSERT_TRUE(c.start().empty());
  c.set_caddyfile("ours\n");
  ASSERT_TRUE(eventually([&] { return s.serving() == "ours\n"; }));
  EXPECT_GT(c.version(), b.version);
}

}  // namespace
}  // namespace hsp::cluster

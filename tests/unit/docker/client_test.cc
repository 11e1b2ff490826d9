// The Docker Engine API client's transport (HTTP/1.1 over a unix socket) against a fake daemon
// that speaks dockerd's wire format: Content-Length and chunked answers, the event stream as
// chunked JSON lines cut at awkward places, refusals with {"message"}, a daemon that accepts and
// never answers, a missing socket. The real daemon is exercised by tests/integration/docker/.
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "docker-watch/client.h"

namespace hsp::docker {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

void send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return;  // the client went away; the test's assertions say what it saw
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Waits until the client closes its end (or 60 s, so that a broken client cannot hang the
// test binary): how a daemon that holds a connection open behaves.
void hold_until_client_closes(int fd) {
  char sink[4096];
  for (int i = 0; i < 600; ++i) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    if (::recv(fd, sink, sizeof(sink), 0) <= 0) return;
  }
}

std::string chunk(std::string_view data) {
  char size[32];
  std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  return std::string(size) + std::string(data) + "\r\n";
}

const char kChunkedHead[] =
    "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
    "Server: Docker/20.10.24 (linux)\r\nTransfer-Encoding: chunked\r\n\r\n";

std::string answer(int status, std::string_view reason, std::string_view body) {
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
         "\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
         "Server: Docker/20.10.24 (linux)\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

const char kVersionBody[] =
    R"({"Platform":{"Name":""},"Version":"20.10.24+dfsg1","ApiVersion":"1.41",)"
    R"("MinAPIVersion":"1.12","Os":"linux","Arch":"amd64"})"
    "\n";

// A daemon on a unix socket in a fresh temp dir. Each connection's request head is recorded and
// handed with the socket to `serve`, which writes the answer; connections are served one after
// another on the daemon's thread, which is what the client's one-call-one-connection needs.
class FakeDaemon {
 public:
  using Serve = std::function<void(int fd, const std::string& request)>;

  explicit FakeDaemon(Serve serve) : serve_(std::move(serve)) {
    char dir[] = "/tmp/hsp-docker-XXXXXX";
    EXPECT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/docker.sock";
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 16), 0);
    thread_ = std::thread([this] { loop(); });
  }

  ~FakeDaemon() {
    done_ = true;
    thread_.join();
    ::close(listen_fd_);
    std::filesystem::remove_all(dir_);
  }

  const std::string& path() const { return path_; }

  std::vector<std::string> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void loop() {
    while (!done_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::string request = read_head(fd);
      {
        std::lock_guard lock(mu_);
        requests_.push_back(request);
      }
      serve_(fd, request);
      ::close(fd);
    }
  }

  static std::string read_head(int fd) {
    std::string head;
    char buf[1024];
    while (head.find("\r\n\r\n") == std::string::npos) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) break;
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      head.append(buf, static_cast<size_t>(n));
    }
    return head;
  }

  Serve serve_;
  std::string dir_;
  std::string path_;
  int listen_fd_ = -1;
  std::atomic<bool> done_{false};
  std::mutex mu_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

std::string first_line(const std::string& request) {
  return request.substr(0, request.find("\r\n"));
}

std::string first_error(const Errors& errors) {
  return errors.empty() ? std::string("(no error)") : errors.front().message;
}

// Serves /version and hands every other request to `rest`.
FakeDaemon::Serve with_version(FakeDaemon::Serve rest) {
  return [rest](int fd, const std::string& request) {
    if (first_line(request) == "GET /version HTTP/1.1") {
      send_all(fd, answer(200, "OK", kVersionBody));
    } else {
      rest(fd, request);
    }
  };
}

TEST(DockerClient, NegotiatesOverContentLengthAnswer) {
  FakeDaemon daemon(with_version([](int, const std::string&) {}));
  Client client(daemon.path());
  EXPECT_EQ(client.api_version(), "");
  auto version = client.negotiate();
  ASSERT_TRUE(version.ok()) << first_error(version.errors());
  EXPECT_EQ(*version, "20.10.24+dfsg1");
  EXPECT_EQ(client.api_version(), "1.41");
  auto requests = daemon.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(first_line(requests[0]), "GET /version HTTP/1.1");
  // What the docker CLI sends; proxies in front of the socket route on it.
  EXPECT_NE(requests[0].find("\r\nHost: docker\r\n"), std::string::npos) << requests[0];
}

TEST(DockerClient, GetNegotiatesThenReadsChunkedListing) {
  FakeDaemon daemon(with_version([](int fd, const std::string&) {
    // Go's net/http chunks a listing it did not size; cut inside a string and a number.
    send_all(fd, kChunkedHead);
    send_all(fd, chunk(R"([{"Id":"c1","Names":["/al)"));
    std::this_thread::sleep_for(20ms);
    send_all(fd, chunk(R"(pha"],"Port":80)") + chunk(R"(80},{"Id":"c2"}])"));
    std::this_thread::sleep_for(20ms);
    send_all(fd, chunk("\n") + "0\r\n\r\n");
  }));
  Client client(daemon.path());
  auto list = client.get("containers/json?all=1");
  ASSERT_TRUE(list.ok()) << first_error(list.errors());
  EXPECT_EQ(*list, json::parse(R"([{"Id":"c1","Names":["/alpha"],"Port":8080},{"Id":"c2"}])"));
  auto requests = daemon.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(first_line(requests[1]), "GET /v1.41/containers/json?all=1 HTTP/1.1");
}

TEST(DockerClient, PinnedVersionSkipsNegotiation) {
  FakeDaemon daemon([](int fd, const std::string&) {
    send_all(fd, answer(200, "OK", R"({"Swarm":{"LocalNodeState":"active"}})"));
  });
  Client client(daemon.path(), "1.40");
  auto info = client.get("info");
  ASSERT_TRUE(info.ok()) << first_error(info.errors());
  EXPECT_EQ((*info)["Swarm"]["LocalNodeState"], "active");
  auto requests = daemon.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(first_line(requests[0]), "GET /v1.40/info HTTP/1.1");
}

TEST(DockerClient, ReadsBodyDelimitedByClose) {
  // HTTP/1.1 without Content-Length or chunking: the body ends with the connection.
  FakeDaemon daemon([](int fd, const std::string&) {
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n");
    std::this_thread::sleep_for(20ms);
    send_all(fd, R"([{"Name":"ingress"},)");
    std::this_thread::sleep_for(20ms);
    send_all(fd, R"({"Name":"caddy"}])");
  });
  Client client(daemon.path(), "1.41");
  auto networks = client.get("networks");
  ASSERT_TRUE(networks.ok()) << first_error(networks.errors());
  ASSERT_EQ(networks->size(), 2u);
  EXPECT_EQ((*networks)[1]["Name"], "caddy");
}

TEST(DockerClient, RefusalCarriesDaemonMessage) {
  FakeDaemon daemon(with_version([](int fd, const std::string&) {
    send_all(fd, answer(404, "Not Found",
                        R"({"message":"No such container: abc"})"
                        "\n"));
  }));
  Client client(daemon.path());
  auto r = client.get("containers/abc/json");
  ASSERT_FALSE(r.ok());
  const std::string& m = r.errors().front().message;
  EXPECT_EQ(m, "docker " + daemon.path() + ": GET /v1.41/containers/abc/json: 404 " +
                   "No such container: abc");
}

TEST(DockerClient, AnswerThatIsNotJsonIsAnError) {
  FakeDaemon daemon([](int fd, const std::string&) { send_all(fd, answer(200, "OK", "<html>")); });
  Client client(daemon.path(), "1.41");
  auto r = client.get("info");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors().front().message.find("GET /v1.41/info: the answer is not JSON"),
            std::string::npos)
      << r.errors().front().message;
}

TEST(DockerClient, VersionAnswerWithoutApiVersionIsAnError) {
  FakeDaemon daemon([](int fd, const std::string&) { send_all(fd, answer(200, "OK", "{}")); });
  Client client(daemon.path());
  auto r = client.negotiate();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors().front().message.find("not a Docker version answer"), std::string::npos);
  EXPECT_EQ(client.api_version(), "");
}

TEST(DockerClient, BodyOverTheCapIsRefusedFromItsLength) {
  // 300 MB announced, nothing sent: the parser refuses at the header, not after reading.
  FakeDaemon daemon([](int fd, const std::string&) {
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 300000000\r\n\r\n[");
    hold_until_client_closes(fd);
  });
  Client client(daemon.path(), "1.41");
  auto r = client.get("tasks");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors().front().message.find("answer larger than 256 MiB"), std::string::npos)
      << r.errors().front().message;
}

TEST(DockerClient, MissingSocketIsAClearError) {
  Client client("/nonexistent-hsp-dir/docker.sock");
  auto r = client.negotiate();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors().front().message,
            "docker /nonexistent-hsp-dir/docker.sock: GET /version: connect: No such file or "
            "directory");
  std::atomic<bool> stop{false};
  Errors e = Client("/nonexistent-hsp-dir/docker.sock", "1.41")
                 .stream_events(
                     "", [](const json&) {}, stop);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_NE(e[0].message.find("/nonexistent-hsp-dir/docker.sock: GET /v1.41/events?: connect: "),
            std::string::npos)
      << e[0].message;
}

TEST(DockerClient, SocketPathTooLongIsAnError) {
  Client client("/tmp/" + std::string(200, 'x') + "/docker.sock");
  auto r = client.negotiate();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors().front().message.find("the socket path is longer than 107 bytes"),
            std::string::npos)
      << r.errors().front().message;
}

TEST(DockerClient, DaemonThatNeverAnswersIsBounded) {
  // Accepts, reads the request, says nothing: the listing bound (15 s) ends the call.
  FakeDaemon daemon([](int fd, const std::string&) { hold_until_client_closes(fd); });
  Client client(daemon.path(), "1.41");
  auto r = client.get("services");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors().front().message,
            "docker " + daemon.path() + ": GET /v1.41/services: no complete answer within 15 s");
}

TEST(DockerClient, EventsSplitAtAwkwardPlaces) {
  const std::string e1 = R"({"Type":"container","Action":"start","Actor":{"ID":"c1"}})";
  const std::string e2 = R"({"Type":"service","Action":"update","Actor":{"ID":"s1"}})";
  const std::string e3 = R"({"Type":"network","Action":"connect","Actor":{"ID":"n1"}})";
  const std::string e4 = R"({"Type":"config","Action":"create","Actor":{"ID":"cf1"}})";
  FakeDaemon daemon(with_version([&](int fd, const std::string&) {
    send_all(fd, kChunkedHead);
    // e1 cut in the middle of a key, its newline alone in a chunk; e2 and e3 share a chunk
    // with e4's first byte; the rest of e4 and its newline in one chunk.
    const std::vector<std::string> pieces = {e1.substr(0, 10), e1.substr(10), "\n",
                                             e2 + "\n" + e3 + "\n" + e4.substr(0, 1),
                                             e4.substr(1) + "\n"};
    for (const auto& p : pieces) {
      send_all(fd, chunk(p));
      std::this_thread::sleep_for(20ms);
    }
    send_all(fd, "0\r\n\r\n");
    hold_until_client_closes(fd);
  }));
  Client client(daemon.path());
  std::vector<json> seen;
  std::atomic<bool> stop{false};
  Errors errors = client.stream_events(
      "filters=" + Client::escape(R"({"type":{"container":true}})"),
      [&](const json& event) { seen.push_back(event); }, stop);
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0], json::parse(e1));
  EXPECT_EQ(seen[1], json::parse(e2));
  EXPECT_EQ(seen[2], json::parse(e3));
  EXPECT_EQ(seen[3], json::parse(e4));
  // The daemon ended the stream (the last chunk): an error, so that the watcher reconnects.
  EXPECT_EQ(first_error(errors),
            "docker " + daemon.path() +
                ": GET /v1.41/events?filters=%7B%22type%22%3A%7B%22container%22%3Atrue%7D%7D: "
                "event stream closed by the daemon");
  auto requests = daemon.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(first_line(requests[1]),
            "GET /v1.41/events?filters=%7B%22type%22%3A%7B%22container%22%3Atrue%7D%7D "
            "HTTP/1.1");
}

TEST(DockerClient, EventStreamCutMidChunkIsClosed) {
  FakeDaemon daemon([](int fd, const std::string&) {
    send_all(fd, kChunkedHead);
    send_all(fd, chunk(R"({"Type":"container","Action":"die"})"
                       "\n"));
    send_all(fd, "40\r\n{\"Type\":");  // the daemon dies inside a chunk
  });
  Client client(daemon.path(), "1.41");
  int seen = 0;
  std::atomic<bool> stop{false};
  Errors errors = client.stream_events(
      "", [&](const json&) { ++seen; }, stop);
  EXPECT_EQ(seen, 1);
  EXPECT_NE(first_error(errors).find("event stream closed by the daemon"), std::string::npos)
      << first_error(errors);
}

TEST(DockerClient, EventStreamRefusalCarriesDaemonMessage) {
  FakeDaemon daemon([](int fd, const std::string&) {
    send_all(fd, answer(400, "Bad Request",
                        R"({"message":"invalid filter 'typ'"})"
                        "\n"));
  });
  Client client(daemon.path(), "1.41");
  std::atomic<bool> stop{false};
  Errors errors = client.stream_events(
      "filters=x", [](const json&) {}, stop);
  EXPECT_EQ(first_error(errors),
            "docker " + daemon.path() + ": GET /v1.41/events?filters=x: 400 invalid filter 'typ'");
}

TEST(DockerClient, UnparsableEventIsNamedWhenTheStreamEnds) {
  FakeDaemon daemon([](int fd, const std::string&) {
    send_all(fd, kChunkedHead);
    send_all(fd, chunk("not json\n{\"Type\":\"container\"}\n") + "0\r\n\r\n");
  });
  Client client(daemon.path(), "1.41");
  int seen = 0;
  std::atomic<bool> stop{false};
  Errors errors = client.stream_events(
      "", [&](const json&) { ++seen; }, stop);
  EXPECT_EQ(seen, 1);
  EXPECT_NE(
      first_error(errors).find("event stream closed by the daemon (unparsable event: not json)"),
      std::string::npos)
      << first_error(errors);
}

TEST(DockerClient, EventLineWithoutEndIsRefused) {
  FakeDaemon daemon([](int fd, const std::string&) {
    send_all(fd, kChunkedHead);
    const std::string block(64 << 10, 'x');
    for (int i = 0; i < 20; ++i) send_all(fd, chunk(block));  // 1.25 MiB, no newline
    hold_until_client_closes(fd);
  });
  Client client(daemon.path(), "1.41");
  std::atomic<bool> stop{false};
  Errors errors = client.stream_events(
      "", [](const json&) {}, stop);
  EXPECT_NE(first_error(errors).find("no end of line within 1 MiB"), std::string::npos)
      << first_error(errors);
}

TEST(DockerClient, StopEndsAnIdleEventStream) {
  // One event, then silence with the connection open, as dockerd does between events. The
  // stream must end on `stop` alone (an empty error list), not on the daemon.
  FakeDaemon daemon([](int fd, const std::string&) {
    send_all(fd, kChunkedHead);
    send_all(fd, chunk(R"({"Type":"service","Action":"create"})"
                       "\n"));
    hold_until_client_closes(fd);
  });
  Client client(daemon.path(), "1.41");
  std::atomic<bool> stop{false};
  std::atomic<bool> got_event{false};
  std::thread stopper([&] {
    while (!got_event) std::this_thread::sleep_for(10ms);
    std::this_thread::sleep_for(300ms);  // let the client settle into waiting
    stop = true;
  });
  Errors errors = client.stream_events(
      "", [&](const json&) { got_event = true; }, stop);
  stopper.join();
  EXPECT_TRUE(got_event);
  EXPECT_TRUE(errors.empty()) << first_error(errors);
}

TEST(DockerClient, StopEndsAStreamWhoseDaemonNeverAnswers) {
  FakeDaemon daemon([](int fd, const std::string&) { hold_until_client_closes(fd); });
  Client client(daemon.path(), "1.41");
  std::atomic<bool> stop{false};
  std::thread stopper([&] {
    while (daemon.requests().empty()) std::this_thread::sleep_for(10ms);
    stop = true;
  });
  Errors errors = client.stream_events(
      "", [](const json&) {}, stop);
  stopper.join();
  EXPECT_TRUE(errors.empty()) << first_error(errors);
}

TEST(DockerClient, EscapeKeepsUnreservedOnly) {
  EXPECT_EQ(Client::escape(R"({"a b":"x/y~z_1.2-3"})"), "%7B%22a%20b%22%3A%22x%2Fy~z_1.2-3%22%7D");
}

}  // namespace
}  // namespace hsp::docker

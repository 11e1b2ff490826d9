#include "util/log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>

namespace hsp::log {
namespace {

// Captures what the logger writes through a pipe.
class Capture {
 public:
  Capture() {
    EXPECT_EQ(::pipe(fds_), 0);
    set_fd(fds_[1]);
  }
  ~Capture() {
    set_fd(2);
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  std::string read_all() {
    set_fd(2);
    ::close(fds_[1]);
    fds_[1] = -1;
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fds_[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }

 private:
  int fds_[2] = {-1, -1};
};

TEST(Log, OneJsonObjectPerLineWithTypedValues) {
  Capture cap;
  set_level(Level::info);
  info("upstream_failed")
      .kv("conn_id", uint64_t{42})
      .kv("upstream", "127.0.0.1:9000")
      .kv("error", "said \"no\"\n")
      .kv("retries", 2)
      .kv("took", 0.5)
      .kv("retried", true)
      .kv("sites", std::vector<std::string>{"a.localhost", "b\"c"})
      .kv("none", std::vector<std::string>{});
  debug("filtered_out").kv("x", 1);
  std::string out = cap.read_all();
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(out.find('\n'), out.size() - 1) << "exactly one line: " << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["msg"], "upstream_failed");
  EXPECT_EQ(j["conn_id"], 42);
  EXPECT_EQ(j["upstream"], "127.0.0.1:9000");
  EXPECT_EQ(j["error"], "said \"no\"\n");
  EXPECT_EQ(j["retries"], 2);
  EXPECT_DOUBLE_EQ(j["took"].get<double>(), 0.5);
  EXPECT_EQ(j["retried"], true);
  EXPECT_EQ(j["sites"], nlohmann::json::array({"a.localhost", "b\"c"}));
  EXPECT_EQ(j["none"], nlohmann::json::array());
  EXPECT_TRUE(j["ts"].is_number());
}

TEST(Log, ParseLevelAcceptsCaddySpellings) {
  Level l;
  ASSERT_TRUE(parse_level("WARN", l));
  EXPECT_EQ(l, Level::warn);
  EXPECT_FALSE(parse_level("loud", l));
}

}  // namespace
}  // namespace hsp::log

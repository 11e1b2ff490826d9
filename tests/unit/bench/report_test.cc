// The report's JSON: the keys the peers harness reads, and the figures derived from a result.
#include "report.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace hsp::bench {
namespace {

LoadResult sample_result() {
  LoadResult r;
  for (uint64_t us = 1; us <= 1000; ++us) r.latency_ns.record(us * 1000);
  r.requests = 1000;
  r.status[200] = 990;
  r.status[404] = 10;
  r.errors[size_t(ErrorKind::connect)] = 3;
  r.errors[size_t(ErrorKind::timeout)] = 1;
  r.error_example[size_t(ErrorKind::connect)] = "connect: Connection refused";
  r.reconnects = 4;
  r.window_bytes_in = 200'000;
  r.duration_s = 2.0;
  return r;
}

TEST(Report, JsonHasTheHarnessKeys) {
  Options opts = parse_cli({"https://127.0.0.1:8443/", "-c", "8", "-m", "4", "-t", "2"}).options;
  auto j = nlohmann::json::parse(json_report(run_info(opts, Proto::h2, true), sample_result()));
  EXPECT_EQ(j["url"], "https://127.0.0.1:8443/");
  EXPECT_EQ(j["proto"], "h2");
  EXPECT_EQ(j["mode"], "closed");
  EXPECT_TRUE(j["rate"].is_null());
  EXPECT_EQ(j["connections"], 8);
  EXPECT_EQ(j["streams"], 4);
  EXPECT_EQ(j["threads"], 2);
  EXPECT_DOUBLE_EQ(j["duration_s"].get<double>(), 2.0);
  EXPECT_EQ(j["requests"], 1000);
  EXPECT_DOUBLE_EQ(j["rps"].get<double>(), 500.0);
  EXPECT_EQ(j["bytes_in"], 200000);
  EXPECT_DOUBLE_EQ(j["throughput_Bps"].get<double>(), 100000.0);
  EXPECT_EQ(j["status"]["200"], 990);
  EXPECT_EQ(j["status"]["404"], 10);
  EXPECT_EQ(j["errors"]["connect"], 3);
  EXPECT_EQ(j["errors"]["timeout"], 1);
  EXPECT_EQ(j["errors"]["tls"], 0);
  EXPECT_EQ(j["errors"]["protocol"], 0);
  EXPECT_EQ(j["errors"]["reset"], 0);
  EXPECT_FALSE(j["errors"].contains("none"));
  EXPECT_EQ(j["reconnects"], 4);
  const auto& lat = j["latency_us"];
  EXPECT_DOUBLE_EQ(lat["min"].get<double>(), 1.0);
  EXPECT_NEAR(lat["mean"].get<double>(), 500.5, 1e-9);
  EXPECT_NEAR(lat["p50"].get<double>(), 500.0, 0.5);
  EXPECT_NEAR(lat["p90"].get<double>(), 900.0, 0.5);
  EXPECT_NEAR(lat["p99"].get<double>(), 990.0, 0.5);
  EXPECT_NEAR(lat["p999"].get<double>(), 999.0, 0.5);
  EXPECT_DOUBLE_EQ(lat["max"].get<double>(), 1000.0);
}

TEST(Report, OpenLoopAndH2c) {
  Options opts = parse_cli({"http://127.0.0.1:8080/", "--proto", "h2c", "--rate", "250"}).options;
  auto j = nlohmann::json::parse(json_report(run_info(opts, Proto::h2c, false), LoadResult{}));
  EXPECT_EQ(j["mode"], "open");
  EXPECT_DOUBLE_EQ(j["rate"].get<double>(), 250.0);
  EXPECT_EQ(j["proto"], "h2");  // h2c is h2 without TLS
  EXPECT_EQ(j["h2c"], true);    // ... and says so
  EXPECT_EQ(j["tls"], false);
  EXPECT_EQ(j["rps"], 0.0);  // an empty run divides by nothing
  EXPECT_TRUE(j["status"].is_object());
}

TEST(Report, TextNamesStatusesErrorsAndPercentiles) {
  Options opts = parse_cli({"http://127.0.0.1:8080/"}).options;
  std::string text = text_report(run_info(opts, Proto::h1, false), sample_result());
  EXPECT_NE(text.find("500.0 req/s"), std::string::npos) << text;
  EXPECT_NE(text.find("200: 990"), std::string::npos) << text;
  EXPECT_NE(text.find("404: 10"), std::string::npos) << text;
  EXPECT_NE(text.find("connect: 3"), std::string::npos) << text;
  EXPECT_NE(text.find("Connection refused"), std::string::npos) << text;
  EXPECT_NE(text.find("reconnects    4"), std::string::npos) << text;
  EXPECT_NE(text.find("p99.9"), std::string::npos) << text;
}

TEST(Report, NothingSucceededHasNoLatencyFigures) {
  Options opts = parse_cli({"http://127.0.0.1:8080/"}).options;
  LoadResult r;
  r.errors[size_t(ErrorKind::connect)] = 5;
  r.error_example[size_t(ErrorKind::connect)] = "Connection refused";
  r.duration_s = 1.0;
  std::string text = text_report(run_info(opts, Proto::h1, false), r);
  EXPECT_NE(text.find("n/a"), std::string::npos) << text;
  EXPECT_EQ(text.find("0us"), std::string::npos) << text;  // no made-up zero latencies
  auto j = nlohmann::json::parse(json_report(run_info(opts, Proto::h1, false), r));
  EXPECT_TRUE(j["latency_us"]["p50"].is_null());
  EXPECT_TRUE(j["latency_us"]["max"].is_null());
  EXPECT_EQ(j["error_examples"]["connect"], "Connection refused");
  EXPECT_FALSE(j["error_examples"].contains("tls"));  // only kinds that occurred
}

TEST(Report, RetriedDrainAndInterrupt) {
  Options opts = parse_cli({"https://127.0.0.1:8443/", "-m", "10"}).options;
  LoadResult r = sample_result();
  r.retried = 17;
  r.drain_s = 2.5;
  std::string text = text_report(run_info(opts, Proto::h2, true), r);
  EXPECT_NE(text.find("retried       17"), std::string::npos) << text;
  EXPECT_NE(text.find("drain         2.50 s"), std::string::npos) << text;
  EXPECT_EQ(text.find("interrupted"), std::string::npos) << text;
  auto j = nlohmann::json::parse(json_report(run_info(opts, Proto::h2, true), r));
  EXPECT_EQ(j["retried"], 17);
  EXPECT_DOUBLE_EQ(j["drain_s"].get<double>(), 2.5);
  EXPECT_EQ(j["h2c"], false);

  r.drain_s = 0;
  r.interrupted = true;
  r.not_finished = 3;
  text = text_report(run_info(opts, Proto::h2, true), r);
  EXPECT_NE(text.find("interrupted   3 requests in flight not finished"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("drain"), std::string::npos) << text;
  j = nlohmann::json::parse(json_report(run_info(opts, Proto::h2, true), r));
  EXPECT_EQ(j["not_finished"], 3);
  EXPECT_EQ(j["interrupted"], true);
}

}  // namespace
}  // namespace hsp::bench

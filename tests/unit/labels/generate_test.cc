#include "labels/generate.h"

#include <gtest/gtest.h>

namespace hsp::labels {
namespace {

Source labels(std::string name, LabelMap map, std::vector<std::string> targets = {}) {
  Source s;
  s.kind = Source::Kind::labels;
  s.name = std::move(name);
  s.labels = std::move(map);
  s.upstream_targets = std::move(targets);
  return s;
}

TEST(Generate, BaseCaddyfileReplicasAndProblems) {
  Source base;
  base.kind = Source::Kind::caddyfile;
  base.name = "base Caddyfile";
  base.caddyfile = "{\n\tadmin off\n}\nhttp://a.localhost {\n\trespond /health ok 200\n}\n";
  const std::vector<Source> sources{
      base,
      labels("container one",
             {{"caddy", "http://a.localhost"},
              {"caddy.reverse_proxy", "{{upstreams 8080}}"},
              {"caddy_ingress_network", "net"},
              {"other", "x"}},
             {"127.0.0.1"}),
      labels("container two",
             {{"caddy", "http://a.localhost"},
              {"caddy.reverse_proxy", "{{upstreams 8080}}"},
              {"caddy..bad", "x"}},
             {"127.0.0.2"}),
      labels("service broken", {{"caddy", "http://b.localhost"}, {"caddy.respond", "{{nope}}"}}),
      labels("service bad-directive",
             {{"caddy", "http://c.localhost"}, {"caddy.no_such_directive", ""}}),
  };
  const auto g = generate(sources);
  // File blocks keep their position order ahead of label blocks; replicas share one proxy.
  EXPECT_EQ(g.caddyfile,
            "{\n\tadmin off\n}\nhttp://a.localhost {\n\trespond /health ok 200\n"
            "\treverse_proxy 127.0.0.1:8080 127.0.0.2:8080\n}\n");
  ASSERT_EQ(g.problems.size(), 2u);
  EXPECT_NE(g.problems[0].find("container two: label caddy..bad"), std::string::npos);
  EXPECT_NE(g.problems[1].find("service broken: label caddy.respond"), std::string::npos);
  EXPECT_NE(g.problems[1].find("\"nope\""), std::string::npos);
  ASSERT_EQ(g.dropped.size(), 1u);
  EXPECT_EQ(g.dropped[0].block, "http://c.localhost {");
}

TEST(Generate, NothingGivesCdpsEmptyMarker) {
  EXPECT_EQ(generate({}).caddyfile, "# Empty caddyfile");
  EXPECT_EQ(generate({labels("container x", {{"traefik.enable", "true"}})}).caddyfile,
            "# Empty caddyfile");
}

// The blocks handed back are exactly what the text says, with and without processing (the
// watcher compares generations site by site from them instead of re-parsing the text).
TEST(Generate, BlocksAreTheServedText) {
  Source good;
  good.name = "service a";
  good.labels = {{"caddy", "http://a.localhost"}, {"caddy.respond", "a"}};
  Source bad;
  bad.name = "service b";
  bad.labels = {{"caddy", "http://b.localhost"}, {"caddy.no_such_directive", "x"}};
  for (bool processing : {true, false}) {
    GenerateOptions opts;
    opts.process = processing;
    const auto out = generate({good, bad}, opts);
    EXPECT_EQ(print_blocks(out.blocks), out.caddyfile) << processing;
    EXPECT_EQ(out.blocks.size(), processing ? 1u : 2u);
  }
}

}  // namespace
}  // namespace hsp::labels

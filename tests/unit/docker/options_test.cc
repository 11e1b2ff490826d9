// CDP's options: names, defaults, environment-over-flag precedence and the start-up errors for
// values CDP would silently ignore.
#include <gtest/gtest.h>

#include "docker-watch/options.h"

namespace hsp::docker {
namespace {

Getenv env_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::string first_error(const Result<Options>& r) {
  return r.ok() ? std::string("(no error)") : r.errors().front().message;
}

TEST(DockerOptions, DefaultsAreCdps) {
  auto o = resolve({}, env_of({}));
  ASSERT_TRUE(o.ok()) << first_error(o);
  EXPECT_EQ(o->mode, Mode::standalone);
  EXPECT_EQ(o->docker_sockets, std::vector<std::string>{"/var/run/docker.sock"});
  EXPECT_EQ(o->label_prefix, "caddy");
  EXPECT_TRUE(o->proxy_service_tasks);
  EXPECT_TRUE(o->process_caddyfile);
  EXPECT_FALSE(o->scan_stopped_containers);
  EXPECT_EQ(o->polling_interval, std::chrono::seconds(30));
  EXPECT_EQ(o->event_throttle_interval, std::chrono::milliseconds(100));
  EXPECT_TRUE(o->ingress_networks.empty());
}

TEST(DockerOptions, DockerHostGivesTheSocket) {
  auto o = resolve({}, env_of({{"DOCKER_HOST", "unix:///run/x/docker.sock"}}));
  ASSERT_TRUE(o.ok()) << first_error(o);
  EXPECT_EQ(o->docker_sockets, std::vector<std::string>{"/run/x/docker.sock"});
}

TEST(DockerOptions, EnvironmentWinsOverFlagUnlessEmpty) {
  FlagValues flags{{"label-prefix", "flagp"}, {"polling-interval", "10s"}};
  auto o = resolve(flags, env_of({{"CADDY_DOCKER_LABEL_PREFIX", "envp"},
                                  {"CADDY_DOCKER_POLLING_INTERVAL", ""}}));
  ASSERT_TRUE(o.ok()) << first_error(o);
  EXPECT_EQ(o->label_prefix, "envp");
  EXPECT_EQ(o->polling_interval, std::chrono::seconds(10));
}

TEST(DockerOptions, ListsAndBooleans) {
  auto o = resolve({{"ingress-networks", "caddy, front"}, {"proxy-service-tasks", "false"}},
                   env_of({{"CADDY_DOCKER_SCAN_STOPPED_CONTAINERS", "YES"},
                           {"CADDY_DOCKER_SOCKETS", "unix:///a.sock,/b.sock"}}));
  ASSERT_TRUE(o.ok()) << first_error(o);
  EXPECT_EQ(o->ingress_networks, (std::vector<std::string>{"caddy", "front"}));
  EXPECT_FALSE(o->proxy_service_tasks);
  EXPECT_TRUE(o->scan_stopped_containers);
  EXPECT_EQ(o->docker_sockets, (std::vector<std::string>{"/a.sock", "/b.sock"}));
  EXPECT_EQ(o->docker_apis_version.size(), 2u);
}

TEST(DockerOptions, ControllerAndServerModesNeedASecretAndAnAddress) {
  EXPECT_EQ(first_error(resolve({{"mode", "primary"}}, env_of({}))),
            "--mode='primary': expected standalone, controller or server");
  EXPECT_NE(
      first_error(resolve({{"mode", "controller"}}, env_of({}))).find("needs HSP_PUSH_SECRET_FILE"),
      std::string::npos);
  EXPECT_NE(first_error(resolve({{"mode", "server"}, {"push-secret-file", "/s"}}, env_of({})))
                .find("needs CADDY_CONTROLLER_NETWORK"),
            std::string::npos);
  EXPECT_EQ(first_error(resolve({}, env_of({{"HSP_CONTROLLER_SERVERS", "10.0.0.5"}}))),
            "HSP_CONTROLLER_SERVERS='10.0.0.5': '10.0.0.5': expected host:port");
  auto c = resolve({{"push-secret-file", "/run/secrets/s"}},
                   env_of({{"CADDY_DOCKER_MODE", "Controller"},
                           {"CADDY_CONTROLLER_NETWORK", "10.200.200.0/24"},
                           {"HSP_CONTROLLER_SERVERS", "edge1:2019, [::1]:2019"},
                           {"HSP_PUSH_CHECK_INTERVAL", "2s"}}));
  ASSERT_TRUE(c.ok()) << first_error(c);
  EXPECT_EQ(c->mode, Mode::controller);
  EXPECT_EQ(c->controller_servers, (std::vector<std::string>{"edge1:2019", "[::1]:2019"}));
  EXPECT_EQ(c->push_check_interval, std::chrono::milliseconds(2000));
  auto s =
      resolve({{"mode", "server"}, {"push-secret-file", "/s"}, {"admin-listen", "10.1.1.1:2019"}},
              env_of({}));
  ASSERT_TRUE(s.ok()) << first_error(s);
  EXPECT_EQ(s->mode, Mode::server);
  EXPECT_EQ(s->admin_listen, "10.1.1.1:2019");
}

TEST(DockerOptions, InvalidValuesNameTheOptionAndItsSource) {
  EXPECT_EQ(first_error(resolve({{"polling-interval", "soon"}}, env_of({}))),
            "--polling-interval='soon': expected a duration such as 100ms, 30s or 1m");
  EXPECT_EQ(first_error(resolve({}, env_of({{"CADDY_DOCKER_PROXY_SERVICE_TASKS", "maybe"}}))),
            "CADDY_DOCKER_PROXY_SERVICE_TASKS='maybe': expected true or false");
  EXPECT_EQ(first_error(resolve({{"controller-network", "caddy_controller"}}, env_of({}))),
            "--controller-network='caddy_controller': expected a CIDR such as 10.200.200.0/24");
  EXPECT_NE(first_error(resolve({}, env_of({{"DOCKER_HOST", "tcp://127.0.0.1:2375"}})))
                .find("only unix sockets"),
            std::string::npos);
  EXPECT_EQ(first_error(resolve({{"polling-interval", "10ms"}}, env_of({}))),
            "--polling-interval='10ms': must be at least 1000ms");
  EXPECT_EQ(first_error(resolve({{"label-prefix", "a.b"}}, env_of({}))),
            "--label-prefix='a.b': expected a non-empty prefix without dots or spaces");
}

// The same words for `--flag false` on the command line and for environment variables.
TEST(DockerOptions, BooleanWords) {
  for (const char* t : {"true", "YES", "1"}) EXPECT_EQ(parse_bool(t), std::optional<bool>(true));
  for (const char* f : {"false", "No", "0"}) EXPECT_EQ(parse_bool(f), std::optional<bool>(false));
  for (const char* x : {"maybe", "", "on"}) EXPECT_FALSE(parse_bool(x).has_value()) << x;
}

TEST(DockerOptions, GoDurations) {
  using std::chrono::nanoseconds;
  EXPECT_EQ(parse_go_duration("100ms"), nanoseconds(100'000'000));
  EXPECT_EQ(parse_go_duration("1m30s"), nanoseconds(90'000'000'000));
  EXPECT_EQ(parse_go_duration("1.5h"), nanoseconds(5'400'000'000'000));
  EXPECT_EQ(parse_go_duration("0"), nanoseconds(0));
  EXPECT_FALSE(parse_go_duration("30"));
  EXPECT_FALSE(parse_go_duration("s"));
  EXPECT_FALSE(parse_go_duration("1x"));
  EXPECT_FALSE(parse_go_duration(""));
}

TEST(DockerOptions, EveryOptionIsDescribedOnce) {
  const std::string help = describe_options();
  for (const char* flag :
       {"mode", "docker-sockets", "ingress-networks", "polling-interval", "event-throttle-interval",
        "caddyfile-path", "proxy-service-tasks", "scan-stopped-containers", "controller-network",
        "label-prefix", "process-caddyfile"}) {
    EXPECT_TRUE(is_option_flag(flag)) << flag;
    std::string needle = std::string("--") + flag + (is_bool_flag(flag) ? "[" : " ");
    EXPECT_EQ(help.find(needle), help.rfind(needle)) << flag;
    EXPECT_NE(help.find(needle), std::string::npos) << flag;
  }
  EXPECT_FALSE(is_option_flag("config"));
}

}  // namespace
}  // namespace hsp::docker

// Docker's listings -> sources for the label translator: the `{{upstreams}}` targets of
// services and containers, ingress selection and CDP's source order. The JSON has the shape of
// dockerd 20.10's answers (API 1.41); the same code runs against a real daemon in
// tests/integration/docker/.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "docker-watch/state.h"

namespace hsp::docker {
namespace {

using nlohmann::json;

const json kNetworks = json::parse(R"([
  {"Name": "ingress", "Id": "mesh0", "Ingress": true, "Driver": "overlay"},
  {"Name": "caddy", "Id": "net1", "Ingress": false, "Driver": "overlay"},
  {"Name": "backend", "Id": "net2", "Ingress": false, "Driver": "overlay"}
])");

const json kServices = json::parse(R"([
  {"ID": "s2", "Spec": {"Name": "web", "Labels": {"caddy": "web.example.com",
    "caddy.reverse_proxy": "{{upstreams 8080}}"}},
   "Endpoint": {"VirtualIPs": [{"NetworkID": "net1", "Addr": "10.0.1.2/24"}]}},
  {"ID": "s1", "Spec": {"Name": "api", "Labels": {"caddy": "web.example.com",
    "caddy.reverse_proxy": "{{upstreams https}}", "caddy_ingress_network": "backend"}}},
  {"ID": "s3", "Spec": {"Name": "db", "Labels": {"com.example": "x"}}}
])");

const json kTasks = json::parse(R"([
  {"ID": "t1", "ServiceID": "s2", "Status": {"State": "running"}, "DesiredState": "running",
   "NetworksAttachments": [
     {"Network": {"ID": "mesh0", "Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.9/24"]},
     {"Network": {"ID": "net1", "Spec": {"Name": "caddy"}}, "Addresses": ["10.0.1.9/24"]}]},
  {"ID": "t2", "ServiceID": "s2", "Status": {"State": "running"},
   "NetworksAttachments": [
     {"Network": {"ID": "net1", "Spec": {"Name": "caddy"}}, "Addresses": ["10.0.1.10/24"]}]},
  {"ID": "t3", "ServiceID": "s2", "Status": {"State": "starting"},
   "NetworksAttachments": [
     {"Network": {"ID": "net1", "Spec": {"Name": "caddy"}}, "Addresses": ["10.0.1.11/24"]}]},
  {"ID": "t4", "ServiceID": "s1", "Status": {"State": "running"},
   "NetworksAttachments": [
     {"Network": {"ID": "net1", "Spec": {"Name": "caddy"}}, "Addresses": ["10.0.1.20/24"]},
     {"Network": {"ID": "net2", "Spec": {"Name": "backend"}},
      "Addresses": ["10.0.2.20/24", "fd00::20/64"]}]}
])");

const json kContainers = json::parse(R"([
  {"Id": "c2", "Names": ["/zeta"], "State": "running",
   "Labels": {"caddy": "zeta.localhost", "caddy.reverse_proxy": "{{upstreams 80}}"},
   "NetworkSettings": {"Networks": {"caddy": {"NetworkID": "net1", "IPAddress": "10.0.1.30"},
                                    "bridge": {"NetworkID": "br0", "IPAddress": "172.17.0.2"}}}},
  {"Id": "c1", "Names": ["/alpha"], "State": "exited",
   "Labels": {"caddy_1": "alpha.localhost", "caddy_1.respond": "hi"},
   "NetworkSettings": {"Networks": {"caddy": {"NetworkID": "net1", "IPAddress": ""}}}},
  {"Id": "c3", "Names": ["/plain"], "Labels": {},
   "NetworkSettings": {"Networks": {}}}
])");

DaemonState daemon_state() {
  DaemonState d;
  d.socket = "/run/docker.sock";
  d.swarm = true;
  d.networks = *parse_networks(kNetworks);
  d.services = *parse_services(kServices);
  d.tasks = *parse_tasks(kTasks);
  d.containers = *parse_containers(kContainers);
  return d;
}

TEST(DockerState, SwarmIsActiveOnAManagerOnly) {
  auto manager =
      json::parse(R"({"Swarm": {"LocalNodeState": "active", "ControlAvailable": true}})");
  auto worker =
      json::parse(R"({"Swarm": {"LocalNodeState": "active", "ControlAvailable": false}})");
  auto none = json::parse(R"({"Swarm": {"LocalNodeState": "inactive"}})");
  EXPECT_TRUE(*parse_swarm_active(manager));
  EXPECT_FALSE(*parse_swarm_active(worker));
  EXPECT_FALSE(*parse_swarm_active(none));
  EXPECT_FALSE(parse_swarm_active(json::array()).ok());
}

TEST(DockerState, ListingsOfTheWrongShapeAreErrorsNamingTheListing) {
  auto r = parse_services(json::parse(R"({"message": "This node is not a swarm manager."})"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors().front().message.find("/services"), std::string::npos);
}

TEST(DockerState, IngressByNameExcludesTheRoutingMesh) {
  auto d = daemon_state();
  IngressSet set = ingress_from_names({"caddy", "ingress", "missing"}, {d});
  EXPECT_EQ(set.ids, (std::set<std::string>{"net1"}));
  EXPECT_EQ(set.names, (std::set<std::string>{"caddy"}));
}

TEST(DockerState, IngressFromTheGatewaysOwnContainer) {
  auto d = daemon_state();
  auto inspect = json::parse(R"({"NetworkSettings": {"Networks": {
      "ingress": {"NetworkID": "mesh0"}, "caddy": {"NetworkID": "net1"}}}})");
  IngressSet set = ingress_from_container(inspect, {d});
  EXPECT_EQ(set.ids, (std::set<std::string>{"net1"}));
}

TEST(DockerState, ServiceTargetsAreRunningTaskAddressesOnIngressNetworks) {
  auto d = daemon_state();
  IngressSet set = ingress_from_names({"caddy"}, {d});
  // t3 is not running; the routing-mesh address of t1 is not on an ingress network.
  EXPECT_EQ(service_targets(d.services[0], d.tasks, set, true),
            (std::vector<std::string>{"10.0.1.10", "10.0.1.9"}));
  // caddy_ingress_network pins the network by name; IPv6 gets brackets.
  EXPECT_EQ(service_targets(d.services[1], d.tasks, set, true),
            (std::vector<std::string>{"10.0.2.20", "[fd00::20]"}));
  // proxy-service-tasks off: the service name (Swarm's DNS gives the VIP).
  EXPECT_EQ(service_targets(d.services[0], d.tasks, set, false), (std::vector<std::string>{"web"}));
  // No ingress network known: nothing, as in CDP.
  EXPECT_TRUE(service_targets(d.services[0], d.tasks, IngressSet{}, true).empty());
}

TEST(DockerState, ContainerTargetsMatchByNetworkIdOrName) {
  auto d = daemon_state();
  IngressSet by_name;
  by_name.names = {"caddy"};
  EXPECT_EQ(container_targets(d.containers[0], by_name), (std::vector<std::string>{"10.0.1.30"}));
  IngressSet by_id;
  by_id.ids = {"net1"};
  EXPECT_EQ(container_targets(d.containers[0], by_id), (std::vector<std::string>{"10.0.1.30"}));
  // A stopped container has no address.
  EXPECT_TRUE(container_targets(d.containers[1], by_id).empty());
}

TEST(DockerState, SourcesInCdpOrderWithTargetsAndWarnings) {
  auto d = daemon_state();
  d.configs.push_back(*parse_config(json::parse(
      R"({"ID": "cfg1", "Spec": {"Name": "base", "Data": "KGJhc2UpIHsKCWVuY29kZSBnemlwCn0K"}})")));
  Options o;
  Built built = build_sources({d}, ingress_from_names({"caddy"}, {d}), o);
  std::vector<std::string> names;
  for (const auto& s : built.sources) names.push_back(s.name);
  // Configs, then containers, then services, each by name; unlabelled resources are left out.
  EXPECT_EQ(names, (std::vector<std::string>{"swarm config base", "container alpha",
                                             "container zeta", "service api", "service web"}));
  EXPECT_EQ(built.sources[0].caddyfile, "(base) {\n\tencode gzip\n}\n");
  EXPECT_EQ(built.sources[2].upstream_targets, (std::vector<std::string>{"10.0.1.30"}));
  EXPECT_EQ(built.sources[4].upstream_targets, (std::vector<std::string>{"10.0.1.10", "10.0.1.9"}));
  // alpha is stopped (no address): warned, since it has networks but no usable address.
  ASSERT_EQ(built.warnings.size(), 1u);
  EXPECT_NE(built.warnings[0].find("container alpha"), std::string::npos);
}

TEST(DockerState, LabelPrefixSelectsTheResources) {
  auto d = daemon_state();
  Options o;
  o.label_prefix = "proxy";
  d.services[2].labels = {{"proxy", "db.localhost"}, {"proxy.respond", "db"}};
  Built built = build_sources({d}, IngressSet{}, o);
  ASSERT_EQ(built.sources.size(), 1u);
  EXPECT_EQ(built.sources[0].name, "service db");
}

TEST(DockerState, GeneratedCaddyfileMergesServicesThatShareASite) {
  auto d = daemon_state();
  d.containers.clear();
  Options o;
  Built built = build_sources({d}, ingress_from_names({"caddy"}, {d}), o);
  labels::GenerateOptions gen;
  gen.process = false;
  auto out = labels::generate(built.sources, gen);
  EXPECT_TRUE(out.problems.empty());
  EXPECT_EQ(out.caddyfile,
            "web.example.com {\n"
            "\treverse_proxy https://10.0.2.20 https://[fd00::20] 10.0.1.10:8080 10.0.1.9:8080\n"
            "}\n");
}

}  // namespace
}  // namespace hsp::docker

namespace hsp::docker {
namespace {

TEST(DockerState, ControlledServersAreLabelledTasksAndContainersInTheControllerNetwork) {
  auto d = daemon_state();
  // web (s2) runs t1 (mesh 10.0.0.9, caddy 10.0.1.9) and t2 (10.0.1.10); t3 is not running.
  d.services[0].labels["caddy_controlled_server"] = "";
  d.containers[0].labels["caddy_controlled_server"] = "true";  // zeta: 10.0.1.30, 172.17.0.2
  EXPECT_EQ(controlled_servers({d}, "10.0.1.0/24", 2019),
            (std::vector<std::string>{"10.0.1.10:2019", "10.0.1.30:2019", "10.0.1.9:2019"}));
  // Another controller network: only addresses inside it count.
  EXPECT_EQ(controlled_servers({d}, "10.0.0.0/24", 2019),
            (std::vector<std::string>{"10.0.0.9:2019"}));
  // api (s1) has an IPv6 address; unlabelled it is not a server, labelled it is.
  EXPECT_TRUE(controlled_servers({d}, "fd00::/64", 2019).empty());
  d.services[1].labels["caddy_controlled_server"] = "";
  EXPECT_EQ(controlled_servers({d}, "fd00::/64", 2019),
            (std::vector<std::string>{"[fd00::20]:2019"}));
}

}  // namespace
}  // namespace hsp::docker

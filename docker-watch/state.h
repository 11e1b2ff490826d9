// What one generation cycle reads from Docker, and how it becomes the label translator's
// sources (docs/label-dialect.md §0, §1a.7, §1a.8). Parsing and source building are pure
// functions of the listings, so they are tested on Docker's JSON without a daemon; fetch()
// is the part that talks to the daemon.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "docker-watch/client.h"
#include "docker-watch/options.h"
#include "labels/generate.h"
#include "util/error.h"

namespace hsp::docker {

struct Network {
  std::string id;
  std::string name;
  bool routing_mesh = false;  // Swarm's `ingress` network (Ingress: true): never an upstream path
};

struct TaskAttachment {
  std::string network_id;
  std::string network_name;
  std::vector<std::string> addresses;  // as Docker gives them: "10.0.1.5/24"
};

struct Task {
  std::string id;
  std::string service_id;
  std::string state;  // Status.State
  std::vector<TaskAttachment> networks;
};

struct Service {
  std::string id;
  std::string name;
  labels::LabelMap labels;
  std::vector<std::string> vip_network_ids;  // Endpoint.VirtualIPs[].NetworkID
};

struct ContainerNetwork {
  std::string name;  // the key in NetworkSettings.Networks
  std::string network_id;
  std::string ipv4;  // IPAddress; empty when the container is not running
};

struct Container {
  std::string id;
  std::string name;  // without the leading '/'
  labels::LabelMap labels;
  std::vector<ContainerNetwork> networks;
};

struct SwarmConfig {
  std::string id;
  std::string name;
  std::string data;  // decoded Spec.Data: Caddyfile text
};

// One daemon's view. Swarm parts are empty when the node is not an active Swarm manager.
struct DaemonState {
  std::string socket;
  bool swarm = false;
  std::vector<Network> networks;
  std::vector<Service> services;
  std::vector<Task> tasks;
  std::vector<Container> containers;
  std::vector<SwarmConfig> configs;
};

// The networks whose addresses `{{upstreams}}` uses: IDs and names.
struct IngressSet {
  std::set<std::string> ids;
  std::set<std::string> names;
  bool contains(const std::string& id, const std::string& name) const {
    return ids.count(id) || (!name.empty() && names.count(name));
  }
};

// Parsers for the listings (GET /info, /networks, /services, /tasks, /containers/json,
// /configs/{id}). Entries without the fields that matter are skipped; a body of the wrong shape
// is an error naming the listing.
Result<bool> parse_swarm_active(const nlohmann::json& info);
Result<std::vector<Network>> parse_networks(const nlohmann::json& list);
Result<std::vector<Service>> parse_services(const nlohmann::json& list);
Result<std::vector<Task>> parse_tasks(const nlohmann::json& list);
Result<std::vector<Container>> parse_containers(const nlohmann::json& list);
Result<SwarmConfig> parse_config(const nlohmann::json& config);

// The gateway's own container: its ID from /proc/self/cgroup, then /proc/self/mountinfo, then
// the host name (CDP's order); empty when not in a container.
std::string own_container_id();

// Ingress networks for this cycle: the named ones (routing mesh excluded), or those of the
// gateway's own container (from the container's inspect JSON).
IngressSet ingress_from_names(const std::vector<std::string>& names,
                              const std::vector<DaemonState>& daemons);
IngressSet ingress_from_container(const nlohmann::json& inspect,
                                  const std::vector<DaemonState>& daemons);

// `{{upstreams}}` targets (sorted; IPv6 in brackets so a port can follow).
std::vector<std::string> container_targets(const Container& c, const IngressSet& ingress);
std::vector<std::string> service_targets(const Service& s, const std::vector<Task>& tasks,
                                         const IngressSet& ingress, bool proxy_service_tasks);

struct Built {
  std::vector<labels::Source> sources;
  std::vector<std::string> warnings;  // "service web is not in the same network as the gateway"
};

// Sources in CDP's order: per daemon, Swarm configs labelled <prefix>, containers, services;
// only resources with labels under the prefix take part. Within a kind, resources are ordered
// by name then ID (CDP takes Docker's listing order, which is not stable across daemons and
// restarts, and the order of merged upstream lists follows it).
Built build_sources(const std::vector<DaemonState>& daemons, const IngressSet& ingress,
                    const Options& options);

// The label that marks a controller's servers (CDP's): on a service, each running task is a
// server; on a container, the container is.
inline constexpr std::string_view kControlledServerLabel = "caddy_controlled_server";

// The admin addresses ("ip:port", IPv6 in brackets) of the controlled servers whose addresses
// lie in `controller_network` (a CIDR), sorted and without duplicates. Addresses outside it are
// not servers' admin addresses: the controller network is the only one they listen on.
std::vector<std::string> controlled_servers(const std::vector<DaemonState>& daemons,
                                            const std::string& controller_network, int port);

// Reads one daemon's state. Any failed listing fails the whole read: a daemon that cannot be
// listed never counts as one without services.
Result<DaemonState> fetch(Client& client, const Options& options);

}  // namespace hsp::docker

#include "docker-watch/state.h"

#include "cluster/admin_http.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

namespace hsp::docker {
namespace {

using nlohmann::json;

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

const json& member(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

labels::LabelMap label_map(const json& j) {
  labels::LabelMap out;
  if (!j.is_object()) return out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.value().is_string()) out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

Error shape_error(const char* listing) {
  return Error{{}, std::string("docker: ") + listing + ": unexpected answer (not a JSON array)"};
}

std::string base64_decode(const std::string& in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  int acc = 0, bits = 0;
  for (char c : in) {
    int v = value(c);
    if (v < 0) continue;  // padding and line breaks
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

// "10.0.1.5/24" -> "10.0.1.5"; IPv6 gets brackets so that `{{upstreams 8080}}` yields a valid
// host:port (CDP appends the port to a bare IPv6 address, which no proxy can parse).
std::string target_address(std::string addr) {
  if (auto slash = addr.find('/'); slash != std::string::npos) addr.resize(slash);
  if (addr.find(':') != std::string::npos && addr.front() != '[') addr = "[" + addr + "]";
  return addr;
}

bool has_prefixed_labels(const labels::LabelMap& all, const std::string& prefix) {
  return !labels::select_labels(all, prefix).empty();
}

template <typename T>
void sort_by_name(std::vector<const T*>& v) {
  std::sort(v.begin(), v.end(), [](const T* a, const T* b) {
    return a->name != b->name ? a->name < b->name : a->id < b->id;
  });
}

}  // namespace

Result<bool> parse_swarm_active(const json& info) {
  if (!info.is_object()) return Error{{}, "docker: /info: unexpected answer"};
  const json& swarm = member(info, "Swarm");
  // Services, tasks and configs can be listed on an active manager only; on a worker they answer
  // "This node is not a swarm manager", which must not fail every cycle.
  const json& control = member(swarm, "ControlAvailable");
  return str(swarm, "LocalNodeState") == "active" && control.is_boolean() && control.get<bool>();
}

Result<std::vector<Network>> parse_networks(const json& list) {
  if (!list.is_array()) return shape_error("/networks");
  std::vector<Network> out;
  for (const auto& n : list) {
    Network net{str(n, "Id"), str(n, "Name"), false};
    if (net.id.empty()) continue;
    const json& ingress = member(n, "Ingress");
    net.routing_mesh = ingress.is_boolean() && ingress.get<bool>();
    out.push_back(std::move(net));
  }
  return out;
}

Result<std::vector<Service>> parse_services(const json& list) {
  if (!list.is_array()) return shape_error("/services");
  std::vector<Service> out;
  for (const auto& s : list) {
    Service svc;
    svc.id = str(s, "ID");
    const json& spec = member(s, "Spec");
    svc.name = str(spec, "Name");
    svc.labels = label_map(member(spec, "Labels"));
    for (const auto& vip : member(member(s, "Endpoint"), "VirtualIPs")) {
      svc.vip_network_ids.push_back(str(vip, "NetworkID"));
    }
    if (!svc.id.empty()) out.push_back(std::move(svc));
  }
  return out;
}

Result<std::vector<Task>> parse_tasks(const json& list) {
  if (!list.is_array()) return shape_error("/tasks");
  std::vector<Task> out;
  for (const auto& t : list) {
    Task task;
    task.id = str(t, "ID");
    task.service_id = str(t, "ServiceID");
    task.state = str(member(t, "Status"), "State");
    for (const auto& a : member(t, "NetworksAttachments")) {
      TaskAttachment att;
      const json& net = member(a, "Network");
      att.network_id = str(net, "ID");
      att.network_name = str(member(net, "Spec"), "Name");
      for (const auto& addr : member(a, "Addresses")) {
        if (addr.is_string()) att.addresses.push_back(addr.get<std::string>());
      }
      task.networks.push_back(std::move(att));
    }
    if (!task.service_id.empty()) out.push_back(std::move(task));
  }
  return out;
}

Result<std::vector<Container>> parse_containers(const json& list) {
  if (!list.is_array()) return shape_error("/containers/json");
  std::vector<Container> out;
  for (const auto& c : list) {
    Container ct;
    ct.id = str(c, "Id");
    const json& names = member(c, "Names");
    if (names.is_array() && !names.empty() && names[0].is_string()) {
      ct.name = names[0].get<std::string>();
      if (!ct.name.empty() && ct.name[0] == '/') ct.name.erase(0, 1);
    }
    ct.labels = label_map(member(c, "Labels"));
    const json& nets = member(member(c, "NetworkSettings"), "Networks");
    if (nets.is_object()) {
      for (auto it = nets.begin(); it != nets.end(); ++it) {
        ct.networks.push_back(
            {it.key(), str(it.value(), "NetworkID"), str(it.value(), "IPAddress")});
      }
    }
    if (!ct.id.empty()) out.push_back(std::move(ct));
  }
  return out;
}

Result<SwarmConfig> parse_config(const json& config) {
  if (!config.is_object()) return Error{{}, "docker: /configs: unexpected answer"};
  const json& spec = member(config, "Spec");
  return SwarmConfig{str(config, "ID"), str(spec, "Name"), base64_decode(str(spec, "Data"))};
}

std::string own_container_id() {
  auto find_id = [](const std::string& text, const std::string& after) -> std::string {
    size_t pos = 0;
    while ((pos = text.find(after, pos)) != std::string::npos) {
      pos += after.size();
      size_t n = 0;
      while (pos + n < text.size() && std::isxdigit(static_cast<unsigned char>(text[pos + n])) &&
             !std::isupper(static_cast<unsigned char>(text[pos + n])))
        ++n;
      if (n == 64) return text.substr(pos, 64);
    }
    return {};
  };
  auto read = [](const char* path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  // cgroup v1: ".../docker/<id>" or ".../docker-<id>.scope".
  std::string cgroup = read("/proc/self/cgroup");
  for (const char* marker : {"/docker/", "/docker-"}) {
    if (auto id = find_id(cgroup, marker); !id.empty()) return id;
  }
  // cgroup v2 hides the ID from /proc/self/cgroup; Docker's bind mounts show it.
  if (auto id = find_id(read("/proc/self/mountinfo"), "/containers/"); !id.empty()) return id;
  // Docker's default host name is the short container ID; only the daemon can tell whether it
  // is one, so the caller's inspect decides.
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) {
    std::string h = host;
    bool hex = h.size() == 12;
    for (char c : h) hex = hex && std::isxdigit(static_cast<unsigned char>(c));
    if (hex) return h;
  }
  return {};
}

IngressSet ingress_from_names(const std::vector<std::string>& names,
                              const std::vector<DaemonState>& daemons) {
  IngressSet out;
  for (const auto& d : daemons) {
    for (const auto& n : d.networks) {
      if (n.routing_mesh) continue;
      if (std::find(names.begin(), names.end(), n.name) == names.end()) continue;
      out.ids.insert(n.id);
      out.names.insert(n.name);
    }
  }
  return out;
}

IngressSet ingress_from_container(const json& inspect, const std::vector<DaemonState>& daemons) {
  std::set<std::string> mesh;
  for (const auto& d : daemons)
    for (const auto& n : d.networks)
      if (n.routing_mesh) mesh.insert(n.id);
  IngressSet out;
  const json& nets = member(member(inspect, "NetworkSettings"), "Networks");
  if (!nets.is_object()) return out;
  for (auto it = nets.begin(); it != nets.end(); ++it) {
    std::string id = str(it.value(), "NetworkID");
    if (mesh.count(id)) continue;
    out.ids.insert(id);
    out.names.insert(it.key());
  }
  return out;
}

std::vector<std::string> container_targets(const Container& c, const IngressSet& ingress) {
  std::vector<std::string> out;
  auto pinned = c.labels.find("caddy_ingress_network");
  for (const auto& n : c.networks) {
    if (n.ipv4.empty()) continue;
    bool use = pinned != c.labels.end() ? n.name == pinned->second
                                        : ingress.contains(n.network_id, n.name);
    if (use) out.push_back(target_address(n.ipv4));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> service_targets(const Service& s, const std::vector<Task>& tasks,
                                         const IngressSet& ingress, bool proxy_service_tasks) {
  if (!proxy_service_tasks) return {s.name};
  std::vector<std::string> out;
  auto pinned = s.labels.find("caddy_ingress_network");
  for (const auto& t : tasks) {
    if (t.service_id != s.id || t.state != "running") continue;
    for (const auto& a : t.networks) {
      // CDP matches task attachments by network ID only (not by name).
      bool use = pinned != s.labels.end() ? a.network_name == pinned->second
                                          : ingress.ids.count(a.network_id) > 0;
      if (!use) continue;
      for (const auto& addr : a.addresses) out.push_back(target_address(addr));
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

Built build_sources(const std::vector<DaemonState>& daemons, const IngressSet& ingress,
                    const Options& options) {
  Built out;
  for (const auto& d : daemons) {
    std::vector<const SwarmConfig*> configs;
    for (const auto& c : d.configs) configs.push_back(&c);
    sort_by_name(configs);
    for (const auto* c : configs) {
      labels::Source src;
      src.kind = labels::Source::Kind::caddyfile;
      src.name = "swarm config " + c->name;
      src.caddyfile = c->data;
      out.sources.push_back(std::move(src));
    }

    std::vector<const Container*> containers;
    for (const auto& c : d.containers)
      if (has_prefixed_labels(c.labels, options.label_prefix)) containers.push_back(&c);
    sort_by_name(containers);
    for (const auto* c : containers) {
      labels::Source src;
      src.name = "container " + c->name;
      src.labels = c->labels;
      src.upstream_targets = container_targets(*c, ingress);
      if (src.upstream_targets.empty() && !c->networks.empty()) {
        out.warnings.push_back("container " + c->name +
                               " is not in the same network as the gateway: {{upstreams}} "
                               "is empty (set CADDY_INGRESS_NETWORKS or caddy_ingress_network)");
      }
      out.sources.push_back(std::move(src));
    }

    std::vector<const Service*> services;
    for (const auto& s : d.services)
      if (has_prefixed_labels(s.labels, options.label_prefix)) services.push_back(&s);
    sort_by_name(services);
    for (const auto* s : services) {
      labels::Source src;
      src.name = "service " + s->name;
      src.labels = s->labels;
      src.upstream_targets = service_targets(*s, d.tasks, ingress, options.proxy_service_tasks);
      bool has_running = std::any_of(d.tasks.begin(), d.tasks.end(), [&](const Task& t) {
        return t.service_id == s->id && t.state == "running";
      });
      bool on_ingress = std::any_of(s->vip_network_ids.begin(), s->vip_network_ids.end(),
                                    [&](const std::string& id) { return ingress.ids.count(id); });
      if (options.proxy_service_tasks ? has_running && src.upstream_targets.empty()
                                      : !on_ingress && !s->labels.count("caddy_ingress_network")) {
        out.warnings.push_back("service " + s->name +
                               " is not in the same network as the gateway: {{upstreams}} " +
                               (options.proxy_service_tasks ? "is empty" : "may not resolve"));
      }
      out.sources.push_back(std::move(src));
    }
  }
  return out;
}

std::vector<std::string> controlled_servers(const std::vector<DaemonState>& daemons,
                                            const std::string& controller_network, int port) {
  std::set<std::string> out;
  auto add = [&](std::string ip) {
    if (auto slash = ip.find('/'); slash != std::string::npos) ip.resize(slash);
    if (ip.empty() || !cluster::address_in_cidr(ip, controller_network)) return;
    bool v6 = ip.find(':') != std::string::npos;
    out.insert((v6 ? "[" + ip + "]" : ip) + ":" + std::to_string(port));
  };
  const std::string label(kControlledServerLabel);
  for (const auto& d : daemons) {
    for (const auto& s : d.services) {
      if (!s.labels.count(label)) continue;
      for (const auto& t : d.tasks) {
        if (t.service_id != s.id || t.state != "running") continue;
        for (const auto& n : t.networks)
          for (const auto& a : n.addresses) add(a);
      }
    }
    for (const auto& c : d.containers) {
      if (!c.labels.count(label)) continue;
      for (const auto& n : c.networks) add(n.ipv4);
    }
  }
  return {out.begin(), out.end()};
}

Result<DaemonState> fetch(Client& client, const Options& options) {
  DaemonState d;
  d.socket = client.socket();
  auto info = client.get("info");
  if (!info) return info.errors();
  auto swarm = parse_swarm_active(*info);
  if (!swarm) return swarm.errors();
  d.swarm = *swarm;

  auto networks = client.get("networks");
  if (!networks) return networks.errors();
  auto nets = parse_networks(*networks);
  if (!nets) return nets.errors();
  d.networks = std::move(*nets);

  auto containers =
      client.get(options.scan_stopped_containers ? "containers/json?all=1" : "containers/json");
  if (!containers) return containers.errors();
  auto cts = parse_containers(*containers);
  if (!cts) return cts.errors();
  d.containers = std::move(*cts);

  if (!d.swarm) return d;
  auto services = client.get("services");
  if (!services) return services.errors();
  auto svcs = parse_services(*services);
  if (!svcs) return svcs.errors();
  d.services = std::move(*svcs);

  if (options.proxy_service_tasks) {
    auto tasks =
        client.get("tasks?filters=" + Client::escape(R"({"desired-state":{"running":true}})"));
    if (!tasks) return tasks.errors();
    auto ts = parse_tasks(*tasks);
    if (!ts) return ts.errors();
    d.tasks = std::move(*ts);
  }

  const std::string filter = json{{"label", {{options.label_prefix, true}}}}.dump();
  auto configs = client.get("configs?filters=" + Client::escape(filter));
  if (!configs) return configs.errors();
  if (!configs->is_array()) return shape_error("/configs");
  for (const auto& c : *configs) {
    // The listing carries Spec.Data on API 1.41; inspect when a daemon leaves it out.
    if (member(member(c, "Spec"), "Data").is_string()) {
      auto parsed = parse_config(c);
      if (!parsed) return parsed.errors();
      d.configs.push_back(std::move(*parsed));
      continue;
    }
    auto full = client.get("configs/" + Client::escape(str(c, "ID")));
    if (!full) return full.errors();
    auto parsed = parse_config(*full);
    if (!parsed) return parsed.errors();
    d.configs.push_back(std::move(*parsed));
  }
  return d;
}

}  // namespace hsp::docker

// libFuzzer target for the Docker listings: arbitrary JSON in the place of /info, /networks,
// /services, /tasks, /containers/json and /configs answers, then source building and label
// translation. A daemon's answer must never crash the gateway, whatever its shape.
//   build-fuzz/fuzz/hsp_docker_state_fuzz -max_total_time=120
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "docker-watch/state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hsp::docker;
  auto j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  (void)parse_swarm_active(j);
  (void)parse_config(j);
  DaemonState d;
  d.swarm = true;
  if (auto n = parse_networks(j)) d.networks = std::move(*n);
  if (auto s = parse_services(j)) d.services = std::move(*s);
  if (auto t = parse_tasks(j)) d.tasks = std::move(*t);
  if (auto c = parse_containers(j)) d.containers = std::move(*c);
  std::vector<DaemonState> daemons{d};
  IngressSet ingress = ingress_from_container(j, daemons);
  IngressSet named = ingress_from_names({"caddy", "ingress"}, daemons);
  ingress.ids.insert(named.ids.begin(), named.ids.end());
  Options options;
  Built built = build_sources(daemons, ingress, options);
  hsp::labels::GenerateOptions gen;
  gen.process = false;  // the compiler has its own fuzz target
  (void)hsp::labels::generate(built.sources, gen);
  return 0;
}

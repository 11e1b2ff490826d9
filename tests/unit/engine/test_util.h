// Helpers for engine tests: hand-built configs and requests.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "engine/engine.h"
#include "http/message.h"

namespace hsp::engine::test {

inline config::Address addr(std::string host, uint16_t port = 80, std::string path = "") {
  config::Address a;
  a.host = std::move(host);
  a.port = port;
  a.path = std::move(path);
  a.original = a.host;
  return a;
}

inline config::Route respond_route(std::string body, int status = 200,
                                   std::vector<config::MatcherSet> match = {}) {
  config::Route r;
  config::StaticResponse s;
  s.body = std::move(body);
  s.status = status;
  r.handle.emplace_back(std::move(s));
  r.match = std::move(match);
  return r;
}

inline config::Route proxy_route(std::vector<std::string> dials,
                                 config::LbPolicy policy = config::LbPolicy::round_robin) {
  config::Route r;
  config::ReverseProxy rp;
  for (auto& d : dials) rp.upstreams.push_back(config::Upstream{std::move(d), {}});
  rp.lb_policy = policy;
  r.handle.emplace_back(std::move(rp));
  return r;
}

inline config::MatcherSet path_matcher(std::vector<std::string> paths) {
  config::MatcherSet m;
  m.path = std::move(paths);
  return m;
}

// One server on port 80 listing every site in order.
inline void single_server(config::Config& cfg, uint16_t port = 80) {
  config::Server s;
  s.port = port;
  for (size_t i = 0; i < cfg.sites.size(); ++i) s.sites.push_back(i);
  cfg.servers = {s};
}

inline config::Site site(std::vector<config::Address> addrs, std::vector<config::Route> routes) {
  config::Site s;
  s.addresses = std::move(addrs);
  s.routes = std::move(routes);
  return s;
}

inline http::Request request(std::string method, std::string host, std::string target) {
  http::Request r;
  r.method = std::move(method);
  r.scheme = "http";
  r.authority = host;
  r.host = host.substr(0, host.find(':'));
  size_t q = target.find('?');
  r.path = target.substr(0, q);
  if (q != std::string::npos) r.query = target.substr(q + 1);
  r.orig_uri = target;
  r.remote_ip = "127.0.0.1";
  r.remote_port = 40000;
  r.client_ip = r.remote_ip;
  return r;
}

}  // namespace hsp::engine::test

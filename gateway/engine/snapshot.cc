// Snapshot::build (config -> compiled routing tables) and dispatch (route evaluation with
// Caddy 2.6 semantics: modules/caddyhttp/routes.go, subroute.go, staticresp.go, rewrite/).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <unordered_map>

#include "engine/compiled.h"
#include "engine/tls_certs.h"
#include "http/message.h"

namespace hsp::engine {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

// Host names in config and requests are compared without brackets and without a trailing dot.
std::string_view normalize_host(std::string_view h) {
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (!h.empty() && h.back() == '.') h.remove_suffix(1);
  return h;
}

enum class Flow { next, done, stop };

// ---------------------------------------------------------------------------------------------
// Rewrite.
std::string trim_path_prefix(const std::string& escaped, std::string_view prefix) {
  size_t ip = 0, ipre = 0;
  std::string dec;
  while (ip < escaped.size() && ipre < prefix.size()) {
    char pc = prefix[ipre];
    std::string_view ch(&escaped[ip], 1);
    if (escaped[ip] == '%' && pc != '%' && escaped.size() >= ip + 3) {
      dec.clear();
      if (!percent_decode(std::string_view(escaped).substr(ip, 3), dec, false)) return escaped;
      ch = dec;
      ip += 2;
    }
    if (ch.size() != 1 || !http::iequals(ch, std::string_view(&pc, 1))) return escaped;
    ++ip;
    ++ipre;
  }
  if (ip >= prefix.size()) return escaped.substr(ip);
  return escaped;
}

std::string reversed(std::string_view s) {
  return std::string(s.rbegin(), s.rend());
}

void replace_n(std::string& s, std::string_view find, std::string_view with, int limit) {
  if (find.empty()) return;
  std::string out;
  size_t pos = 0;
  int n = 0;
  while (limit <= 0 || n < limit) {
    size_t hit = s.find(find, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out.append(with);
    pos = hit + find.size();
    ++n;
  }
  if (n == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

RewriteH compile_rewrite(const config::Rewrite& rw, Errors& errors, const SourceLoc& loc) {
  RewriteH h;
  if (!rw.uri.empty()) {
    h.has_uri = true;
    const std::string& uri = rw.uri;
    long path_start = -1, qs_start = -1, frag_start = -1, path_end = -1, qs_end = -1;
    for (size_t i = 0; i < uri.size(); ++i) {
      char ch = uri[i];
      long li = static_cast<long>(i);
      if (ch == '?' && qs_start < 0) {
        path_end = li;
        qs_start = li + 1;
      } else if (ch == '#' && frag_start < 0) {
        if (qs_start < 0) {
          path_end = li;
        } else {
          qs_end = li;
        }
        frag_start = li + 1;
        break;
      } else if (path_start < 0 && qs_start < 0) {
        path_start = li;
      }
    }
    if (path_start >= 0 && path_end < 0) path_end = static_cast<long>(uri.size());
    if (qs_start >= 0 && qs_end < 0) qs_end = static_cast<long>(uri.size());
    h.has_path = path_start >= 0;
    h.has_query = qs_start >= 0;
    h.has_frag = frag_start >= 0;
    if (h.has_path) h.path = Template::compile(uri.substr(path_start, path_end - path_start));
    if (h.has_query) {
      std::string_view qs = std::string_view(uri).substr(qs_start, qs_end - qs_start);
      h.raw_query = std::string(qs);
      // Split on the raw text exactly as Caddy's buildQueryString does.
      while (!qs.empty()) {
        size_t eq = qs.find('='), amp = qs.find('&');
        bool amp_next = amp != std::string_view::npos && (amp < eq || eq == std::string_view::npos);
        size_t end = qs.size();
        if (amp_next) {
          end = amp;
        } else if (eq != std::string_view::npos) {
          end = eq;
        }
        RewriteH::QueryComp c;
        c.text = Template::compile(qs.substr(0, end));
        c.amp_next = amp_next;
        h.query.push_back(std::move(c));
        qs = qs.substr(end < qs.size() ? end + 1 : end);
      }
    }
  }
  if (!rw.strip_prefix.empty()) h.strip_prefix = Template::compile(rw.strip_prefix);
  if (!rw.strip_suffix.empty()) h.strip_suffix = Template::compile(rw.strip_suffix);
  for (const auto& r : rw.uri_substring) {
    RewriteH::Replace rep;
    rep.find = Template::compile(r.find);
    rep.replace = Template::compile(r.replace);
    rep.keep_slashes = r.find.find("//") != std::string::npos;
    rep.limit = r.limit;
    h.replaces.push_back(std::move(rep));
  }
  for (const auto& r : rw.path_regexp) {
    RewriteH::ReReplace rep;
    std::string why;
    if (!Regex::compile(r.find, rep.re, why)) {
      errors.push_back(Error{loc, "uri path_regexp: bad pattern '" + r.find + "': " + why});
      continue;
    }
    rep.replace = Template::compile(r.replace);
    h.re_replaces.push_back(std::move(rep));
  }
  return h;
}

// buildQueryString over already-split components; render(i, key_position, out) appends
// component i.
template <typename Render>
std::string build_query(size_t n, const std::vector<bool>& amp_next, Render&& render) {
  std::string sb, comp;
  bool wrote_val = true;
  for (size_t i = 0; i < n; ++i) {
    comp.clear();
    render(i, wrote_val, comp);
    if (wrote_val) {
      if (!sb.empty() && !comp.empty()) sb += '&';
    } else {
      sb += '=';
    }
    sb += comp;
    wrote_val = amp_next[i];
  }
  return sb;
}

std::string build_literal_query(std::string_view qs) {
  std::vector<std::string_view> comps;
  std::vector<bool> amps;
  while (!qs.empty()) {
    size_t eq = qs.find('='), amp = qs.find('&');
    bool amp_next = amp != std::string_view::npos && (amp < eq || eq == std::string_view::npos);
    size_t end = amp_next ? amp : (eq != std::string_view::npos ? eq : qs.size());
    comps.push_back(qs.substr(0, end));
    amps.push_back(amp_next);
    qs = qs.substr(end < qs.size() ? end + 1 : end);
  }
  return build_query(comps.size(), amps,
                     [&](size_t i, bool, std::string& out) { out.append(comps[i]); });
}

void apply_rewrite(const RewriteH& h, RequestCtx& ctx) {
  http::Request& r = ctx.req;
  if (h.has_uri) {
    std::string new_path, new_query;
    if (h.has_path) {
      new_path = h.path.str(ctx, Unknown::empty);
    }
    std::string injected;
    bool has_injected = false;
    size_t q = new_path.find('?');
    if (q != std::string::npos) {
      injected = new_path.substr(q + 1);
      new_path.resize(q);
      has_injected = true;
    }
    if (!h.query.empty()) {
      std::vector<bool> amps;
      for (const auto& c : h.query) amps.push_back(c.amp_next);
      new_query = build_query(h.query.size(), amps, [&](size_t i, bool key, std::string& out) {
        h.query[i].text.render(ctx, Unknown::empty, out,
                               key ? Escape::query_key : Escape::query_value);
      });
    } else if (has_injected && !injected.empty()) {
      new_query = build_literal_query(injected);
    }
    // The template rendered an unescaped path (placeholders like {path} are unescaped, as Go's
    // URL.Path); the request line needs it escaped again, as Go's EscapedPath does.
    if (h.has_path) {
      r.path.clear();
      if (new_path == "*") {
        r.path = new_path;
      } else {
        path_escape(new_path, r.path);
      }
    }
    if (h.has_query) r.query = new_query;
    // Fragments are never sent upstream; nothing to keep.
  }
  if (!h.strip_prefix.empty()) {
    std::string prefix = h.strip_prefix.str(ctx, Unknown::empty);
    bool merge = prefix.find("//") == std::string::npos;
    r.path = trim_path_prefix(clean_path(r.path, merge), prefix);
  }
  if (!h.strip_suffix.empty()) {
    std::string suffix = h.strip_suffix.str(ctx, Unknown::empty);
    bool merge = suffix.find("//") == std::string::npos;
    r.path = reversed(trim_path_prefix(reversed(clean_path(r.path, merge)), reversed(suffix)));
  }
  for (const auto& rep : h.replaces) {
    std::string find = rep.find.str(ctx, Unknown::empty);
    if (find.empty()) continue;
    std::string with = rep.replace.str(ctx, Unknown::empty);
    r.path = clean_path(r.path, !rep.keep_slashes);
    replace_n(r.path, find, with, rep.limit);
    replace_n(r.query, find, with, rep.limit);
  }
  for (const auto& rep : h.re_replaces) {
    r.path = rep.re.replace_all(r.path, rep.replace.str(ctx, Unknown::empty));
  }
  // Go serializes an empty path as "/"; we keep the request path rooted for the data plane.
  if (r.path.empty()) {
    r.path = "/";
  } else if (r.path.front() != '/' && r.path != "*") {
    r.path.insert(r.path.begin(), '/');
  }
}

// ---------------------------------------------------------------------------------------------
class SnapshotImpl final : public Snapshot {
 public:
  SnapshotImpl(const config::Config& cfg, uint64_t generation) : cfg_(cfg), gen_(generation) {}

  Errors compile(UpstreamRegistry& registry);

  const config::Config& config() const override { return cfg_; }
  uint64_t generation() const override { return gen_; }
  const Site* find_site(size_t server_index, std::string_view host) const override;
  Decision dispatch(const Site& site, RequestCtx& ctx) const override;
  std::vector<const ProxyHandler*> proxies() const override { return proxies_; }
  void resolve_client_ip(http::Request& req) const override;
  const ServerTls* server_tls(size_t server_index) const override {
    return server_index < tls_.size() && tls_[server_index].selector ? &tls_[server_index]
                                                                     : nullptr;
  }
  void set_tls(std::vector<ServerTls> tls) { tls_ = std::move(tls); }

 private:
  struct ServerTables {
    HostTable exact;
    HostTable wildcard;  // "*.example.com" stored as "example.com"
    std::vector<std::pair<std::string, const Site*>> patterns;  // other wildcard forms
    const Site* catch_all = nullptr;
  };

  CompiledRoute compile_route(const config::Route& r, Errors& errors);
  void compile_handler(const config::Handler& h, const config::Route& r, CompiledRoute& out,
                       Errors& errors);
  void build_server(const config::Server& server);
  const Site* make_site(std::vector<Site::Candidate> candidates);
  Flow run_routes(const std::vector<CompiledRoute>& routes, DispatchState& st) const;
  Flow run_handler(const CompiledHandler& h, DispatchState& st) const;

  config::Config cfg_;  // owned copy: compiled objects point into it
  uint64_t gen_;
  UpstreamRegistry* registry_ = nullptr;
  std::vector<std::unique_ptr<CompiledSite>> sites_;
  std::vector<ServerTables> servers_;
  std::vector<std::unique_ptr<Site>> site_entries_;
  std::unordered_map<const CompiledSite*, const Site*> plain_entries_;
  std::vector<const ProxyHandler*> proxies_;
  std::vector<IpRange> trusted_;
  std::vector<ServerTls> tls_;  // [server index]
};

CompiledRoute SnapshotImpl::compile_route(const config::Route& r, Errors& errors) {
  CompiledRoute out;
  for (const auto& ms : r.match) out.match.push_back(compile_matcher_set(ms, errors));
  for (const auto& h : r.handle) compile_handler(h, r, out, errors);
  out.group = r.group;
  out.terminal = r.terminal;
  return out;
}

void SnapshotImpl::compile_handler(const config::Handler& h, const config::Route& route,
                                   CompiledRoute& out, Errors& errors) {
  if (const auto* s = std::get_if<config::StaticResponse>(&h)) {
    StaticResponseH c;
    c.status = s->status;
    c.body = Template::compile(s->body);
    for (const auto& [k, v] : s->headers) {
      c.headers.emplace_back(Template::compile(k), Template::compile(v));
    }
    c.close = s->close;
    out.handlers.emplace_back(std::move(c));
  } else if (const auto* hd = std::get_if<config::Headers>(&h)) {
    HeadersH c;
    compile_header_ops(hd->request, c.request, c.request_defaults, errors);
    if (c.request_defaults) {
      errors.push_back(Error{route.loc,
                             "request_header: the default modifier ('?') can only be "
                             "used on response headers"});
    }
    compile_header_ops(hd->response, c.response, c.response_defaults, errors);
    out.handlers.emplace_back(std::move(c));
  } else if (const auto* rw = std::get_if<config::Rewrite>(&h)) {
    out.handlers.emplace_back(compile_rewrite(*rw, errors, route.loc));
  } else if (const auto* rb = std::get_if<config::RequestBody>(&h)) {
    out.handlers.emplace_back(RequestBodyH{rb->max_size});
  } else if (const auto* sr = std::get_if<config::Subroute>(&h)) {
    SubrouteH c;
    for (const auto& r : sr->routes) c.routes.push_back(compile_route(r, errors));
    out.handlers.emplace_back(std::move(c));
  } else if (const auto* rp = std::get_if<config::ReverseProxy>(&h)) {
    // Caddy replaces request placeholders in tls_server_name per request; the data plane keys
    // its TLS contexts and pools by a fixed name, so it refuses rather than send "{...}" as SNI.
    if (rp->transport.tls_server_name.find('{') != std::string::npos) {
      errors.push_back(Error{rp->loc, "reverse_proxy: placeholders in tls_server_name ('" +
                                          rp->transport.tls_server_name +
                                          "') are not supported yet by hsp-gateway"});
    }
    ProxyH c;
    c.proxy = ProxyHandlerImpl::compile(*rp, cfg_.global, *registry_, errors);
    proxies_.push_back(c.proxy.get());
    out.handlers.emplace_back(std::move(c));
  }
}

const Site* SnapshotImpl::make_site(std::vector<Site::Candidate> candidates) {
  // The common case, one site with no path restriction, shares one entry per compiled site
  // across all its host names.
  if (candidates.size() == 1 && candidates[0].paths.empty()) {
    auto it = plain_entries_.find(candidates[0].site);
    if (it != plain_entries_.end()) return it->second;
    auto entry = std::make_unique<Site>();
    entry->candidates = std::move(candidates);
    const Site* p = entry.get();
    plain_entries_.emplace(entry->candidates[0].site, p);
    site_entries_.push_back(std::move(entry));
    return p;
  }
  auto entry = std::make_unique<Site>();
  entry->candidates = std::move(candidates);
  site_entries_.push_back(std::move(entry));
  return site_entries_.back().get();
}

void SnapshotImpl::build_server(const config::Server& server) {
  const auto& g = cfg_.global;
  using Cands = std::vector<Site::Candidate>;
  std::map<std::string, Cands> exact, wild;
  std::vector<std::pair<std::string, Cands>> patterns;
  Cands catch_all;

  auto on_server = [&](const config::Address& a) {
    uint16_t port = a.port;
    if (port == 0 && a.scheme == "http") port = g.http_port;
    if (port == 0 && a.scheme == "https") port = g.https_port;
    if (port == 0) return server.port == g.http_port || server.port == g.https_port;
    return port == server.port;
  };

  for (size_t idx : server.sites) {
    if (idx >= sites_.size()) continue;
    const config::Site& site = cfg_.sites[idx];
    const CompiledSite* cs = sites_[idx].get();
    bool any = std::any_of(site.addresses.begin(), site.addresses.end(), on_server);
    for (const auto& a : site.addresses) {
      // If no address names this server's port, the config compiler still put the site here;
      // trust it rather than drop the site.
      if (any && !on_server(a)) continue;
      Site::Candidate c;
      c.site = cs;
      if (!a.path.empty()) c.paths.push_back(PathPattern::compile(a.path));
      std::string host = lower(normalize_host(a.host));
      if (host.empty()) {
        catch_all.push_back(std::move(c));
      } else if (host.rfind("*.", 0) == 0 && host.find('*', 1) == std::string::npos) {
        wild[host.substr(2)].push_back(std::move(c));
      } else if (host.find('*') != std::string::npos) {
        auto it = std::find_if(patterns.begin(), patterns.end(),
                               [&](const auto& p) { return p.first == host; });
        if (it == patterns.end()) {
          patterns.emplace_back(host, Cands{});
          it = patterns.end() - 1;
        }
        it->second.push_back(std::move(c));
      } else {
        exact[host].push_back(std::move(c));
      }
    }
    if (site.addresses.empty()) catch_all.push_back(Site::Candidate{cs, {}});
  }

  // A candidate list ending with a path-restricted site falls through to the less specific
  // lists, as the next routes would in Caddy.
  auto complete = [](Cands list, const std::vector<const Cands*>& fallbacks) {
    for (const Cands* fb : fallbacks) {
      if (!list.empty() && list.back().paths.empty()) break;
      list.insert(list.end(), fb->begin(), fb->end());
    }
    return list;
  };

  ServerTables t;
  t.catch_all = catch_all.empty() ? nullptr : make_site(catch_all);
  for (auto& [host, list] : patterns) {
    t.patterns.emplace_back(host, make_site(complete(list, {&catch_all})));
  }
  for (auto& [suffix, list] : wild) {
    t.wildcard.insert(suffix, make_site(complete(list, {&catch_all})));
  }
  for (auto& [host, list] : exact) {
    std::vector<const Cands*> fbs;
    size_t dot = host.find('.');
    if (dot != std::string::npos) {
      auto w = wild.find(host.substr(dot + 1));
      if (w != wild.end()) fbs.push_back(&w->second);
    }
    for (auto& [pattern, plist] : patterns) {
      if (host_pattern_match(pattern, host)) fbs.push_back(&plist);
    }
    fbs.push_back(&catch_all);
    t.exact.insert(host, make_site(complete(list, fbs)));
  }
  t.exact.finish();
  t.wildcard.finish();
  servers_.push_back(std::move(t));
}

Errors SnapshotImpl::compile(UpstreamRegistry& registry) {
  registry_ = &registry;
  Errors errors;
  for (const auto& s : cfg_.sites) {
    auto cs = std::make_unique<CompiledSite>();
    cs->cfg = &s;
    for (const auto& r : s.routes) cs->routes.push_back(compile_route(r, errors));
    sites_.push_back(std::move(cs));
  }
  for (const auto& server : cfg_.servers) build_server(server);
  for (const auto& t : cfg_.global.trusted_proxies) {
    IpRange r;
    std::string why;
    if (!parse_range(t, r, &why)) {
      errors.push_back(Error{SourceLoc{}, "trusted_proxies: " + why});
      continue;
    }
    trusted_.push_back(r);
  }
  return errors;
}

const Site* SnapshotImpl::find_site(size_t server_index, std::string_view host) const {
  if (server_index >= servers_.size()) return nullptr;
  const ServerTables& t = servers_[server_index];
  host = normalize_host(host);
  if (host.size() > kMaxHostLen) return t.catch_all;
  char buf[kMaxHostLen + 8];
  uint64_t h = lower_and_hash(host.data(), host.size(), buf);
  std::string_view key(buf, host.size());
  if (!t.exact.empty()) {
    if (const Site* s = t.exact.find(key, h)) return s;
  }
  if (!t.wildcard.empty()) {
    size_t dot = key.find('.');
    if (dot != std::string_view::npos) {
      if (const Site* s = t.wildcard.find(key.substr(dot + 1))) return s;
    }
  }
  for (const auto& [pattern, site] : t.patterns) {
    if (host_pattern_match(pattern, key)) return site;
  }
  return t.catch_all;
}

Flow SnapshotImpl::run_handler(const CompiledHandler& h, DispatchState& st) const {
  RequestCtx& ctx = st.ctx;
  Decision& d = st.decision;
  if (const auto* s = std::get_if<StaticResponseH>(&h)) {
    d.kind = Decision::Kind::respond;
    d.status = s->status;
    d.headers.clear();
    for (const auto& [k, v] : s->headers) {
      d.headers.add(k.str(ctx, Unknown::empty), v.str(ctx, Unknown::empty));
    }
    d.body.clear();
    s->body.render(ctx, Unknown::keep, d.body);
    d.implicit_content_type.clear();
    if (!d.body.empty()) {
      // Caddy sniffs the body as written, before placeholders are replaced.
      std::string_view raw = s->body.has_placeholders() ? std::string_view() : s->body.literal();
      std::string tmp;
      if (s->body.has_placeholders()) {
        for (const auto& p : s->body.parts())
          tmp += p.kind == Template::Kind::literal ? p.text : "{" + p.key + "}";
        raw = tmp;
      }
      while (!raw.empty() && std::isspace(static_cast<unsigned char>(raw.front())))
        raw.remove_prefix(1);
      while (!raw.empty() && std::isspace(static_cast<unsigned char>(raw.back())))
        raw.remove_suffix(1);
      bool json = raw.size() > 2 &&
                  ((raw.front() == '{' && raw.back() == '}') ||
                   (raw.front() == '[' && raw.back() == ']')) &&
                  nlohmann::json::accept(raw);
      d.implicit_content_type = json ? "application/json" : "text/plain; charset=utf-8";
    }
    d.close = s->close;
    return Flow::done;
  }
  if (const auto* hd = std::get_if<HeadersH>(&h)) {
    if (hd->request) hd->request->apply_request(ctx, ctx.req);
    if (hd->response) {
      if (hd->response->deferred()) {
        st.deferred.push_back(hd->response.get());
      } else {
        d.response_ops.push_back(hd->response.get());
      }
    }
    if (hd->response_defaults) st.deferred.push_back(hd->response_defaults.get());
    return Flow::next;
  }
  if (const auto* rw = std::get_if<RewriteH>(&h)) {
    apply_rewrite(*rw, ctx);
    return Flow::next;
  }
  if (const auto* rb = std::get_if<RequestBodyH>(&h)) {
    d.max_request_body = rb->max_size;
    return Flow::next;
  }
  if (const auto* sr = std::get_if<SubrouteH>(&h)) {
    return run_routes(sr->routes, st);
  }
  if (const auto* px = std::get_if<ProxyH>(&h)) {
    d.kind = Decision::Kind::proxy;
    d.proxy = px->proxy.get();
    return Flow::done;
  }
  return Flow::next;
}

Flow SnapshotImpl::run_routes(const std::vector<CompiledRoute>& routes, DispatchState& st) const {
  for (const auto& route : routes) {
    if (!route.match.empty()) {
      bool any = false;
      for (const auto& ms : route.match) {
        if (ms.match(st)) {
          any = true;
          break;
        }
      }
      if (!any) continue;
    }
    if (!route.group.empty()) {
      if (st.group_taken(route.group)) continue;
      st.take_group(route.group);
    }
    for (const auto& h : route.handlers) {
      Flow f = run_handler(h, st);
      if (f != Flow::next) return f;
    }
    // A terminal route ends the request even from inside a subroute (Caddy swaps in its empty
    // handler as the rest of the chain).
    if (route.terminal) return Flow::stop;
  }
  return Flow::next;
}

Decision SnapshotImpl::dispatch(const Site& site, RequestCtx& ctx) const {
  Decision d;
  DispatchState st(ctx, d);
  for (const auto& cand : site.candidates) {
    if (!cand.paths.empty()) {
      bool any = false;
      for (const auto& p : cand.paths) {
        if (p.match(st)) {
          any = true;
          break;
        }
      }
      if (!any) continue;
    }
    const config::Site* cfg_site = cand.site->cfg;
    ctx.site = &site;
    if (cfg_site->log.enabled) d.log = &cfg_site->log;
    run_routes(cand.site->routes, st);
    break;
  }
  // Deferred ops wrap the response writer as their handlers run; the innermost (last) applies
  // first when the head is written.
  d.response_ops.insert(d.response_ops.end(), st.deferred.rbegin(), st.deferred.rend());
  return d;
}

void SnapshotImpl::resolve_client_ip(http::Request& req) const {
  req.client_ip = req.remote_ip;
  if (trusted_.empty() || !in_ranges(std::string_view(req.remote_ip), trusted_)) return;
  for (const auto& f : req.headers) {
    if (!http::iequals(f.first, "X-Forwarded-For")) continue;
    std::string_view rest = f.second;
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      std::string_view part = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
      while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
      // Some proxies keep the port ("1.2.3.4:5678", "[::1]:80").
      std::string_view host, port;
      split_host_port(part, host, port);
      IpAddr a;
      if (parse_ip(host, a)) {
        size_t zone = host.find('%');
        req.client_ip = std::string(host.substr(0, zone));
        return;
      }
    }
  }
}

}  // namespace

Result<SnapshotPtr> Snapshot::build(const config::Config& cfg, UpstreamRegistry& upstreams,
                                    uint64_t generation, CertAuthority* certs) {
  auto snap = std::make_shared<SnapshotImpl>(cfg, generation);
  Errors errors = snap->compile(upstreams);
  if (!errors.empty()) return errors;
  auto tls = build_server_tls(snap->config(), certs);
  if (!tls) return tls.errors();
  snap->set_tls(std::move(*tls));
  return SnapshotPtr(std::move(snap));
}

}  // namespace hsp::engine

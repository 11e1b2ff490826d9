// Header manipulation with Caddy 2.6 semantics (modules/caddyhttp/headers/headers.go).
#include <algorithm>
#include <type_traits>

#include "engine/compiled.h"
#include "http/message.h"

namespace hsp::engine {

namespace {

using OpKind = config::HeaderOp::Kind;

int rank(OpKind k) {
  switch (k) {
    case OpKind::add:
      return 0;
    case OpKind::set:
    case OpKind::set_default:
      return 1;
    case OpKind::remove:
      return 2;
    case OpKind::replace:
      return 3;
  }
  return 4;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

void replace_substring(std::string& s, std::string_view find, std::string_view with) {
  if (find.empty()) return;
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(find, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out.append(with);
    pos = hit + find.size();
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

}  // namespace

std::unique_ptr<HeaderOpsImpl> HeaderOpsImpl::compile(
    const std::vector<const config::HeaderOp*>& ops, bool deferred, bool require_absent,
    Errors& errors) {
  auto out = std::make_unique<HeaderOpsImpl>();
  out->deferred_ = deferred;
  for (const auto* op : ops) {
    Op c;
    c.kind = op->kind == OpKind::set_default ? OpKind::set : op->kind;
    c.field = Template::compile(op->field);
    c.field_lower = lower(op->field);
    c.value = Template::compile(op->value);
    if (op->kind == OpKind::replace) {
      if (op->regex) {
        c.re = std::make_unique<Regex>();
        std::string why;
        if (!Regex::compile(op->search, *c.re, why)) {
          errors.push_back(Error{op->loc, "header " + op->field + ": bad regular expression '" +
                                              op->search + "': " + why});
          continue;
        }
      } else {
        c.search = Template::compile(op->search);
      }
    }
    if (require_absent) out->require_absent_.push_back(op->field);
    out->ops_.push_back(std::move(c));
  }
  std::stable_sort(out->ops_.begin(), out->ops_.end(),
                   [](const Op& a, const Op& b) { return rank(a.kind) < rank(b.kind); });
  return out;
}

void compile_header_ops(const config::HeaderOps& ops, std::unique_ptr<HeaderOpsImpl>& plain,
                        std::unique_ptr<HeaderOpsImpl>& defaults, Errors& errors) {
  std::vector<const config::HeaderOp*> normal, dflt;
  bool has_remove = false;
  for (const auto& op : ops.ops) {
    if (op.kind == OpKind::set_default) {
      dflt.push_back(&op);
    } else {
      normal.push_back(&op);
      if (op.kind == OpKind::remove) has_remove = true;
    }
  }
  (void)has_remove;  // the config compiler already sets `deferred` for deletions, as Caddy does
  if (!normal.empty()) plain = HeaderOpsImpl::compile(normal, ops.deferred, false, errors);
  // Caddy puts `?Field` ops in a second handler with a `require` condition, which always acts
  // when the response is written.
  if (!dflt.empty()) defaults = HeaderOpsImpl::compile(dflt, true, true, errors);
}

void HeaderOpsImpl::apply(const RequestCtx& ctx, http::HeaderMap& headers) const {
  for (const auto& f : require_absent_) {
    if (headers.has(f)) return;
  }
  std::string field, value, search;
  for (const auto& op : ops_) {
    field.clear();
    op.field.render(ctx, Unknown::keep, field);
    switch (op.kind) {
      case OpKind::add:
        value.clear();
        op.value.render(ctx, Unknown::keep, value);
        headers.add(field, value);
        break;
      case OpKind::set:
      case OpKind::set_default:
        value.clear();
        op.value.render(ctx, Unknown::keep, value);
        headers.set(field, value);
        break;
      case OpKind::remove: {
        std::string f = op.field.has_placeholders() ? lower(field) : op.field_lower;
        auto& fs = headers.fields();
        auto name_hit = [&](const std::string& name) {
          std::string n = lower(name);
          if (f.size() >= 2 && f.front() == '*' && f.back() == '*') {
            return n.find(f.substr(1, f.size() - 2)) != std::string::npos;
          }
          if (f == "*") return true;
          if (!f.empty() && f.front() == '*') {
            std::string_view suf = std::string_view(f).substr(1);
            return n.size() >= suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0;
          }
          if (!f.empty() && f.back() == '*') {
            return n.compare(0, f.size() - 1, f, 0, f.size() - 1) == 0 && n.size() >= f.size() - 1;
          }
          return n == f;
        };
        fs.erase(std::remove_if(fs.begin(), fs.end(),
                                [&](const auto& kv) { return name_hit(kv.first); }),
                 fs.end());
        break;
      }
      case OpKind::replace: {
        value.clear();
        op.value.render(ctx, Unknown::keep, value);
        search.clear();
        if (!op.re) op.search.render(ctx, Unknown::keep, search);
        bool all = field == "*";
        for (auto& kv : headers.fields()) {
          if (!all && !http::iequals(kv.first, field)) continue;
          if (op.re) {
            kv.second = op.re->replace_all(kv.second, value);
          } else {
            replace_substring(kv.second, search, value);
          }
        }
        break;
      }
    }
  }
}

void HeaderOpsImpl::apply_request(const RequestCtx& ctx, http::Request& req) const {
  // Caddy appends r.Host as the last Host value, applies the ops, then reads the last Host value
  // back into r.Host; the Host field itself is not part of Go's header map. If the data plane
  // keeps a Host field, it is put back where it was so field order survives.
  auto& fields = req.headers.fields();
  auto first = std::find_if(fields.begin(), fields.end(),
                            [](const auto& kv) { return http::iequals(kv.first, "Host"); });
  bool had_host = first != fields.end();
  size_t host_pos = static_cast<size_t>(first - fields.begin());
  req.headers.remove("Host");
  req.headers.add("Host", req.authority.empty() ? req.host : req.authority);
  apply(ctx, req.headers);
  std::string host;
  bool found = false;
  for (const auto& kv : fields) {
    if (http::iequals(kv.first, "Host")) {
      host = kv.second;
      found = true;
    }
  }
  req.headers.remove("Host");
  if (!found) host.clear();
  req.authority = host;
  std::string_view name, port;
  split_host_port(host, name, port);
  req.host = lower(name);
  if (had_host) {
    fields.insert(fields.begin() + static_cast<long>(std::min(host_pos, fields.size())),
                  http::HeaderMap::Field{"Host", host});
  }
}

namespace {

// `Fields` is const HeaderMap& (copied) or HeaderMap&& (moved from).
template <class Fields>
void build_response(const Decision& d, const RequestCtx& ctx, Fields&& handler_fields,
                    http::HeaderMap& out) {
  for (const auto* ops : d.response_ops) {
    if (!ops->deferred()) ops->apply(ctx, out);
  }
  if (d.kind == Decision::Kind::respond) {
    // A static response sets its fields (w.Header()[field] = values).
    for (const auto& kv : handler_fields) out.remove(kv.first);
    for (const auto& kv : handler_fields) out.add(kv.first, kv.second);
  } else if constexpr (std::is_const_v<std::remove_reference_t<Fields>>) {
    for (const auto& kv : handler_fields) out.add(kv.first, kv.second);
  } else {
    out.reserve(out.size() + handler_fields.size() + 2);
    for (auto& kv : handler_fields.fields()) out.fields().push_back(std::move(kv));
  }
  // Caddy decides the implicit type when the respond handler runs, which is after immediate ops
  // and before deferred ones.
  if (d.kind == Decision::Kind::respond && !d.implicit_content_type.empty() &&
      !out.has("Content-Type")) {
    out.set("Content-Type", d.implicit_content_type);
  }
  for (const auto* ops : d.response_ops) {
    if (ops->deferred()) ops->apply(ctx, out);
  }
}

}  // namespace

void build_response_headers(const Decision& d, const RequestCtx& ctx,
                            const http::HeaderMap& handler_fields, http::HeaderMap& out) {
  build_response(d, ctx, handler_fields, out);
}

void build_response_headers(const Decision& d, const RequestCtx& ctx,
                            http::HeaderMap&& handler_fields, http::HeaderMap& out) {
  build_response(d, ctx, std::move(handler_fields), out);
}

}  // namespace hsp::engine

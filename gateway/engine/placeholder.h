// Caddy placeholders ({http.request.host}, {env.X}, ...) compiled once per snapshot into a list
// of literal and placeholder parts, so a request never re-parses a template.
//
// Caddy resolves some names per request only (a regexp capture, an upstream, a cookie); a name
// the request cannot answer is "unknown". Each use site says what unknown becomes, as Caddy's
// call sites do: kept verbatim (ReplaceKnown: `header`, respond bodies) or empty (ReplaceAll:
// rewrites, respond headers, redirects).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.h"

namespace hsp::engine {

enum class Unknown { keep, empty };

// How placeholder values are escaped when rendered into a query string (Caddy's rewrite
// buildQueryString): values are query-escaped except {http.request.uri.query} in a key
// position, which is already escaped.
enum class Escape { none, query_key, query_value };

class Template {
 public:
  enum class Kind : uint8_t {
    literal,
    req_host,
    req_hostport,
    req_port,
    req_method,
    req_scheme,
    req_proto,
    req_uri,
    req_uri_path,
    req_uri_query,
    req_uri_path_file,
    req_uri_path_dir,
    req_uri_path_file_base,
    req_uri_path_file_ext,
    req_orig_uri,
    req_orig_uri_path,
    req_orig_uri_query,
    req_orig_method,
    req_remote,
    req_remote_host,
    req_remote_port,
    req_header,
    req_cookie,
    req_query_arg,
    req_host_label,
    req_path_segment,
    req_tls_server_name,
    req_tls_version,
    req_tls_cipher_suite,
    req_tls_resumed,
    req_tls_proto,
    req_tls_proto_mutual,
    client_ip,
    regexp,
    upstream_host,
    upstream_port,
    upstream_hostport,
    upstream_address,
    upstream_requests,
    upstream_fails,
    resp_header,
    resp_status,
    env,
    system_hostname,
    system_slash,
    system_os,
    system_arch,
    system_wd,
    time_now,
    time_now_common_log,
    time_now_year,
    time_now_unix,
    time_now_unix_ms,
    unknown,
  };

  struct Part {
    Kind kind = Kind::literal;
    std::string text;  // literal text, or the placeholder's argument (field, env name...)
    std::string key;   // the placeholder name as written, for Unknown::keep
    int index = 0;     // host label / path segment index
  };

  Template() = default;
  static Template compile(std::string_view text);

  bool has_placeholders() const { return dynamic_; }
  bool empty() const { return parts_.empty(); }
  // The text itself when there are no placeholders (escapes already removed).
  const std::string& literal() const { return literal_; }
  const std::vector<Part>& parts() const { return parts_; }

  void render(const RequestCtx& ctx, Unknown unknown, std::string& out,
              Escape escape = Escape::none) const;
  std::string str(const RequestCtx& ctx, Unknown unknown) const {
    if (!dynamic_) return literal_;
    std::string out;
    render(ctx, unknown, out);
    return out;
  }

 private:
  std::vector<Part> parts_;
  std::string literal_;
  bool dynamic_ = false;
};

// Appends the value of one placeholder; false when the request cannot answer it.
bool eval_placeholder(const Template::Part& part, const RequestCtx& ctx, std::string& out);

// Go's url.QueryEscape.
void query_escape(std::string_view in, std::string& out);
// Go's url.URL.EscapedPath for a path that was set unescaped: escapes what may not appear in a
// path ('?', '%', spaces, controls, non-ASCII...).
void path_escape(std::string_view in, std::string& out);
// Percent-decodes; '+' stays '+' unless plus_as_space. False on a malformed escape.
bool percent_decode(std::string_view in, std::string& out, bool plus_as_space);

// Splits "host:port" / "[v6]:port" the way Go's net.SplitHostPort does; false when there is no
// port (host is then the whole input, without brackets).
bool split_host_port(std::string_view hostport, std::string_view& host, std::string_view& port);

}  // namespace hsp::engine

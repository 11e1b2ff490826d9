// Private to gateway/h2/: what the server and client codecs share. Field checks and the
// conversion of a header map to HTTP/2 fields; the body a codec sends (a response on the
// server, a request on the client), held for nghttp2's data provider. Included by the codecs'
// .cc files only (it brings nghttp2.h); output_buffer.h is the part their headers need.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "h2/output_buffer.h"
#include "http/message.h"
#include "util/error.h"

namespace hsp::h2::detail {

Error h2_error(std::string message);

// RFC 9113 §8.2.1: lower-case token names; values without CR, LF or NUL.
bool valid_name(std::string_view name);
bool valid_value(std::string_view value);
// RFC 9113 §8.2.2: never in HTTP/2 (plus the h2c upgrade fields, which must not travel on).
bool connection_specific(std::string_view name);

using Fields = std::vector<std::pair<std::string, std::string>>;

// `headers` as HTTP/2 fields: lower-case names; no connection-specific field, none that the
// Connection field nominates, no pseudo field, no Host (:authority carries it), nothing
// invalid. A request head (`request`) keeps `te` only as "trailers" (RFC 9113 §8.2.2; gRPC
// needs it); elsewhere `te` is dropped. The data plane strips hop-by-hop fields itself;
// this is the codecs' own guarantee that nothing HTTP/2 forbids is ever framed.
Fields h2_fields(const http::HeaderMap& headers, bool request);

nghttp2_nv make_nv(const std::string& name, const std::string& value);

// The body a codec sends on one stream: bytes the caller pushed, waiting for nghttp2's data
// provider, bounded by the caller's per-stream limit, with the trailers to end it.
struct OutBody {
  bool open = false;          // a body follows the head
  bool ended = false;         // the caller ended it (end_stream)
  bool deferred = false;      // the data provider said DEFERRED: resume on new bytes
  bool notify_ready = false;  // the caller was refused room: tell it when there is some
  std::string bytes;
  size_t off = 0;
  std::optional<http::HeaderMap> trailers;

  size_t held() const { return bytes.size() - off; }
  size_t capacity(size_t limit) const;
  // Takes what fits under `limit`; returns how much. Errors name `what` ("response").
  Result<size_t> append(nghttp2_session* session, int32_t id, std::string_view data, size_t limit,
                        std::string_view what);
  Result<bool> end(nghttp2_session* session, int32_t id, std::optional<http::HeaderMap> t,
                   std::string_view what);
  // nghttp2's data-provider read: copies out up to `length`, ends with EOF (and submits the
  // trailers) once ended and empty, else defers. `room`: set when bytes left and the caller
  // waits for room (notify_ready).
  ssize_t read(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length,
               uint32_t* data_flags, bool& room);
};

}  // namespace hsp::h2::detail

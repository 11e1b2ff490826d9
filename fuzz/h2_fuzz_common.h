// Shared by the HTTP/2 codec fuzz targets (h2_server_fuzz.cc, h2_client_fuzz.cc) and, for the
// parts that are not HTTP/2's own, the HTTP/3 one (h3_server_fuzz.cc): failing an invariant,
// the decision generator, field checks, and the checker of the frames an HTTP/2 codec writes.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string_view>

#include "http/message.h"

namespace h2fuzz {

// HSP_H2_FUZZ_TRACE=1: print every frame written (and, server side, what each read did).
inline bool g_trace = false;
inline const char* g_target = "h2_fuzz";  // the target's name, in failure messages
constexpr size_t kMaxFrame = 16384 + 9;

[[noreturn]] inline void fail(const char* what, int32_t stream_id) {
  std::fprintf(stderr, "%s: invariant violated: %s (stream %d)\n", g_target, what,
               static_cast<int>(stream_id));
  std::abort();
}

// splitmix64: decisions reproducible from the input's seed bytes.
struct Rng {  // splitmix64
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint32_t below(uint32_t n) { return n == 0 ? 0 : static_cast<uint32_t>(next() % n); }
  bool chance(uint32_t percent) { return below(100) < percent; }
};

inline bool has_ctl(std::string_view v) {
  return v.find_first_of(std::string_view("\0\r\n", 3)) != std::string_view::npos;
}

inline bool bad_name(std::string_view n) {
  if (n.empty()) return true;
  for (char ch : n) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 'A' && c <= 'Z') return true;
    if (c <= 0x20 || c >= 0x7f || c == ':' || c == '"' || c == '(' || c == ')' || c == ',' ||
        c == '/' || c == ';' || c == '<' || c == '=' || c == '>' || c == '?' || c == '@' ||
        c == '[' || c == '\\' || c == ']' || c == '{' || c == '}')
      return true;
  }
  return false;
}

// RFC 9113 §8.2.2 / RFC 9114 §4.2: never framed in HTTP/2 or HTTP/3.
inline bool connection_specific(std::string_view n) {
  return n == "connection" || n == "keep-alive" || n == "proxy-connection" ||
         n == "transfer-encoding" || n == "upgrade";
}

// What a server codec may put on the wire for a request's fields (HTTP/2 and HTTP/3 share the
// rules): valid lower-case names and values, nothing connection-specific, no host field (the
// authority carries it), `te` only as "trailers" in a head.
inline void check_fields(const hsp::http::HeaderMap& fields, bool trailers, int64_t id) {
  auto sid = static_cast<int32_t>(id);
  for (const auto& [name, value] : fields) {
    if (bad_name(name)) fail("field name with upper case or a non-token byte", sid);
    if (has_ctl(value)) fail("field value with CR, LF or NUL", sid);
    if (connection_specific(name)) fail("connection-specific field forwarded", sid);
    if (!trailers && name == "host") fail("host field forwarded (authority carries it)", sid);
    if (name == "te" && (trailers || value != "trailers")) fail("te other than trailers", sid);
  }
}

// The frames the codec writes, parsed back (RFC 9113 §4.1) and checked against the stream state
// machine of §5.1 from the sending side: a stream's HEADERS come first and once (then only a
// trailer block, with END_STREAM), DATA only after them, nothing but RST_STREAM, WINDOW_UPDATE
// or PRIORITY after END_STREAM or RST_STREAM, new streams with increasing ids of the right
// parity, GOAWAY last-stream-ids never increasing (RFC 9113 §6.8).
class FrameChecker {
 public:
  explicit FrameChecker(bool server) : server_(server) {}

  void feed(std::string_view bytes) {
    buf_.append(bytes);
    size_t off = 0;
    if (!server_ && !magic_done_) {
      if (buf_.size() < kMagic.size()) return;
      if (std::string_view(buf_).substr(0, kMagic.size()) != kMagic) fail("no client magic", 0);
      off = kMagic.size();
      magic_done_ = true;
    }
    while (buf_.size() - off >= 9) {
      auto b = reinterpret_cast<const unsigned char*>(buf_.data() + off);
      size_t len = size_t{b[0]} << 16 | size_t{b[1]} << 8 | b[2];
      if (buf_.size() - off < 9 + len) break;
      uint8_t type = b[3], flags = b[4];
      int32_t id = static_cast<int32_t>(
          (uint32_t{b[5]} << 24 | uint32_t{b[6]} << 16 | uint32_t{b[7]} << 8 | b[8]) & 0x7fffffffu);
      frame(type, flags, id, len, b + 9);
      off += 9 + len;
    }
    buf_.erase(0, off);
  }

  // The highest stream id a GOAWAY sent so far lets the peer's streams reach (2^31-1 if none).
  int32_t goaway_last() const { return goaway_last_; }

 private:
  struct Sent {
    bool head = false;
    bool ended = false;
    bool reset = false;
  };

  void frame(uint8_t type, uint8_t flags, int32_t id, size_t len, const unsigned char* p) {
    if (in_headers_ != 0 && type != 0x9) fail("frame interleaved in a header block", id);
    if (type != 0x1 && type != 0x9 && len > 16384) fail("frame over 16384 bytes", id);
    if (g_trace) {
      std::fprintf(stderr, "sent frame type %u flags %u stream %d length %zu", unsigned{type},
                   unsigned{flags}, static_cast<int>(id), len);
      if (type == 7 && len >= 8) {
        std::fprintf(stderr, " goaway last %u code %u",
                     (p[0] & 0x7fu) << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3],
                     uint32_t{p[4]} << 24 | uint32_t{p[5]} << 16 | uint32_t{p[6]} << 8 | p[7]);
      }
      std::fprintf(stderr, "\n");
    }
    const bool end_stream = (flags & 0x1) != 0;
    switch (type) {
      case 0x0: {  // DATA
        Sent& s = stream(id, "DATA");
        if (!s.head) fail("DATA before HEADERS", id);
        if (s.ended || s.reset) fail("DATA after END_STREAM or RST_STREAM", id);
        if (end_stream) s.ended = true;
        break;
      }
      case 0x1: {  // HEADERS
        Sent& s = stream(id, "HEADERS");
        if (s.ended || s.reset) fail("HEADERS after END_STREAM or RST_STREAM", id);
        if (s.head && !end_stream) fail("second HEADERS block without END_STREAM", id);
        if (!s.head && !server_ && id <= last_new_) fail("new stream id not increasing", id);
        if (!s.head && !server_) last_new_ = id;
        s.head = true;
        if (end_stream) s.ended = true;
        if ((flags & 0x4) == 0) in_headers_ = id;
        break;
      }
      case 0x9:  // CONTINUATION
        if (in_headers_ != id) fail("CONTINUATION outside its header block", id);
        if ((flags & 0x4) != 0) in_headers_ = 0;
        break;
      case 0x3:  // RST_STREAM
        if (id == 0 || len != 4) fail("malformed RST_STREAM", id);
        streams_[id].reset = true;
        break;
      case 0x5:  // PUSH_PROMISE
        fail("PUSH_PROMISE written", id);
      case 0x7: {  // GOAWAY
        if (id != 0 || len < 8) fail("malformed GOAWAY", id);
        int32_t last = static_cast<int32_t>(
            (uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3]) &
            0x7fffffffu);
        uint32_t code = uint32_t{p[4]} << 24 | uint32_t{p[5]} << 16 | uint32_t{p[6]} << 8 | p[7];
        if (last > goaway_last_) fail("GOAWAY last-stream-id increased", last);
        goaway_last_ = std::min(goaway_last_, last);
        // Nothing is checked after an error GOAWAY: nghttp2's rapid-reset limiter sends
        // GOAWAY(INTERNAL_ERROR) and keeps the session going for the accepted streams.
        (void)code;
        break;
      }
      case 0x4:  // SETTINGS
      case 0x6:  // PING
        if (id != 0) fail("SETTINGS or PING on a stream", id);
        break;
      default:
        break;  // PRIORITY, WINDOW_UPDATE
    }
  }

  Sent& stream(int32_t id, const char* what) {
    if (id == 0) fail(what, 0);
    if (id % 2 == 0) fail("frame on an even (server-initiated) stream", id);
    return streams_[id];
  }

  static constexpr std::string_view kMagic = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  bool server_;
  bool magic_done_ = false;
  int32_t in_headers_ = 0;
  int32_t last_new_ = 0;
  int32_t goaway_last_ = 0x7fffffff;
  std::string buf_;
  std::map<int32_t, Sent> streams_;
};

}  // namespace h2fuzz

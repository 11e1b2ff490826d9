// What the HTTP/2 server and client codecs share (common.h).

#include "h2/common.h"

#include <algorithm>
#include <cstring>

#include "http/hop_by_hop.h"
#include "util/log.h"

namespace hsp::h2::detail {
namespace {

bool is_tchar_lower(unsigned char c) {
  if (c >= 'a' && c <= 'z') return true;
  if (c >= '0' && c <= '9') return true;
  return c != 0 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The comma-separated tokens of a field value, lower-cased.
std::vector<std::string> tokens(std::string_view value) {
  std::vector<std::string> out;
  while (true) {
    size_t comma = value.find(',');
    std::string_view tok = trim(value.substr(0, comma));
    if (!tok.empty()) out.push_back(http::ascii_lower(tok));
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace

Error h2_error(std::string message) {
  return Error{SourceLoc{"h2", 0, 0}, std::move(message)};
}

bool valid_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return is_tchar_lower(static_cast<unsigned char>(c));
  });
}

bool valid_value(std::string_view value) {
  // A plain loop: string_view::find_first_of calls memchr once per byte of the value.
  return std::none_of(value.begin(), value.end(),
                      [](char c) { return c == '\0' || c == '\r' || c == '\n'; });
}

bool connection_specific(std::string_view name) {
  return name == "connection" || name == "keep-alive" || name == "proxy-connection" ||
         name == "transfer-encoding" || name == "upgrade" || name == "http2-settings";
}

Fields h2_fields(const http::HeaderMap& headers, bool request) {
  std::vector<std::string> nominated;
  for (const auto& [name, value] : headers) {
    if (http::iequals(name, "connection")) {
      for (auto& t : tokens(value)) nominated.push_back(std::move(t));
    }
  }
  const bool te_trailers = request && http::has_token(headers, "te", "trailers");
  Fields out;
  out.reserve(headers.size() + 1);
  for (const auto& [name, value] : headers) {
    std::string n = http::ascii_lower(name);
    if (connection_specific(n) || n == "te" || n == "host" || n.empty() || n.front() == ':') {
      continue;
    }
    if (std::find(nominated.begin(), nominated.end(), n) != nominated.end()) continue;
    if (!valid_name(n) || !valid_value(value)) continue;
    out.emplace_back(std::move(n), value);
  }
  if (te_trailers && std::find(nominated.begin(), nominated.end(), "te") == nominated.end()) {
    out.emplace_back("te", "trailers");
  }
  return out;
}

nghttp2_nv make_nv(const std::string& name, const std::string& value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

size_t OutBody::capacity(size_t limit) const {
  if (!open || ended) return 0;
  return held() >= limit ? 0 : limit - held();
}

Result<size_t> OutBody::append(nghttp2_session* session, int32_t id, std::string_view data,
                               size_t limit, std::string_view what) {
  if (!open || ended) return h2_error("no " + std::string(what) + " body open on this stream");
  size_t n = std::min(data.size(), capacity(limit));
  bytes.append(data.substr(0, n));
  if (n < data.size()) notify_ready = true;
  if (n > 0 && deferred) {
    deferred = false;
    nghttp2_session_resume_data(session, id);
  }
  return n;
}

Result<bool> OutBody::end(nghttp2_session* session, int32_t id, std::optional<http::HeaderMap> t,
                          std::string_view what) {
  if (!open || ended) return h2_error("no " + std::string(what) + " body open on this stream");
  ended = true;
  trailers = std::move(t);
  if (deferred) {
    deferred = false;
    nghttp2_session_resume_data(session, id);
  }
  return true;
}

ssize_t OutBody::read(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length,
                      uint32_t* data_flags, bool& room) {
  size_t n = std::min(held(), length);
  if (n > 0) {
    std::memcpy(buf, bytes.data() + off, n);
    off += n;
    if (off == bytes.size()) {
      bytes.clear();
      off = 0;
    } else if (off > bytes.size() / 2) {
      bytes.erase(0, off);
      off = 0;
    }
    room = notify_ready;
  }
  if (held() == 0) {
    if (ended) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (trailers) {
        Fields fields = h2_fields(*trailers, false);
        std::vector<nghttp2_nv> nva;
        nva.reserve(fields.size());
        for (const auto& [name, value] : fields) nva.push_back(make_nv(name, value));
        if (nghttp2_submit_trailer(session, id, nva.data(), nva.size()) == 0) {
          *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
      }
    } else if (n == 0) {
      deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

void OutputBuffer::fill(nghttp2_session* session, size_t cap, uint64_t conn_id,
                        const char* error_msg) {
  if (session == nullptr) return;
  if (off_ > 0) {
    out_.erase(0, off_);
    off_ = 0;
  }
  // One frame may take the buffer past the cap (by at most max frame size + 9 bytes).
  while (out_.size() < cap) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session, &data);
    if (n <= 0) {
      if (n < 0) {
        log::info(error_msg)
            .kv("conn_id", conn_id)
            .kv("error", nghttp2_strerror(static_cast<int>(n)));
      }
      break;
    }
    out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
}

void OutputBuffer::consume(size_t n) {
  off_ += std::min(n, out_.size() - off_);
  if (off_ == out_.size()) {
    out_.clear();
    off_ = 0;
  }
}

}  // namespace hsp::h2::detail

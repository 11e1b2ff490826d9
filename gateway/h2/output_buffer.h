// Private to gateway/h2/: the serialized frames a codec drained from nghttp2 and its caller has
// not written yet (ServerConnection and ClientConnection::pending_output()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

struct nghttp2_session;

namespace hsp::h2::detail {

// At most `cap` bytes plus one frame: fill() stops asking nghttp2 once `cap` is reached.
class OutputBuffer {
 public:
  void fill(nghttp2_session* session, size_t cap, uint64_t conn_id, const char* error_msg);
  std::string_view view() const { return std::string_view(out_).substr(off_); }
  bool empty() const { return out_.size() == off_; }
  void consume(size_t n);

 private:
  std::string out_;
  size_t off_ = 0;
};

}  // namespace hsp::h2::detail

// Header serialisation helpers of the proxy path (gateway/http1/proxy_common.h).
#include <gtest/gtest.h>

#include <string>

#include "http1/proxy_common.h"

namespace hsp::http1 {
namespace {

std::string clean(std::string_view s) {
  std::string out = "<";
  append_clean(out, s);
  return out;
}

TEST(AppendClean, PlainTextIsAppendedWhole) {
  EXPECT_EQ(clean(""), "<");
  EXPECT_EQ(clean("text/plain; charset=utf-8"), "<text/plain; charset=utf-8");
}

// The fast path tests eight bytes at a time: CR and LF must be found in every position of a
// word, in the tail after the last whole word, and next to bytes that differ from them by one
// bit or by 0x80 (false positives of a careless zero-byte test).
TEST(AppendClean, CrAndLfAreDroppedWherever) {
  for (size_t len = 1; len <= 24; ++len) {
    for (size_t at = 0; at < len; ++at) {
      for (char bad : {'\r', '\n'}) {
        std::string s(len, 'a');
        s[at] = bad;
        std::string want = "<" + std::string(len - 1, 'a');
        EXPECT_EQ(clean(s), want) << "len " << len << " at " << at;
      }
    }
  }
  EXPECT_EQ(clean("a\r\nb\r\nc"), "<abc");
  EXPECT_EQ(clean("\r\n\r\n\r\n\r\n\r\n"), "<");
}

TEST(AppendClean, NeighboursOfCrAndLfStay) {
  std::string near = "\x0c\x0e\x0b\x09\x8d\x8a\x2d\x2a\x1d\x1a\xff\x01\x00";
  near.push_back('\0');
  std::string s = near + near;
  EXPECT_EQ(clean(s), "<" + s);
}

TEST(AppendFields, OneLinePerField) {
  http::HeaderMap h;
  h.add("X-A", "1");
  h.add("X-Bad", "v\r\nInjected: yes");
  std::string out;
  append_fields(out, h);
  EXPECT_EQ(out, "X-A: 1\r\nX-Bad: vInjected: yes\r\n");
}

}  // namespace
}  // namespace hsp::http1

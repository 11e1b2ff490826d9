// The QUIC + HTTP/3 glue shared by the gateway's server and hsp-bench's client (h3/common.h).
// The end-to-end behaviour is covered by quic_server_test.cc (server) and
// tests/integration/test_bench_h3.py (client); these pin the pieces on their own (write_packet's
// tests are in quic_server_test.cc, next to the test client they need).
#include "h3/common.h"

#include <gtest/gtest.h>

#include <string>

namespace hsp::h3 {
namespace {

TEST(H3CommonTest, MakeNvPointsIntoTheCallersBytes) {
  std::string name = "content-type";
  std::string value = "text/plain";
  nghttp3_nv nv = make_nv(name, value);
  EXPECT_EQ(nv.name, reinterpret_cast<const uint8_t*>(name.data()));
  EXPECT_EQ(nv.value, reinterpret_cast<const uint8_t*>(value.data()));
  EXPECT_EQ(nv.namelen, name.size());
  EXPECT_EQ(nv.valuelen, value.size());
  EXPECT_EQ(nv.flags, NGHTTP3_NV_FLAG_NO_COPY_NAME | NGHTTP3_NV_FLAG_NO_COPY_VALUE);
}

TEST(H3CommonTest, NowIsSteadyNanoseconds) {
  uint64_t a = now_ns();
  uint64_t b = now_ns();
  EXPECT_GT(a, 0u);
  EXPECT_LE(a, b);
}

TEST(H3CommonTest, Http3SettingsAllowTheQpackDynamicTable) {
  nghttp3_settings s = h3_settings();
  EXPECT_EQ(s.qpack_max_dtable_capacity, 4096u);
  EXPECT_EQ(s.qpack_blocked_streams, 100u);
}

}  // namespace
}  // namespace hsp::h3

#include "http/hop_by_hop.h"

#include <gtest/gtest.h>

namespace hsp::http {
namespace {

TEST(HopByHop, HasTokenSplitsCommaLists) {
  HeaderMap h;
  h.add("Connection", "keep-alive, Upgrade");
  EXPECT_TRUE(has_token(h, "connection", "upgrade"));
  EXPECT_TRUE(has_token(h, "Connection", "Keep-Alive"));
  EXPECT_FALSE(has_token(h, "Connection", "close"));
  EXPECT_FALSE(has_token(h, "Upgrade", "upgrade"));
}

TEST(HopByHop, RemovesFixedListAndConnectionNamedFields) {
  HeaderMap h;
  h.add("Connection", "close, X-Secret");
  h.add("X-Secret", "1");
  h.add("Keep-Alive", "timeout=5");
  h.add("Proxy-Connection", "keep-alive");
  h.add("Proxy-Authorization", "Basic x");
  h.add("Proxy-Authenticate", "Basic");
  h.add("TE", "gzip");
  h.add("Trailer", "X-T");
  h.add("Transfer-Encoding", "chunked");
  h.add("Upgrade", "h2c");
  h.add("Alt-Svc", "h3=\":443\"");
  h.add("Accept", "*/*");
  remove_hop_by_hop(h);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h.fields()[0].first, "Accept");
}

TEST(HopByHop, RequestKeepsTeTrailersAndReannouncesUpgrade) {
  HeaderMap h;
  h.add("Connection", "Upgrade");
  h.add("Upgrade", "WebSocket");
  h.add("TE", "trailers, deflate");
  h.add("Sec-WebSocket-Key", "abc");
  strip_request_hop_by_hop(h);
  EXPECT_EQ(h.joined("Te"), "trailers");
  EXPECT_EQ(h.joined("Connection"), "Upgrade");
  EXPECT_EQ(h.joined("Upgrade"), "websocket");
  EXPECT_EQ(h.joined("Sec-WebSocket-Key"), "abc");
}

TEST(HopByHop, RequestDropsTeNamedByConnection) {
  HeaderMap h;
  h.add("Connection", "TE");
  h.add("TE", "trailers");
  strip_request_hop_by_hop(h);
  EXPECT_FALSE(h.has("TE"));
  EXPECT_FALSE(h.has("Connection"));
}

TEST(HopByHop, UpgradeTypeNeedsConnectionUpgrade) {
  HeaderMap h;
  h.add("Upgrade", "websocket");
  EXPECT_EQ(upgrade_type(h), "");
  h.add("Connection", "keep-alive, upgrade");
  EXPECT_EQ(upgrade_type(h), "websocket");
}

}  // namespace
}  // namespace hsp::http

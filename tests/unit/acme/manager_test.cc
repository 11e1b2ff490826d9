// The manager's schedule: back-off after failures and the renewal point without ARI. The
// manager's work against a CA is covered end to end by tests/integration/test_acme.py (Pebble).
#include "acme/manager.h"

#include <gtest/gtest.h>

namespace hsp::acme {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

TEST(AcmeBackoff, DoublesFromOneMinuteUpToOneDay) {
  EXPECT_EQ(backoff_delay(1, std::nullopt), minutes(1));
  EXPECT_EQ(backoff_delay(2, std::nullopt), minutes(2));
  EXPECT_EQ(backoff_delay(3, std::nullopt), minutes(4));
  EXPECT_EQ(backoff_delay(11, std::nullopt), minutes(1024));
  EXPECT_EQ(backoff_delay(12, std::nullopt), hours(24));  // 2048 min capped
  EXPECT_EQ(backoff_delay(1000, std::nullopt), hours(24));
}

TEST(AcmeBackoff, RetryAfterWinsWhenLonger) {
  EXPECT_EQ(backoff_delay(1, seconds(120)), seconds(120));
  EXPECT_EQ(backoff_delay(1, seconds(7)), minutes(1));  // shorter: the back-off stands
  EXPECT_EQ(backoff_delay(3, seconds(3600)), seconds(3600));
  // A CA may ask for more than a day; it is honoured.
  EXPECT_EQ(backoff_delay(20, hours(48)), hours(48));
}

TEST(AcmeRenewal, OneThirdOfTheLifetimeLeft) {
  const SystemTime nb = SystemTime{} + hours(24 * 1000);
  // Let's Encrypt's 90 days: renewed after 60.
  EXPECT_EQ(renewal_time(nb, nb + hours(24 * 90)), nb + hours(24 * 60));
  // Short-lived (6 days): after 4.
  EXPECT_EQ(renewal_time(nb, nb + hours(24 * 6)), nb + hours(24 * 4));
}

}  // namespace
}  // namespace hsp::acme

"""SIGTERM drains: a slow in-flight request completes, new connections are refused, idle
keep-alive connections are closed, and the process exits 0. Past grace_period the gateway
exits anyway."""

import signal
import time

import harness
from harness import Client, GatewayTest, free_port

SITE = """
:__PORT__ {
	bind 127.0.0.1
	reverse_proxy __UP__
	log {
		output stdout
	}
}
"""


class DrainTest(GatewayTest):
    def start(self, grace):
        self.up = self.upstream(harness.echo_handler(), "slow")
        self.port = free_port()
        self.gw = self.gateway(SITE, [self.port], {"PORT": self.port, "UP": self.up.addr},
                               global_options=["grace_period %s" % grace])

    def test_sigterm_drains_in_flight_request(self):
        self.start("10s")
        idle = Client(self.port)
        self.assertEqual(idle.request("GET", "/warm").status, 200)

        slow = Client(self.port, timeout=20)
        slow.send_request("GET", "/slow?delay_ms=2000")
        self.assertTrue(harness.wait_until(lambda: self.up.started >= 2, 5),
                        "slow request never reached the upstream")
        t0 = time.monotonic()
        self.gw.proc.send_signal(signal.SIGTERM)

        # New connections are refused soon after the signal (listeners closed first).
        refused = harness.wait_until(lambda: not harness.can_connect(self.port), 1.5, 0.02)
        self.assertTrue(refused, "gateway still accepts connections while draining")
        # The idle keep-alive connection is closed, not kept for the grace period.
        self.assertTrue(idle.is_closed_by_peer(1.5), "idle keep-alive connection not closed")
        idle.close()

        r = slow.read_response()
        slow.close()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["target"], "/slow?delay_ms=2000")
        rc = self.gw.proc.wait(10)
        took = time.monotonic() - t0
        harness.log("drained in %.2fs, exit code %s" % (took, rc))
        self.assertEqual(rc, 0, self.gw.proc.output_tail())

    def test_sigterm_without_traffic_exits_zero(self):
        self.start("10s")
        self.assertEqual(harness.fetch(self.port, "GET", "/").status, 200)
        rc = self.gw.stop(signal.SIGTERM, timeout=10)
        self.assertEqual(rc, 0)

    def test_sigint_also_drains(self):
        self.start("10s")
        slow = Client(self.port, timeout=20)
        slow.send_request("GET", "/slow?delay_ms=1000")
        self.assertTrue(harness.wait_until(lambda: self.up.started >= 1, 5))
        self.gw.proc.send_signal(signal.SIGINT)
        r = slow.read_response()
        slow.close()
        self.assertEqual(r.status, 200, r)
        rc = self.gw.proc.wait(10)
        harness.log("SIGINT exit code %s" % rc)
        self.assertIsNotNone(rc, "did not exit after SIGINT")

    def test_grace_period_bounds_shutdown(self):
        self.start("1s")
        slow = Client(self.port, timeout=20)
        slow.send_request("GET", "/slow?delay_ms=8000")
        self.assertTrue(harness.wait_until(lambda: self.up.started >= 1, 5))
        t0 = time.monotonic()
        self.gw.proc.send_signal(signal.SIGTERM)
        rc = self.gw.proc.wait(7)
        took = time.monotonic() - t0
        harness.log("grace_period 1s with an 8s request: exited after %.2fs, code %s"
                    % (took, rc))
        slow.close()
        self.assertIsNotNone(rc, "still running 7s after SIGTERM with grace_period 1s")
        if harness.gateway_kind() == "hsp":
            # The cut request still gets its access-log line, saying why it ended.
            cut = [j for j in self.gw.access_logs()
                   if j["request"].get("uri") == "/slow?delay_ms=8000"]
            self.assertEqual(len(cut), 1, self.gw.proc.output_tail())
            self.assertEqual(cut[0].get("end_reason"), "grace_period_expired", cut[0])


if __name__ == "__main__":
    harness.main()

"""Health checks with real upstreams: active checks (health_uri / health_interval /
health_status) take a failing upstream out and put it back when it recovers; passive checks
(fail_duration / max_fails) skip an upstream that failed; no healthy upstream -> 503."""

import threading

import harness
from harness import GatewayTest, closed_port, free_port

ACTIVE = """
:__PORT__ {
	bind 127.0.0.1
	reverse_proxy __A__ __B__ {
		lb_policy round_robin
		health_uri /health
		health_interval 100ms
		health_timeout 1s
		health_status 200
	}
}
"""

PASSIVE = """
:__PORT__ {
	bind 127.0.0.1
	handle /one* {
		reverse_proxy __DOWN__ __B__ {
			lb_policy round_robin
			fail_duration 30s
			max_fails 1
		}
	}
	handle /none* {
		reverse_proxy __DOWN__ {
			fail_duration 30s
			max_fails 1
		}
	}
}
"""


def health_switch_handler(state):
    """Echo, except /health answers state["health"] (an int status)."""
    echo = harness.echo_handler()

    def handle(req):
        if req.path == "/health":
            req.read_body()
            with state["lock"]:
                state["probes"] += 1
            code = state["health"]
            req.send_response(code, [("Content-Type", "text/plain")], b"health %d" % code)
            return "keep"
        return echo(req)
    return handle


class ActiveHealthTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.state_a = {"health": 500, "probes": 0, "lock": threading.Lock()}
        self.state_b = {"health": 200, "probes": 0, "lock": threading.Lock()}
        self.a = self.upstream(health_switch_handler(self.state_a), "A")
        self.b = self.upstream(health_switch_handler(self.state_b), "B")
        self.port = free_port()
        self.gw = self.gateway(ACTIVE, [self.port], {"PORT": self.port, "A": self.a.addr,
                                                     "B": self.b.addr})

    def picks(self, n):
        out = []
        for i in range(n):
            r = harness.fetch(self.port, "GET", "/x%d" % i)
            self.assertEqual(r.status, 200, r)
            out.append(r.header("x-upstream"))
        return out

    def test_unhealthy_upstream_skipped_then_restored(self):
        # Wait for probes to reach both upstreams (the interval is 100 ms).
        self.assertTrue(harness.wait_until(
            lambda: self.state_a["probes"] >= 2 and self.state_b["probes"] >= 2, 5),
            "no active health probes seen")
        self.assertEqual(set(self.picks(10)), {"B"})
        self.state_a["health"] = 200
        probes = self.state_a["probes"]
        self.assertTrue(harness.wait_until(lambda: self.state_a["probes"] >= probes + 2, 5))
        self.assertEqual(set(self.picks(10)), {"A", "B"})
        # And both unhealthy: no upstream available.
        self.state_a["health"] = 503
        self.state_b["health"] = 503
        pa, pb = self.state_a["probes"], self.state_b["probes"]
        self.assertTrue(harness.wait_until(
            lambda: self.state_a["probes"] >= pa + 2 and self.state_b["probes"] >= pb + 2, 5))
        r = harness.fetch(self.port, "GET", "/none-left")
        harness.log("all upstreams unhealthy -> %d" % r.status)
        self.assertEqual(r.status, 503, r)

    def test_probe_requests_use_health_uri(self):
        self.assertTrue(harness.wait_until(lambda: self.state_b["probes"] >= 1, 5))
        probes = [r for r in self.b.requests if r["target"] == "/health"]
        self.assertTrue(probes)
        self.assertEqual(probes[0]["method"], "GET")


class PassiveHealthTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.b = self.upstream(harness.echo_handler(), "B")
        self.port = free_port()
        self.gw = self.gateway(PASSIVE, [self.port], {
            "PORT": self.port, "B": self.b.addr, "DOWN": "127.0.0.1:%d" % closed_port()})

    def test_failed_upstream_skipped(self):
        statuses = [harness.fetch(self.port, "GET", "/one/%d" % i).status for i in range(10)]
        harness.log("passive: statuses %s" % statuses)
        # At most the first attempt on the dead upstream fails; it is then marked down.
        self.assertLessEqual(statuses.count(502), 1, statuses)
        self.assertEqual(statuses[-5:], [200] * 5)

    def test_only_upstream_down_is_503_after_marked(self):
        first = harness.fetch(self.port, "GET", "/none/1").status
        second = harness.fetch(self.port, "GET", "/none/2").status
        harness.log("single dead upstream: %d then %d" % (first, second))
        self.assertEqual(first, 502)
        self.assertEqual(second, 503)


if __name__ == "__main__":
    harness.main()

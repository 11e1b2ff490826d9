"""Load-balancing policies with real upstreams: round_robin alternates, ip_hash / uri_hash /
header stick, cookie sets a cookie and sticks to it, random and least_conn use every upstream.
Which upstream a hash picks is the gateway's business; that the choice is stable is not."""

import socket

import harness
from harness import GatewayTest, free_port

SITE = """
:__PORT__ {
	bind 127.0.0.1
	handle /rr* {
		reverse_proxy __A__ __B__ __C__ {
			lb_policy round_robin
		}
	}
	handle /iphash* {
		reverse_proxy __A__ __B__ __C__ {
			lb_policy ip_hash
		}
	}
	handle /urihash* {
		reverse_proxy __A__ __B__ __C__ {
			lb_policy uri_hash
		}
	}
	handle /cookie* {
		reverse_proxy __A__ __B__ __C__ {
			lb_policy cookie
		}
	}
	handle /random* {
		reverse_proxy __A__ __B__ __C__ {
			lb_policy random
		}
	}
	handle /least* {
		reverse_proxy __A__ __B__ __C__ {
			lb_policy least_conn
		}
	}
}
"""


def get_from(port, target, source_ip="127.0.0.1", headers=()):
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source_ip, 0))
    sock.connect((harness.LOOPBACK, port))
    c = harness.Client.__new__(harness.Client)
    c.port, c.host, c.timeout = port, harness.LOOPBACK, 10
    c.conn = harness.Conn(sock, 10)
    try:
        return c.request("GET", target, list(headers) + [("Connection", "close")])
    finally:
        c.close()


class LbTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.ups = {n: self.upstream(harness.echo_handler(), n) for n in "ABC"}
        self.port = free_port()
        self.gw = self.gateway(SITE, [self.port], dict(
            PORT=self.port, **{n: u.addr for n, u in self.ups.items()}))

    def pick(self, target, **kw):
        r = get_from(self.port, target, **kw)
        self.assertEqual(r.status, 200, r)
        return r.header("x-upstream")

    def test_round_robin_cycles(self):
        seq = [self.pick("/rr/%d" % i) for i in range(12)]
        harness.log("round_robin sequence: %s" % "".join(seq))
        for i in range(3, 12):
            self.assertEqual(seq[i], seq[i - 3], "not a cycle of 3: %s" % seq)
        self.assertEqual(sorted(seq[:3]), ["A", "B", "C"])

    def test_ip_hash_sticks_per_client_ip(self):
        seen = {}
        for i in range(2, 26):
            ip = "127.0.0.%d" % i
            picks = {self.pick("/iphash/x%d" % j, source_ip=ip) for j in range(3)}
            self.assertEqual(len(picks), 1, "%s spread over %s" % (ip, picks))
            seen[ip] = picks.pop()
        harness.log("ip_hash: %s" % sorted(set(seen.values())))
        self.assertGreater(len(set(seen.values())), 1, "24 client IPs all hashed to one upstream")

    def test_uri_hash_sticks_per_uri(self):
        used = set()
        for i in range(20):
            picks = {self.pick("/urihash/item%d" % i) for _ in range(3)}
            self.assertEqual(len(picks), 1)
            used |= picks
        self.assertGreater(len(used), 1)

    def test_cookie_sets_and_sticks(self):
        r = get_from(self.port, "/cookie/1")
        self.assertEqual(r.status, 200)
        cookie = r.header("set-cookie")
        self.assertIsNotNone(cookie, r)
        self.assertTrue(cookie.startswith("lb="), cookie)
        first = r.header("x-upstream")
        value = cookie.split(";")[0]
        for i in range(10):
            r = get_from(self.port, "/cookie/%d" % i, headers=[("Cookie", value)])
            self.assertEqual(r.header("x-upstream"), first)
            self.assertIsNone(r.header("set-cookie"), "cookie re-issued although valid")

    def test_random_and_least_conn_use_every_upstream(self):
        for prefix in ("/random", "/least"):
            used = {self.pick("%s/%d" % (prefix, i)) for i in range(60)}
            harness.log("%s used %s" % (prefix, sorted(used)))
            self.assertEqual(used, {"A", "B", "C"}, prefix)


if __name__ == "__main__":
    harness.main()

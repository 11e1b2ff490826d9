"""Bounded concurrent load (h2load --h1, 20 000 requests, 100 connections): every request
succeeds and upstream connections are reused under concurrency (no connection per request).
Throughput is printed, not asserted."""

import re
import subprocess

import harness
from harness import GatewayTest, free_port

SITE = """
:__PORT__ {
	bind 127.0.0.1
	handle /static* {
		respond "static"
	}
	reverse_proxy __UP__
}
"""


def h2load(url, n, c):
    p = subprocess.run(["h2load", "--h1", "-n", str(n), "-c", str(c), "-t", "1", url],
                       capture_output=True, timeout=120, preexec_fn=harness._set_pdeathsig)
    out = p.stdout.decode()
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    speed = re.search(r"finished in [^\n]*", out)
    return out, (tuple(map(int, m.groups())) if m else None), \
        (tuple(map(int, codes.groups())) if codes else None), speed.group(0) if speed else ""


class LoadTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream(harness.echo_handler(), "echo")
        self.port = free_port()
        self.gw = self.gateway(SITE, [self.port], {"PORT": self.port, "UP": self.up.addr})

    def test_proxied_load(self):
        n, c = 20000, 100
        out, reqs, codes, speed = h2load("http://127.0.0.1:%d/load" % self.port, n, c)
        harness.log("proxied: %s; upstream accepted %d connections" % (speed, self.up.accepted))
        self.assertEqual(reqs, (n, n, n, n, 0, 0, 0), out)
        self.assertEqual(codes, (n, 0, 0, 0), out)
        self.assertEqual(self.up.count(), n)
        # Not a pool-quality benchmark: catches "a connection per request" only. (Caddy 2.6.2
        # opens ~3 000 here, as Go keeps few idle connections per host; hsp-gateway ~150.)
        self.assertLessEqual(self.up.accepted, n // 5, "upstream connections not reused")

    def test_static_load(self):
        n = 20000
        out, reqs, codes, speed = h2load("http://127.0.0.1:%d/static" % self.port, n, 100)
        harness.log("respond: %s" % speed)
        self.assertEqual(reqs, (n, n, n, n, 0, 0, 0), out)
        self.assertEqual(codes, (n, 0, 0, 0), out)
        self.assertIsNone(self.gw.proc.poll())


if __name__ == "__main__":
    harness.main()

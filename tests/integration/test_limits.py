"""Request head limits: a head over the limit is answered 431 and the connection closed; heads
under it pass. Also an over-long request line. hsp-gateway's default is 32 KiB of header fields
(Caddy 2.6.2/Go: 1 MiB); `servers { max_header_size }` changes it."""

import unittest

import harness
from harness import Client, GatewayTest, free_port

SITE = """
:__PORT__ {
	bind 127.0.0.1
	reverse_proxy __UP__
}
"""


class HeaderLimitTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream(harness.echo_handler(), "echo")
        self.port = free_port()
        self.gw = self.gateway(SITE, [self.port], {"PORT": self.port, "UP": self.up.addr})

    def test_large_header_under_limit_passes(self):
        r = harness.fetch(self.port, "GET", "/ok", [("X-Big", "a" * 16000)])
        self.assertEqual(r.status, 200, r)
        seen = dict((k.lower(), v) for k, v in r.json()["headers"])
        self.assertEqual(len(seen["x-big"]), 16000)

    def test_header_bytes_over_limit_is_431(self):
        with Client(self.port) as c:
            # 2 MiB of header fields, 64 KiB each: over both gateways' defaults.
            hdrs = [("X-Fill-%d" % i, "b" * 65536) for i in range(32)]
            try:
                r = c.request("GET", "/too-big", hdrs)
            except (ConnectionError, OSError) as e:
                self.fail("connection dropped without a 431: %r" % e)
            self.assertEqual(r.status, 431, r)
            self.assertTrue(c.is_closed_by_peer(5.0), "connection kept open after 431")
        self.assertEqual(self.up.count(), 0)

    def test_single_huge_header_is_431(self):
        with Client(self.port) as c:
            try:
                r = c.request("GET", "/too-big", [("X-Huge", "c" * (1200 << 10))])
            except (ConnectionError, OSError) as e:
                self.fail("connection dropped without a 431: %r" % e)
            self.assertEqual(r.status, 431, r)
        self.assertEqual(self.up.count(), 0)

    def test_gateway_still_serves_after_431(self):
        with Client(self.port) as c:
            try:
                c.request("GET", "/x", [("X-Huge", "c" * (1200 << 10))])
            except (ConnectionError, OSError):
                pass
        r = harness.fetch(self.port, "GET", "/after")
        self.assertEqual(r.status, 200, r)

    @unittest.skipIf(harness.gateway_kind() == "caddy", "Go's default is 1 MiB")
    def test_default_header_bytes_limit_is_32k(self):
        r = harness.fetch(self.port, "GET", "/under", [("X-Big", "a" * (30 << 10))])
        self.assertEqual(r.status, 200, r)
        r = harness.fetch(self.port, "GET", "/over", [("X-Big", "a" * (40 << 10))])
        self.assertEqual(r.status, 431, r)
        self.assertEqual(self.up.count(), 1)

    @unittest.skipIf(harness.gateway_kind() == "caddy", "Go has no header-count limit")
    def test_header_count_limit(self):
        # hsp-gateway's max_header_count (100 by default, counting Host).
        ok = [("X-F-%d" % i, "v") for i in range(98)]
        r = harness.fetch(self.port, "GET", "/count-ok", ok)  # + Host + Connection = 100
        self.assertEqual(r.status, 200, r)
        too_many = [("X-F-%d" % i, "v") for i in range(150)]
        r = harness.fetch(self.port, "GET", "/count-bad", too_many)
        self.assertEqual(r.status, 431, r)
        self.assertEqual(self.up.count(), 1)

    def test_over_long_request_line_rejected(self):
        # Go counts the request line in the 1 MiB head limit (431); hsp-gateway also has
        # max_request_line (8 KiB default, 414). Either way: rejected, never proxied.
        target = "/" + "u" * (1100 << 10)
        with Client(self.port) as c:
            try:
                r = c.request("GET", target)
                status = r.status
            except (ConnectionError, OSError):
                status = None
        harness.log("1.1 MiB request line -> %s" % status)
        self.assertIn(status, (414, 431))
        self.assertEqual(self.up.count(), 0)


if __name__ == "__main__":
    harness.main()

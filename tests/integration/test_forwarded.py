"""X-Forwarded-For / -Proto / -Host as the upstream sees them: client values are replaced
unless the peer is a trusted proxy (global `servers { trusted_proxies static ... }`, Caddy
2.6.3+ syntax, which Debian's 2.6.2 rejects; the per-handler form is in the differential test
25-x-forwarded-trusted)."""

import socket
import unittest

import harness
from harness import GatewayTest, free_port

SITE = """
:__PORT__ {
	bind 127.0.0.1
	reverse_proxy __UP__
}
"""

CLIENT_IP_SITE = """
:__PORT__ {
	bind 127.0.0.1
	@client {
		client_ip 1.2.3.0/24
		path /matched
	}
	respond /whoami "client={client_ip} remote={remote_host}"
	respond @client "matched"
	reverse_proxy __UP__
}
"""


def seen_headers(port, source_ip, headers):
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source_ip, 0))
    sock.connect((harness.LOOPBACK, port))
    c = harness.Client.__new__(harness.Client)
    c.port, c.host, c.timeout = port, harness.LOOPBACK, 10
    c.conn = harness.Conn(sock, 10)
    try:
        r = c.request("GET", "/fwd", list(headers), host="app.example.test")
    finally:
        c.close()
    assert r.status == 200, r
    out = {}
    for k, v in r.json()["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


SPOOF = [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"),
         ("X-Forwarded-Host", "orig.example.test")]


class ForwardedTest(GatewayTest):
    def start(self, global_options=(), site=SITE):
        self.up = self.upstream(harness.echo_handler(), "echo")
        self.port = free_port()
        self.gw = self.gateway(site, [self.port], {"PORT": self.port, "UP": self.up.addr},
                               global_options=global_options)

    def fetch_from(self, source_ip, path, headers):
        sock = socket.socket()
        sock.settimeout(10)
        sock.bind((source_ip, 0))
        sock.connect((harness.LOOPBACK, self.port))
        c = harness.Client.__new__(harness.Client)
        c.port, c.host, c.timeout = self.port, harness.LOOPBACK, 10
        c.conn = harness.Conn(sock, 10)
        try:
            return c.request("GET", path, list(headers))
        finally:
            c.close()

    @unittest.skipIf(harness.gateway_kind() == "caddy", "caddy 2.6.2 has no client_ip matcher")
    def test_client_ip_from_trusted_proxy(self):
        # Caddy 2.7 semantics: behind a trusted proxy the client IP comes from X-Forwarded-For.
        self.start(["servers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}"],
                   CLIENT_IP_SITE)
        r = self.fetch_from("127.0.0.1", "/whoami", [("X-Forwarded-For", "1.2.3.4")])
        self.assertEqual(r.body, b"client=1.2.3.4 remote=127.0.0.1")
        r = self.fetch_from("127.0.0.1", "/matched", [("X-Forwarded-For", "1.2.3.4")])
        self.assertEqual(r.body, b"matched")
        # From an untrusted peer the header is ignored.
        r = self.fetch_from("127.0.0.9", "/whoami", [("X-Forwarded-For", "1.2.3.4")])
        self.assertEqual(r.body, b"client=127.0.0.9 remote=127.0.0.9")
        r = self.fetch_from("127.0.0.9", "/matched", [("X-Forwarded-For", "1.2.3.4")])
        self.assertNotEqual(r.body, b"matched")

    def test_untrusted_client_values_replaced(self):
        self.start()
        h = seen_headers(self.port, "127.0.0.7", SPOOF)
        self.assertEqual(h["x-forwarded-for"], ["127.0.0.7"])
        self.assertEqual(h["x-forwarded-proto"], ["http"])
        self.assertEqual(h["x-forwarded-host"], ["app.example.test"])
        self.assertEqual(h["host"], ["app.example.test"])

    @unittest.skipIf(harness.gateway_kind() == "caddy",
                     "caddy 2.6.2 has no `servers { trusted_proxies }` option")
    def test_trusted_proxy_values_kept(self):
        self.start(["servers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}"])
        h = seen_headers(self.port, "127.0.0.1", SPOOF)
        self.assertEqual(h["x-forwarded-for"], ["1.2.3.4, 127.0.0.1"])
        self.assertEqual(h["x-forwarded-proto"], ["https"])
        self.assertEqual(h["x-forwarded-host"], ["orig.example.test"])
        # A peer outside the trusted range is not believed.
        h = seen_headers(self.port, "127.0.0.8", SPOOF)
        self.assertEqual(h["x-forwarded-for"], ["127.0.0.8"])
        self.assertEqual(h["x-forwarded-proto"], ["http"])
        self.assertEqual(h["x-forwarded-host"], ["app.example.test"])


if __name__ == "__main__":
    harness.main()

"""Keep-alive both sides: many requests over one client connection, and many client
connections, reuse a small number of upstream connections."""

import harness
from harness import Client, GatewayTest, free_port

SITE = """
:__PORT__ {
	bind 127.0.0.1
	reverse_proxy __UP__
}
"""

N = 50


class KeepAliveTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream(harness.echo_handler(), "echo")
        self.port = free_port()
        self.gw = self.gateway(SITE, [self.port], {"PORT": self.port, "UP": self.up.addr})

    def test_one_client_connection_reuses_upstream_connection(self):
        with Client(self.port) as c:
            conns = set()
            for i in range(N):
                r = c.request("GET", "/ka/%d" % i)
                self.assertEqual(r.status, 200, r)
                info = r.json()
                self.assertEqual(info["target"], "/ka/%d" % i)
                conns.add(info["conn"])
        self.assertEqual(self.up.count(), N)
        harness.log("upstream accepted %d connection(s) for %d requests" % (self.up.accepted, N))
        # Sequential requests on one client connection: one upstream connection is enough; a
        # second one may appear when a pooled connection's close races a request.
        self.assertLessEqual(self.up.accepted, 2)
        self.assertLessEqual(len(conns), 2)

    def test_client_keepalive_with_bodies(self):
        with Client(self.port) as c:
            for i in range(20):
                body = b"x" * (i * 1000)
                r = c.request("POST", "/body", body=body)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["body_len"], len(body))
        self.assertLessEqual(self.up.accepted, 2)

    def test_many_client_connections_share_pool(self):
        for i in range(N):
            with Client(self.port) as c:
                r = c.request("GET", "/fresh/%d" % i, [("Connection", "close")])
                self.assertEqual(r.status, 200, r)
                self.assertTrue(c.is_closed_by_peer(), "gateway kept a Connection: close conn")
        harness.log("upstream accepted %d connection(s) for %d client connections"
                    % (self.up.accepted, N))
        # The upstream pool outlives client connections; per-thread pools (--threads 2) may
        # each open their own.
        self.assertLessEqual(self.up.accepted, 4)

    def test_http10_client_gets_close(self):
        with Client(self.port) as c:
            r = c.request("GET", "/old", version="HTTP/1.0")
            self.assertEqual(r.status, 200, r)
            self.assertTrue(c.is_closed_by_peer())


if __name__ == "__main__":
    harness.main()

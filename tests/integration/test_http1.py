"""HTTP/1.1 details through the proxy: Expect: 100-continue, pipelining, HEAD/204 framing,
chunked responses, upstreams that close connections (Connection: close, idle timeouts that
make pooled connections stale), and the access log of a proxied request."""

import json
import time

import harness
from harness import Client, GatewayTest, free_port

SITE = """
:__PORT__ {
	bind 127.0.0.1
	log
	handle /stale/* {
		reverse_proxy __STALE__
	}
	handle /big* {
		reverse_proxy __BIG__
	}
	respond /static "static"
	reverse_proxy __UP__
}
"""


class Http1Test(GatewayTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream(harness.echo_handler(), "echo")
        # Closes keep-alive connections idle for 0.2 s: the gateway's pooled connection goes
        # stale between requests.
        self.stale = harness.UpstreamServer(harness.echo_handler(), "stale", idle_timeout=0.2)
        self._stoppers.append(self.stale.stop)
        self.big = self.upstream(harness.bigbody_handler(), "big")
        self.port = free_port()
        self.gw = self.gateway(SITE, [self.port], {"PORT": self.port, "UP": self.up.addr,
                                                   "STALE": self.stale.addr,
                                                   "BIG": self.big.addr})

    def test_expect_100_continue(self):
        body = b"z" * 100000
        with Client(self.port) as c:
            c.send_request("POST", "/expect", [("Expect", "100-continue"),
                                                ("Content-Length", str(len(body)))])
            c.conn.sock.settimeout(5)
            head = c.conn.read_until(b"\r\n\r\n")
            self.assertIsNotNone(head)
            self.assertTrue(head.startswith(b"HTTP/1.1 100"), head)
            c.conn.sendall(body)
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body_len"], len(body))

    def test_unread_body_on_respond_route_keeps_connection_in_sync(self):
        with Client(self.port) as c:
            r = c.request("POST", "/static", body=b"q" * 10000)
            self.assertEqual((r.status, r.body), (200, b"static"))
            r = c.request("GET", "/after-static")
            self.assertEqual(r.json()["target"], "/after-static")
        # A large unread body: the gateway may drain it or close the connection (Go closes
        # above 256 KiB), but must never parse body bytes as the next request.
        with Client(self.port) as c:
            c.send_request("POST", "/static", body=b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
                           * 30000)
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"static"))
            try:
                r = c.request("GET", "/after-big")
                self.assertEqual(r.json()["target"], "/after-big")
            except (ConnectionError, OSError):
                pass  # closed instead of drained: fine
        self.assertEqual([x for x in self.up.requests if x["target"] == "/smuggled"], [])

    def test_pipelined_requests_answered_in_order(self):
        with Client(self.port) as c:
            raw = b"".join(b"GET /pipe/%d HTTP/1.1\r\nHost: example.test\r\n\r\n" % i
                           for i in range(5))
            c.conn.sendall(raw)
            for i in range(5):
                r = c.read_response()
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json()["target"], "/pipe/%d" % i)

    def test_head_and_204_have_no_body(self):
        with Client(self.port) as c:
            r = c.request("HEAD", "/head")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, b"")
            self.assertIsNotNone(r.header("content-length"))
            r = c.request("GET", "/nc?status=204")
            self.assertEqual(r.status, 204)
            self.assertEqual(r.body, b"")
            # The connection is still in sync after both.
            r = c.request("GET", "/after")
            self.assertEqual(r.json()["target"], "/after")

    def test_chunked_response_relayed(self):
        n = 3 * 65536 + 123
        with Client(self.port) as c:
            r = c.request("GET", "/big?n=%d&chunked=1" % n)
            self.assertEqual(r.status, 200)
            self.assertEqual(len(r.body), n)
            self.assertEqual(harness.hashlib.sha256(r.body).hexdigest(),
                             harness.pattern_bytes(n))
            r = c.request("GET", "/after-chunked")
            self.assertEqual(r.status, 200)

    def test_upstream_connection_close_each_response(self):
        with Client(self.port) as c:
            for i in range(10):
                r = c.request("GET", "/close/%d?close=1" % i)
                self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(self.up.accepted, 10)

    def test_stale_pooled_connections(self):
        # Each request finds the previous upstream connection closed by the upstream. GET and
        # POST must both succeed: a closed idle connection has to be detected before reuse (or
        # the request retried when nothing was sent).
        with Client(self.port) as c:
            for i in range(6):
                method = "GET" if i % 2 == 0 else "POST"
                r = c.request(method, "/stale/%d" % i, body=b"data" if method == "POST" else None)
                self.assertEqual(r.status, 200, "%s #%d after upstream idle close: %r"
                                 % (method, i, r))
                time.sleep(0.4)
        self.assertEqual(self.stale.count(), 6)

    def test_access_log_for_proxied_request(self):
        harness.fetch(self.port, "POST", "/logged?x=1", body=b"12345")
        entries = harness.wait_until(lambda: [e for e in self.gw.access_logs()
                                              if e["request"].get("uri") == "/logged?x=1"], 5)
        self.assertTrue(entries, self.gw.proc.output_tail())
        e = entries[0]
        harness.log(json.dumps(e))
        self.assertEqual(e["status"], 200)
        self.assertEqual(e["request"]["method"], "POST")
        self.assertEqual(e["request"]["host"], "127.0.0.1:%d" % self.port)
        self.assertEqual(e["request"]["proto"], "HTTP/1.1")
        self.assertEqual(e["request"]["remote_ip"], "127.0.0.1")
        self.assertGreater(e["size"], 0)
        self.assertIsInstance(e["duration"], (int, float))
        if self.gw.kind == "hsp":
            self.assertIn(self.up.addr, json.dumps(e.get("upstream")))
            self.assertEqual(e["end_reason"], "ok")
            if "bytes_read" in e:  # Caddy 2.7's field: request body bytes read
                self.assertEqual(e["bytes_read"], 5)
            # Access log on stdout, operational logs on stderr.
            on_stdout = [j for j in self.gw.proc.json_lines("stdout")
                         if isinstance(j.get("request"), dict)
                         and j["request"].get("uri") == "/logged?x=1"]
            self.assertEqual(len(on_stdout), 1, self.gw.proc.output_tail())
            self.assertFalse([j for j in self.gw.proc.json_lines("stdout")
                              if j.get("msg") == "listening"], "operational log on stdout")


if __name__ == "__main__":
    harness.main()

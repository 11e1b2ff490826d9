"""Upstream failures: refused -> 502 (fast), response header timeout -> 504, and retries
(lb_try_duration):
  - a dial failure is retried for every method (nothing reached the upstream; Caddy 2.6.2 then
    fails POSTs that have a body, see test_dial_failure_post_with_body);
  - a failure after the request was sent: Caddy retries GET only (its default retry_match);
    hsp-gateway retries nothing once a byte went upstream (the issue's rule; a listed
    difference). POST is answered 502 by both and the upstream saw it exactly once.
The access log names the reason."""

import socket
import time

import harness
from harness import Client, GatewayTest, closed_port, free_port

DOWN_SITE = """
:__PORT__ {
	bind 127.0.0.1
	log
	handle /down* {
		reverse_proxy __DOWN__
	}
	handle /slow* {
		reverse_proxy __SLOW__ {
			transport http {
				response_header_timeout 500ms
			}
		}
	}
}
"""

RETRY_SITE = """
:__PORT__ {
	bind 127.0.0.1
	handle /dial* {
		reverse_proxy __DOWN__ __GOOD__ {
			lb_policy round_robin
			lb_try_duration 3s
			lb_try_interval 50ms
		}
	}
	handle /reset* {
		reverse_proxy __RESET__ __GOOD__ {
			lb_policy round_robin
			lb_try_duration 3s
			lb_try_interval 50ms
		}
	}
	handle /noretry* {
		reverse_proxy __RESET__
	}
}
"""


class UpstreamDownTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.slow = self.upstream(harness.slow_handler(2.0), "slow")
        self.port = free_port()
        self.gw = self.gateway(DOWN_SITE, [self.port], {
            "PORT": self.port, "DOWN": "127.0.0.1:%d" % closed_port(), "SLOW": self.slow.addr})

    def test_refused_is_502_fast(self):
        times = []
        with Client(self.port) as c:
            for i in range(10):
                t0 = time.monotonic()
                r = c.request("GET", "/down/%d" % i)
                times.append(time.monotonic() - t0)
                self.assertEqual(r.status, 502, r)
        times.sort()
        harness.log("upstream refused -> 502: median %.1f ms, max %.1f ms (issue target 100 ms)"
                    % (times[len(times) // 2] * 1000, times[-1] * 1000))
        # Not a speed assertion: only catches a hang (e.g. waiting for a dial timeout).
        self.assertLess(times[-1], 5.0)

    def test_refused_post_is_502_and_connection_usable(self):
        with Client(self.port) as c:
            r = c.request("POST", "/down/p", body=b"payload" * 100)
            self.assertEqual(r.status, 502, r)
            r = c.request("GET", "/down/again")
            self.assertEqual(r.status, 502, r)

    def test_response_header_timeout_is_504(self):
        t0 = time.monotonic()
        r = harness.fetch(self.port, "GET", "/slow/x")
        took = time.monotonic() - t0
        harness.log("response_header_timeout 500ms -> %d after %.0f ms" % (r.status, took * 1000))
        self.assertEqual(r.status, 504, r)
        self.assertLess(took, 1.9, "answered only when the slow upstream did")

    def test_access_log_has_status(self):
        harness.fetch(self.port, "GET", "/down/logged")
        entries = harness.wait_until(
            lambda: [e for e in self.gw.access_logs() if e["request"].get("uri") == "/down/logged"],
            5)
        self.assertTrue(entries, self.gw.proc.output_tail())
        e = entries[0]
        harness.log("access log entry:", e)
        self.assertEqual(e["status"], 502)
        self.assertEqual(e["request"]["method"], "GET")
        self.assertEqual(e["request"]["remote_ip"], "127.0.0.1")
        self.assertEqual(e["request"]["proto"], "HTTP/1.1")
        self.assertIn("duration", e)
        self.assertIn("size", e)
        if self.gw.kind == "hsp":
            # hsp-gateway adds the upstream and why the request ended.
            self.assertIn("upstream", e)
            self.assertIn("end_reason", e)


BAD_SITE = """
:__PORT__ {
	bind 127.0.0.1
	reverse_proxy __BAD__
}
"""

BAD_RESPONSES = {
    "/garbage": b"this is not HTTP\r\n\r\n",
    "/empty": b"",
    "/truncated-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500,
    "/truncated-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"100\r\n" + b"y" * 100,
    "/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    "/close-delimited": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 3000,
    "/bad-status": b"HTTP/1.1 2000 Weird\r\nContent-Length: 0\r\n\r\n",
}


class BadUpstreamTest(GatewayTest):
    """Malformed or truncated upstream responses: 502 before the head was relayed; after it,
    the client connection is closed (never left hanging, never reused). Caddy 2.6.2 fails the
    truncated-chunked case (the client is left waiting); hsp-gateway must not."""

    def setUp(self):
        super().setUp()
        self.bad = self.upstream(harness.raw_handler(BAD_RESPONSES), "bad")
        self.port = free_port()
        self.gw = self.gateway(BAD_SITE, [self.port], {"PORT": self.port, "BAD": self.bad.addr})

    def test_invalid_heads_are_502(self):
        for path in ("/garbage", "/empty", "/bad-status"):
            r = harness.fetch(self.port, "GET", path)
            self.assertEqual(r.status, 502, (path, r))

    def test_truncated_body_closes_client_connection(self):
        for path in ("/truncated-cl", "/truncated-chunked", "/bad-chunk"):
            with Client(self.port, timeout=10) as c:
                c.send_request("GET", path)
                head = c.conn.read_until(b"\r\n\r\n")
                if head is None or b" 502 " in head.split(b"\r\n")[0] + b" ":
                    continue  # failed before the head was relayed: fine
                # The head went out; the body cannot be completed: the gateway must close.
                c.conn.sock.settimeout(5)
                rest = c.conn.buf
                try:
                    while True:
                        part = c.conn.sock.recv(65536)
                        if not part:
                            break
                        rest += part
                except socket.timeout:
                    self.fail("%s: client left hanging after a truncated upstream body" % path)
                except ConnectionResetError:
                    pass
                harness.log("%s: head relayed, %d body bytes, then closed" % (path, len(rest)))
        r = harness.fetch(self.port, "GET", "/close-delimited")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"z" * 3000)


class RetryTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.good = self.upstream(harness.echo_handler(), "good")
        self.reset = self.upstream(harness.reset_handler(), "reset")
        self.port = free_port()
        self.gw = self.gateway(RETRY_SITE, [self.port], {
            "PORT": self.port, "DOWN": "127.0.0.1:%d" % closed_port(), "GOOD": self.good.addr,
            "RESET": self.reset.addr})

    def test_dial_failure_retried_for_get(self):
        for i in range(6):
            r = harness.fetch(self.port, "GET", "/dial/g%d" % i)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("x-upstream"), "good")
        self.assertEqual(self.good.count("GET"), 6)

    def test_dial_failure_post_with_body(self):
        # Caddy's rule retries any method after a dial error (nothing reached the upstream), but
        # 2.6.2 then fails the retry with "invalid Read on closed Body" -> 502 (caddyserver/caddy
        # #5454). Accepted here: 200 with the body intact (retried) or 502 (not retried); never a
        # truncated or duplicated body upstream.
        statuses = []
        for i in range(6):
            body = b"post-body-%d" % i * 50
            r = harness.fetch(self.port, "POST", "/dial/p%d" % i, body=body)
            statuses.append(r.status)
            self.assertIn(r.status, (200, 502), r)
            if r.status == 200:
                self.assertEqual(r.json()["body_len"], len(body), "retried POST lost its body")
        harness.log("POST with body after dial failure: statuses %s (Caddy 2.6.2: 502 when the "
                    "dead upstream was tried first)" % statuses)
        self.assertEqual(self.good.count("POST"), statuses.count(200))
        for r in self.good.requests:
            self.assertEqual(r["body_len"], len(b"post-body-0") * 50)

    def test_dial_failure_post_without_body_retried(self):
        for i in range(6):
            r = harness.fetch(self.port, "POST", "/dial/e%d" % i, body=b"")
            self.assertEqual(r.status, 200, r)
        self.assertEqual(self.good.count("POST"), 6)

    def test_get_after_upstream_reset(self):
        # The upstream got the whole request, then reset. Caddy 2.6.2 retries a GET here (its
        # default retry_match); hsp-gateway follows the issue ("retries of idempotent requests
        # only before any byte went upstream") and answers 502 without a retry — a listed
        # difference (KNOWN_DIFFERENCES.md).
        statuses = []
        for i in range(6):
            r = harness.fetch(self.port, "GET", "/reset/g%d" % i)
            self.assertIn(r.status, (200, 502), r)
            statuses.append(r.status)
        harness.wait_until(lambda: self.reset.count("GET") + self.good.count("GET") >= 6, 3)
        harness.log("GET after reset: statuses %s; reset upstream saw %d, good saw %d"
                    % (statuses, self.reset.count("GET"), self.good.count("GET")))
        # round_robin alternates, so some attempts went to the resetting upstream first.
        self.assertGreaterEqual(self.reset.count("GET"), 1)
        if self.gw.kind == "caddy":
            self.assertEqual(statuses, [200] * 6)
            self.assertEqual(self.good.count("GET"), 6)
        else:
            self.assertEqual(statuses.count(502), self.reset.count("GET"), "a GET was retried")
            self.assertEqual(statuses.count(200), self.good.count("GET"))

    def test_post_not_retried_after_request_sent(self):
        statuses = []
        for i in range(6):
            r = harness.fetch(self.port, "POST", "/reset/p%d" % i, body=b"once-%d" % i)
            statuses.append(r.status)
            self.assertIn(r.status, (200, 502), r)
        harness.wait_until(lambda: self.reset.count("POST") + self.good.count("POST") >= 6, 3)
        reset_posts = self.reset.count("POST")
        good_posts = self.good.count("POST")
        harness.log("POST statuses %s; reset upstream saw %d, good saw %d"
                    % (statuses, reset_posts, good_posts))
        # Every POST reached exactly one upstream exactly once.
        self.assertEqual(reset_posts + good_posts, 6)
        self.assertEqual(statuses.count(502), reset_posts)
        self.assertEqual(statuses.count(200), good_posts)
        self.assertGreaterEqual(reset_posts, 1)
        targets = [r["target"] for r in self.reset.requests + self.good.requests
                   if r["method"] == "POST"]
        self.assertEqual(len(set(targets)), 6, "a POST was sent twice: %s" % targets)

    def test_no_retry_without_try_duration(self):
        r = harness.fetch(self.port, "GET", "/noretry/x")
        self.assertEqual(r.status, 502, r)
        self.assertEqual(self.reset.count("GET"), 1)


if __name__ == "__main__":
    harness.main()

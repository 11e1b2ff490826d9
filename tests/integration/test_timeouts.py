"""Timeouts: upstream dial timeout (a loopback listener whose accept backlog is full, so SYNs
are dropped) -> 502 like Caddy (a dial timeout is a dial error; 504 is for an upstream that
accepted but did not answer in time, see test_upstream_errors.py); idle keep-alive client
connections and slow request heads (`servers { timeouts { idle / read_header } }`) are closed
by the gateway."""

import socket
import time

import harness
from harness import Client, GatewayTest, free_port

SITE = """
:__PORT__ {
	bind 127.0.0.1
	handle /blackhole* {
		reverse_proxy __BLACKHOLE__ {
			transport http {
				dial_timeout 300ms
			}
		}
	}
	reverse_proxy __UP__
}
"""

TIMEOUTS = ["servers {\n\t\ttimeouts {\n\t\t\tidle 1s\n\t\t\tread_header 1s\n\t\t}\n\t}"]


class Blackhole:
    """A listener that never accepts, with its backlog filled so that new SYNs are dropped."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((harness.LOOPBACK, 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect((harness.LOOPBACK, self.port))
            except BlockingIOError:
                pass
            self.fillers.append(s)
        time.sleep(0.1)

    def stop(self):
        for s in self.fillers + [self.sock]:
            s.close()


class TimeoutTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream(harness.echo_handler(), "echo")
        self.hole = Blackhole()
        self._stoppers.append(self.hole.stop)
        self.port = free_port()
        self.gw = self.gateway(SITE, [self.port], {
            "PORT": self.port, "UP": self.up.addr,
            "BLACKHOLE": "127.0.0.1:%d" % self.hole.port}, global_options=TIMEOUTS)

    def test_dial_timeout(self):
        t0 = time.monotonic()
        r = harness.fetch(self.port, "GET", "/blackhole/x")
        took = time.monotonic() - t0
        harness.log("dial_timeout 300ms -> %d after %.0f ms" % (r.status, took * 1000))
        self.assertEqual(r.status, 502, r)
        self.assertLess(took, 2.9, "dial_timeout not applied (the default is 3 s)")

    def test_idle_client_connection_closed(self):
        with Client(self.port) as c:
            self.assertEqual(c.request("GET", "/a").status, 200)
            t0 = time.monotonic()
            closed = c.is_closed_by_peer(timeout=5.0)
            took = time.monotonic() - t0
        harness.log("idle keep-alive connection closed after %.2fs (idle 1s)" % took)
        self.assertTrue(closed, "idle connection still open 5 s after `idle 1s`")

    def test_slow_request_head_closed(self):
        with Client(self.port) as c:
            c.conn.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Partial: ")
            t0 = time.monotonic()
            c.conn.sock.settimeout(5.0)
            data = b""
            try:
                while True:
                    part = c.conn.sock.recv(4096)
                    if not part:
                        break
                    data += part
            except socket.timeout:
                self.fail("incomplete head kept open 5 s after `read_header 1s`")
            except ConnectionResetError:
                pass
            took = time.monotonic() - t0
        harness.log("incomplete head: closed after %.2fs, answer %r" % (took, data[:40]))
        if data:
            self.assertTrue(data.startswith(b"HTTP/1.1 408") or data.startswith(b"HTTP/1.1 400"),
                            data)
        self.assertEqual(self.up.count(), 0)


if __name__ == "__main__":
    harness.main()

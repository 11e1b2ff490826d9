"""Upgrades and streams: WebSocket echo through the gateway, the first SSE event reaching the
client while the upstream keeps the stream open, and upstream requests abandoned when the client
leaves."""

import os
import socket
import threading
import time

import harness
from harness import Client, GatewayTest, free_port

SITE = """
:__PORT__ {
	bind 127.0.0.1
	handle /ws* {
		reverse_proxy __WS__
	}
	handle /events* {
		reverse_proxy __SSE__
	}
	handle /stream* {
		reverse_proxy __STREAM__ {
			flush_interval -1
		}
	}
}
"""


class StreamingTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.ws = self.upstream(harness.websocket_handler(), "ws")
        self.sse_state = harness.SseState()
        self.sse = self.upstream(harness.sse_handler(self.sse_state), "sse")
        self.stream_state = harness.SseState()
        self.stream = self.upstream(
            harness.sse_handler(self.stream_state, "application/octet-stream"), "stream")
        self.port = free_port()
        self.gw = self.gateway(SITE, [self.port], {"PORT": self.port, "WS": self.ws.addr,
                                                   "SSE": self.sse.addr,
                                                   "STREAM": self.stream.addr})

    def test_websocket_echo(self):
        with Client(self.port, timeout=10) as c:
            resp, key = harness.ws_handshake(c, "/ws/chat")
            self.assertEqual(resp.status, 101, resp)
            self.assertEqual((resp.header("upgrade") or "").lower(), "websocket")
            self.assertEqual(resp.header("sec-websocket-accept"), harness.ws_accept_key(key))
            for i in range(20):
                msg = ("message %d " % i).encode() * (i + 1)
                c.conn.sendall(harness.ws_encode(1, msg, mask=True))
                fin, op, payload = harness.ws_read_frame(c.conn)
                self.assertEqual((fin, op, payload), (True, 1, msg))
            big = os.urandom(200 * 1024)
            c.conn.sendall(harness.ws_encode(2, big, mask=True))
            fin, op, payload = harness.ws_read_frame(c.conn)
            self.assertEqual(op, 2)
            self.assertEqual(payload, big)
            c.conn.sendall(harness.ws_encode(9, b"ping!", mask=True))
            self.assertEqual(harness.ws_read_frame(c.conn), (True, 10, b"ping!"))
            c.conn.sendall(harness.ws_encode(8, b"\x03\xe8", mask=True))
            fin, op, payload = harness.ws_read_frame(c.conn)
            self.assertEqual(op, 8)
            self.assertTrue(c.is_closed_by_peer(5.0), "tunnel not closed after close frame")

    def test_raw_upgrade_tunnel_both_ways(self):
        with Client(self.port, timeout=10) as c:
            r = c.request("GET", "/ws/raw", [("Upgrade", "x-raw-echo"), ("Connection", "Upgrade")])
            self.assertEqual(r.status, 101, r)
            self.assertEqual((r.header("upgrade") or "").lower(), "x-raw-echo")
            payload = os.urandom(300000)
            received = bytearray(c.conn.buf)
            c.conn.buf = b""
            # Write and read concurrently (a tunnel that only relays one way at a time, or
            # buffers, would stall once the socket buffers fill).
            sender = threading.Thread(target=c.conn.sock.sendall, args=(payload,))
            sender.start()
            while len(received) < len(payload):
                part = c.conn.sock.recv(65536)
                if not part:
                    break
                received += part
            sender.join(10)
            # (No half-close check: Caddy 2.6.2 tears the tunnel down on the first EOF.)
            self.assertEqual(len(received), len(payload))
            self.assertEqual(bytes(received), payload)

    def test_websocket_upstream_saw_upgrade(self):
        with Client(self.port, timeout=10) as c:
            resp, _ = harness.ws_handshake(c, "/ws/x")
            self.assertEqual(resp.status, 101)
            c.conn.sendall(harness.ws_encode(8, b"\x03\xe8", mask=True))
            harness.ws_read_frame(c.conn)
        harness.wait_until(lambda: self.ws.count() == 1, 5)
        seen = self.ws.requests[0]
        hdrs = {k.lower(): v for k, v in seen["headers"]}
        self.assertEqual(hdrs.get("upgrade", "").lower(), "websocket")
        self.assertIn("upgrade", hdrs.get("connection", "").lower())
        self.assertEqual(seen["target"], "/ws/x")

    def test_sse_first_event_while_stream_open(self):
        self.first_chunk_while_open("/events", self.sse_state, "text/event-stream")

    def test_flush_interval_minus_one_streams_first_chunk(self):
        self.first_chunk_while_open("/stream", self.stream_state, "application/octet-stream")

    def test_client_disconnect_closes_idle_upstream_stream(self):
        # The client leaves while the upstream stream is idle (nothing to forward): the gateway
        # must notice and close the upstream side instead of holding it until the next byte.
        c = Client(self.port, timeout=10)
        c.send_request("GET", "/events")
        self.assertTrue(harness.wait_until(self.sse_state.event_sent.is_set, 5))
        c.conn.read_until(b"data: hello")
        c.close()
        closed = harness.wait_until(self.sse_state.closed_by_peer.is_set, 5)
        self.assertTrue(closed, "upstream stream still open 5 s after the client disconnected")

    def first_chunk_while_open(self, target, state, ctype):
        with Client(self.port, timeout=10) as c:
            c.send_request("GET", target, [("Accept", ctype)])
            head = c.conn.read_until(b"\r\n\r\n")
            self.assertIsNotNone(head)
            first, headers = harness.parse_head(head)
            self.assertIn(" 200 ", first + " ")
            self.assertEqual(harness.header_get(headers, "content-type"), ctype)
            # Read until the first event is complete. Bounded only to catch a hang (a proxy that
            # buffers would wait for the stream's end, which never comes).
            dec = harness.ChunkedDecoder(
                "chunked" in (harness.header_get(headers, "transfer-encoding") or ""))
            got = dec.feed(c.conn.buf)
            c.conn.buf = b""
            start = time.monotonic()
            c.conn.sock.settimeout(5.0)
            try:
                while b"data: hello\n\n" not in got:
                    got += dec.feed(c.conn.read_some())
            except socket.timeout:
                self.fail("first event not delivered while the stream is open; got %r" % got)
            waited = time.monotonic() - start
            harness.log("%s: first event after %.1f ms" % (target, waited * 1000))
            self.assertFalse(state.release.is_set())
            self.assertFalse(state.closed_by_peer.is_set(),
                             "upstream stream closed before the client got the event")
            # Let the stream end and check the rest arrives too.
            state.release.set()
            c.conn.sock.settimeout(5.0)
            while b"data: bye\n\n" not in got:
                part = c.conn.read_some()
                if not part:
                    break
                got += dec.feed(part)
            self.assertIn(b"data: bye\n\n", got)



class SilentUpstream:
    """Accepts one connection, reads the request head, never answers, and records when the
    gateway closes the connection."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((harness.LOOPBACK, 0))
        self.sock.listen(4)
        self.addr = "%s:%d" % self.sock.getsockname()
        self.got_request = threading.Event()
        self.closed_by_peer = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        conn, _ = self.sock.accept()
        conn.settimeout(20)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.got_request.set()
            if not conn.recv(4096):  # blocks until the gateway closes (or 20 s pass)
                self.closed_by_peer.set()
        except OSError:
            self.closed_by_peer.set()
        finally:
            conn.close()
            self.sock.close()


class AbandonTest(GatewayTest):
    def test_client_leaving_before_the_response_head_abandons_the_upstream(self):
        # Caddy cancels the upstream request when the client goes away; so must we, also while
        # the upstream has not answered yet (not only while a body streams).
        up = SilentUpstream()
        port = free_port()
        site = ":__PORT__ {\n\tbind 127.0.0.1\n\treverse_proxy __UP__\n}\n"
        self.gateway(site, [port], {"PORT": port, "UP": up.addr})
        c = Client(port, timeout=10)
        c.send_request("GET", "/slow")
        self.assertTrue(up.got_request.wait(5), "request never reached the upstream")
        c.close()
        # Bounded only to catch a gateway that waits for the upstream regardless.
        self.assertTrue(up.closed_by_peer.wait(5),
                        "upstream connection still open 5 s after the client left")


if __name__ == "__main__":
    import unittest
    unittest.main()

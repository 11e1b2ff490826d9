"""Trailers through the proxy, both ways, with an HTTP/1.1 upstream (chunked trailer sections)
and HTTP/1.1 or HTTP/2 (h2c prior knowledge) clients.

The upstream is a raw socket server: it reads a chunked request to its end (trailers included),
keeps the bytes, and answers with a chunked body followed by an `X-Checksum` trailer.
"""

import socket
import threading
import unittest


import harness
from harness import LOOPBACK
from test_h2 import H2Client

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-Checksum\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: c0ffee\r\n\r\n")


class TrailerUpstream:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        conn.settimeout(10)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                if b"transfer-encoding: chunked" in head.lower():
                    # The body ends with the last chunk and its (possibly empty) trailer section.
                    while not (b"\r\n0\r\n" in b"\r\n" + rest and rest.endswith(b"\r\n\r\n")):
                        data = conn.recv(65536)
                        if not data:
                            return
                        rest += data
                with self.lock:
                    self.requests.append((head, rest))
                conn.sendall(RESPONSE)
                buf = b""
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()


@unittest.skipIf(harness.gateway_kind() == "caddy", "hsp-gateway's trailers")
class TrailersTest(unittest.TestCase):
    def setUp(self):
        self.up = TrailerUpstream()
        self.port = harness.free_port()
        config = ("http://t.localhost:%d {\n\tbind 127.0.0.1\n\treverse_proxy 127.0.0.1:%d\n}\n"
                  % (self.port, self.up.port))
        self.gw = harness.Gateway(config, [self.port], ["servers {\n\t\tprotocols h1 h2 h2c\n\t}"],
                                  name="trailers").start()

    def tearDown(self):
        self.gw.stop()
        self.up.close()

    def test_http1_both_ways(self):
        req = (b"POST /up HTTP/1.1\r\nHost: t.localhost\r\nTE: trailers\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\nX-Req-Trailer: r1\r\n\r\n")
        with socket.create_connection((LOOPBACK, self.port), timeout=10) as s:
            s.sendall(req)
            got = b""
            while not got.endswith(b"\r\n\r\n") or b"\r\n0\r\n" not in got:
                data = s.recv(65536)
                if not data:
                    break
                got += data
        self.assertIn(b"HTTP/1.1 200 OK", got, self.gw.proc.output_tail())
        self.assertIn(b"\r\n0\r\nX-Checksum: c0ffee\r\n\r\n", got)
        head, body = self.up.requests[-1]
        self.assertIn(b"transfer-encoding: chunked", head.lower())
        self.assertIn(b"abc", body)
        self.assertIn(b"0\r\nX-Req-Trailer: r1\r\n\r\n", body)

    def test_http2_both_ways(self):
        with H2Client(self.port, tls=False, authority="t.localhost:%d" % self.port) as c:
            st = c.start("POST", "/up", headers=[("te", "trailers")], end=False)
            c.conn.send_data(st.id, b"abc")
            c.conn.send_headers(st.id, [("x-req-trailer", "r2")], end_stream=True)
            c.flush()
            c.wait([st])
        self.assertEqual(st.status, 200, (st, self.gw.proc.output_tail()))
        self.assertEqual(bytes(st.data), b"hello world")
        self.assertIn(("x-checksum", "c0ffee"), list(st.trailers or ()), st)
        head, body = self.up.requests[-1]
        self.assertIn(b"transfer-encoding: chunked", head.lower())
        self.assertIn(b"0\r\nx-req-trailer: r2\r\n\r\n", body.lower())


if __name__ == "__main__":
    harness.main()

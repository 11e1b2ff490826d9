"""A 100 MiB body both ways through the gateway with bounded gateway memory.

The far side counts and hashes the bytes. Each side pauses before reading so that a proxy
without back-pressure would have to buffer most of the body; the assertion is on the gateway's
peak RSS (VmHWM), not on time."""

import hashlib
import time

import harness
from harness import Client, GatewayTest, free_port

SITE = """
:__PORT__ {
	bind 127.0.0.1
	handle /big* {
		reverse_proxy __BIG__
	}
	reverse_proxy __ECHO__
}
"""

SIZE = 100 << 20
# A streaming proxy holds a few buffers per connection; Caddy 2.6.2 peaks around 30-40 MiB on
# this test, mostly its runtime. Buffering the body would need > 100 MiB.
RSS_BOUND_KIB = 64 << 10


def body_parts(total, part=1 << 16):
    sent = 0
    while sent < total:
        n = min(part, total - sent)
        yield harness.PATTERN[:n]
        sent += n


class BigBodyTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.echo = self.upstream(harness.echo_handler(), "echo")
        self.big = self.upstream(harness.bigbody_handler(), "big")
        self.port = free_port()
        self.gw = self.gateway(SITE, [self.port], {"PORT": self.port, "ECHO": self.echo.addr,
                                                   "BIG": self.big.addr})

    def check_rss(self, what):
        hwm = self.gw.vm_hwm_kib()
        harness.log("%s: gateway VmHWM %d KiB (bound %d KiB)" % (what, hwm, RSS_BOUND_KIB))
        self.assertLess(hwm, RSS_BOUND_KIB, "gateway buffered the body? VmHWM %d KiB" % hwm)

    def test_upload_100mib_content_length(self):
        with Client(self.port, timeout=120) as c:
            # pause_ms: the upstream waits before reading, so back-pressure must hold the client.
            r = c.request("PUT", "/upload?pause_ms=1500", body=body_parts(SIZE),
                          content_length=SIZE)
        self.assertEqual(r.status, 200, r)
        info = r.json()
        self.assertEqual(info["body_len"], SIZE)
        self.assertEqual(info["body_sha256"], harness.pattern_bytes(SIZE))
        self.check_rss("upload")

    def test_upload_100mib_chunked(self):
        def chunks():
            for part in body_parts(SIZE, 1 << 16):
                yield b"%x\r\n" % len(part) + part + b"\r\n"
            yield b"0\r\n\r\n"
        with Client(self.port, timeout=120) as c:
            r = c.request("POST", "/upload?pause_ms=1000", [("Transfer-Encoding", "chunked")],
                          body=chunks())
        self.assertEqual(r.status, 200, r)
        info = r.json()
        self.assertEqual(info["body_len"], SIZE)
        self.assertEqual(info["body_sha256"], harness.pattern_bytes(SIZE))
        self.check_rss("chunked upload")

    def download(self, target):
        h = hashlib.sha256()
        n = [0]

        def sink(b):
            h.update(b)
            n[0] += len(b)
        with Client(self.port, timeout=120) as c:
            c.send_request("GET", target)
            time.sleep(1.5)  # a slow reader: the gateway must stop reading the upstream
            r = c.read_response("GET", sink=sink)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(n[0], SIZE)
        self.assertEqual(h.hexdigest(), harness.pattern_bytes(SIZE))

    def test_download_100mib_content_length(self):
        self.download("/big?n=%d" % SIZE)
        self.check_rss("download")

    def test_download_100mib_chunked(self):
        self.download("/big?n=%d&chunked=1" % SIZE)
        self.check_rss("chunked download")


if __name__ == "__main__":
    harness.main()

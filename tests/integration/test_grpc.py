"""gRPC through the gateway (issue 4): a real grpcio server (grpc_peer.py, its own process,
insecure = h2c on 127.0.0.1, port chosen at run time) behind `reverse_proxy h2c://...` on a
`tls internal` site, and a grpcio client that trusts the gateway's local CA root (from the
gateway's temporary data directory; never the system trust store) and connects to 127.0.0.1
with SNI and :authority grpc.localhost (never resolved). Unary, server streaming (100
messages), bidirectional streaming (50 messages interleaved), an error status with details and
trailing metadata, and 1 MiB messages both ways.

Written against Caddy 2.6.2 first (HSP_GATEWAY=/usr/bin/caddy)."""

import hashlib
import os
import queue
import ssl
import sys
import unittest

import grpc

import grpc_peer
import harness
import test_tls

LOOPBACK = harness.LOOPBACK
NAME = "grpc.localhost"
TIMEOUT = 30


class GrpcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = harness.Proc([sys.executable, os.path.join(harness.HERE, "grpc_peer.py"),
                                   "serve"])
        line = cls.server.wait_line(lambda l: l.startswith("port "), timeout=30)
        if line is None:
            cls.server.stop()
            raise RuntimeError("grpc_peer did not start:\n" + cls.server.output_tail())
        cls.grpc_port = int(line.split()[1])
        cls.http, cls.https = harness.free_port(), harness.free_port()
        config = ("%s {\n\tbind 127.0.0.1\n\ttls internal\n\treverse_proxy h2c://%s:%d\n}\n"
                  % (NAME, LOOPBACK, cls.grpc_port))
        cls.gw = harness.Gateway(config, [cls.https],
                                 ["http_port %d" % cls.http, "https_port %d" % cls.https],
                                 caddy_auto_https_off=False, name="grpc")
        try:
            cls.gw.start()
            root = cls.gw.local_ca_root()

            def verified():
                try:
                    test_tls.tls_get(cls.https, NAME, ctx=test_tls.client_context(root),
                                     timeout=5)
                    return True
                except (ssl.SSLError, OSError):
                    return False
            if not harness.wait_until(verified, timeout=15, interval=0.2):
                raise RuntimeError("no verifiable certificate for %s:\n%s"
                                   % (NAME, cls.gw.proc.output_tail()))
            with open(root, "rb") as f:
                cls.root_pem = f.read()
        except Exception:
            cls.gw.stop()
            cls.server.stop()
            raise
        cls.channel = grpc_peer.channel(cls.https, cls.root_pem, NAME)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        rc = cls.gw.stop()
        cls.server.stop()
        harness.log("gateway exit code %s" % rc)

    def test_direct_sanity(self):
        # The peer itself, without the gateway: what the proxied calls must look like.
        with grpc_peer.insecure_channel(self.grpc_port) as ch:
            self.assertEqual(grpc_peer.unary(ch, "Unary")(b"x", timeout=TIMEOUT), b"echo:x")

    def test_unary_with_metadata(self):
        call = grpc_peer.unary(self.channel, "Unary")
        resp, info = call.with_call(b"hello", metadata=(("x-client-id", "42"),
                                                        ("x-client-bin", b"\x00\xff")),
                                    timeout=TIMEOUT)
        self.assertEqual(resp, b"echo:hello")
        self.assertEqual(info.code(), grpc.StatusCode.OK)
        self.assertIn(("x-echo-initial", "1"), info.initial_metadata())
        trailing = info.trailing_metadata()
        self.assertIn(("x-echo-trailer", "done"), trailing)
        self.assertIn(("x-client-id", "42"), trailing)
        self.assertIn(("x-client-bin", b"\x00\xff"), trailing)
        # Many unary calls over the one channel (one h2 connection, many streams).
        futures = [call.future(b"n%d" % i, timeout=TIMEOUT) for i in range(50)]
        self.assertEqual([f.result() for f in futures], [b"echo:n%d" % i for i in range(50)])

    def test_server_streaming_100_messages(self):
        it = grpc_peer.server_stream(self.channel)(b"100", timeout=TIMEOUT)
        got = list(it)
        self.assertEqual(got, [b"message %d" % i for i in range(100)])
        self.assertEqual(it.code(), grpc.StatusCode.OK)

    def test_bidirectional_streaming_interleaved(self):
        q = queue.Queue()

        def requests():
            while True:
                m = q.get()
                if m is None:
                    return
                yield m

        responses = grpc_peer.bidi(self.channel)(requests(), timeout=TIMEOUT)
        # One message out, its echo back, before the next one is sent: both directions of the
        # stream are open through the gateway at the same time.
        for i in range(50):
            msg = b"m%d-" % i + b"x" * (i * 37)
            q.put(msg)
            self.assertEqual(next(responses), b"bidi:" + msg)
        q.put(None)
        self.assertEqual(list(responses), [])
        self.assertEqual(responses.code(), grpc.StatusCode.OK)

    def test_error_status_details_and_trailers(self):
        with self.assertRaises(grpc.RpcError) as cm:
            grpc_peer.unary(self.channel, "Fail").with_call(b"widget-7", timeout=TIMEOUT)
        err = cm.exception
        self.assertEqual(err.code(), grpc.StatusCode.NOT_FOUND, err)
        self.assertEqual(err.details(), "no such thing: widget-7")
        trailing = err.trailing_metadata()
        self.assertIn(("x-fail-reason", "missing"), trailing)
        self.assertIn(("x-fail-bin", b"\x00\x01\xfe\xff"), trailing)

    def test_one_mebibyte_messages(self):
        big = os.urandom(1 << 20)
        resp = grpc_peer.unary(self.channel, "Big")(big, timeout=TIMEOUT)
        self.assertEqual(resp, hashlib.sha256(big).hexdigest().encode())
        resp = grpc_peer.unary(self.channel, "Big")(b"%d" % (1 << 20), timeout=TIMEOUT)
        self.assertEqual(len(resp), 1 << 20)
        self.assertEqual(resp, grpc_peer.pattern(1 << 20))


if __name__ == "__main__":
    harness.main()

"""TLS to upstreams: `https://` upstreams, `transport http { tls_* versions }`, HTTP/2 over TLS
chosen by ALPN with the fall-back to HTTP/1.1, and the HTTP/1.1 client -> h2c upstream path.

The TLS upstream is a real Caddy 2.6 (Debian's) serving `tls internal` on loopback; it answers
with the protocol it received, so each test sees which HTTP version went upstream. The gateway
under test is always hsp-gateway (Caddy here is only the upstream).
"""

import os
import subprocess
import sys
import unittest

import harness
from harness import LOOPBACK

HERE = os.path.dirname(os.path.abspath(__file__))


def curl(port, host, path="/", extra=()):
    p = subprocess.run(["curl", "-sS", "-m", "10", "--resolve", "%s:%d:%s" % (host, port, LOOPBACK),
                        "-w", "\n%{http_code}", *extra, "http://%s:%d%s" % (host, port, path)],
                       capture_output=True, text=True, timeout=30)
    body, _, code = p.stdout.rpartition("\n")
    return int(code or 0), body


@unittest.skipIf(harness.gateway_kind() == "caddy", "the upstream side of hsp-gateway")
class UpstreamTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Caddy as the TLS upstream: one site speaking h1+h2, one on a server limited to h1.
        cls.h2_port, cls.h1_port, http = (harness.free_port(), harness.free_port(),
                                          harness.free_port())
        site = ("b.localhost:%d {\n\tbind 127.0.0.1\n\ttls internal\n"
                "\trespond \"upstream {http.request.proto} {http.request.tls.server_name}\"\n}\n")
        config = site % cls.h2_port + site % cls.h1_port
        opts = ["http_port %d" % http, "https_port %d" % cls.h2_port, "auto_https disable_redirects",
                "servers 127.0.0.1:%d {\n\t\tprotocols h1\n\t}" % cls.h1_port]
        cls.upstream = harness.Gateway(config, [cls.h2_port, cls.h1_port], opts,
                                       binary=harness.caddy_binary(), kind="caddy",
                                       caddy_auto_https_off=False, name="tls-upstream").start()
        root = cls.upstream.local_ca_root()
        harness.wait_until(lambda: os.path.isfile(root), timeout=20)
        cls.root = root

    @classmethod
    def tearDownClass(cls):
        cls.upstream.stop()

    def gateway(self, transport, port=None, scheme="https", extra_sites=""):
        port = port or self.h2_port
        listen = harness.free_port()
        config = ("http://a.localhost:%d {\n\tbind 127.0.0.1\n"
                  "\treverse_proxy %s://127.0.0.1:%d {\n\t\theader_up Host b.localhost\n"
                  "\t\ttransport http {\n%s\t\t}\n\t}\n}\n" %
                  (listen, scheme, port, "".join("\t\t\t%s\n" % t for t in transport)))
        gw = harness.Gateway(config + extra_sites, [listen], name="tls-up")  # started by with
        return gw, listen

    def test_h2_over_tls_chosen_by_alpn(self):
        gw, port = self.gateway(["tls_server_name b.localhost",
                                 "tls_trusted_ca_certs %s" % self.root])
        with gw:
            for _ in range(3):  # the second and third reuse the multiplexed connection
                code, body = curl(port, "a.localhost")
                self.assertEqual((code, body), (200, "upstream HTTP/2.0 b.localhost"),
                                 gw.proc.output_tail())
            # An HTTP/2 client (h2c prior knowledge is off here: HTTP/1.1 client) and a POST.
            code, body = curl(port, "a.localhost", extra=["--data-binary", "x" * 100000])
            self.assertEqual(code, 200, gw.proc.output_tail())

    def test_versions_1_1_keeps_http1_over_tls(self):
        gw, port = self.gateway(["tls_server_name b.localhost", "versions 1.1",
                                 "tls_trusted_ca_certs %s" % self.root])
        with gw:
            for _ in range(2):
                self.assertEqual(curl(port, "a.localhost"),
                                 (200, "upstream HTTP/1.1 b.localhost"), gw.proc.output_tail())

    def test_upstream_without_h2_falls_back_to_http1(self):
        gw, port = self.gateway(["tls_server_name b.localhost",
                                 "tls_trusted_ca_certs %s" % self.root], port=self.h1_port)
        with gw:
            for _ in range(3):  # first: ALPN says http/1.1; then remembered
                self.assertEqual(curl(port, "a.localhost"),
                                 (200, "upstream HTTP/1.1 b.localhost"), gw.proc.output_tail())

    def test_versions_2_only_refuses_an_http1_upstream(self):
        gw, port = self.gateway(["tls_server_name b.localhost", "versions 2",
                                 "tls_trusted_ca_certs %s" % self.root], port=self.h1_port)
        with gw:
            self.assertEqual(curl(port, "a.localhost")[0], 502)
            # Caddy's h1-only server refuses an h2-only ALPN offer in the handshake; a server
            # that ignores ALPN instead would get upstream_no_h2.
            line = gw.proc.wait_line(lambda l: "upstream_no_h2" in l or
                                     "no application protocol" in l, timeout=5)
            self.assertTrue(line, gw.proc.output_tail())

    def test_untrusted_certificate_is_refused_with_the_reason(self):
        # System roots only: the upstream's local CA is not among them.
        gw, port = self.gateway(["tls_server_name b.localhost"])
        with gw:
            self.assertEqual(curl(port, "a.localhost")[0], 502)
            line = gw.proc.wait_line(lambda l: "upstream_tls_failed" in l, timeout=5)
            self.assertTrue(line, gw.proc.output_tail())
            self.assertIn("unable to get local issuer certificate", line)

    def test_wrong_name_is_refused(self):
        # The certificate is for b.localhost; asking for another name must fail verification
        # even though the CA is trusted (Caddy's upstream has no certificate for it either).
        gw, port = self.gateway(["tls_server_name other.localhost",
                                 "tls_trusted_ca_certs %s" % self.root])
        with gw:
            self.assertEqual(curl(port, "a.localhost")[0], 502)

    def test_insecure_skip_verify(self):
        gw, port = self.gateway(["tls_server_name b.localhost", "tls_insecure_skip_verify"])
        with gw:
            self.assertEqual(curl(port, "a.localhost"),
                             (200, "upstream HTTP/2.0 b.localhost"), gw.proc.output_tail())

    def test_trust_settings_do_not_share_connections(self):
        # Same upstream and name, one route trusting the CA and one not: the untrusted route
        # must not ride on the trusted route's pooled connection.
        listen = harness.free_port()
        route = ("http://%s.localhost:%d {\n\tbind 127.0.0.1\n"
                 "\treverse_proxy https://127.0.0.1:%d {\n\t\theader_up Host b.localhost\n"
                 "\t\ttransport http {\n\t\t\ttls_server_name b.localhost\n%s\t\t}\n\t}\n}\n")
        config = (route % ("a", listen, self.h2_port,
                           "\t\t\ttls_trusted_ca_certs %s\n" % self.root) +
                  route % ("d", listen, self.h2_port, ""))
        with harness.Gateway(config, [listen], name="tls-up-pool") as gw:
            self.assertEqual(curl(listen, "a.localhost")[0], 200, gw.proc.output_tail())
            self.assertEqual(curl(listen, "d.localhost")[0], 502, gw.proc.output_tail())
            self.assertEqual(curl(listen, "a.localhost")[0], 200, gw.proc.output_tail())


    def test_server_name_is_per_route_not_per_context(self):
        # Found by a user trial: two routes to the same upstream with the same trust settings
        # share a TLS context; each must still send and check its own name. One worker
        # thread, so the route that dials first would have lent its name to the other.
        listen = harness.free_port()
        route = ("http://%s.localhost:%d {\n\tbind 127.0.0.1\n"
                 "\treverse_proxy https://127.0.0.1:%d {\n\t\theader_up Host b.localhost\n"
                 "\t\ttransport http {\n\t\t\ttls_trusted_ca_certs %s\n%s\t\t}\n\t}\n}\n")
        config = (route % ("a", listen, self.h2_port, self.root,
                           "\t\t\ttls_server_name b.localhost\n") +
                  route % ("w", listen, self.h2_port, self.root,
                           "\t\t\ttls_server_name wrong.localhost\n") +
                  route % ("n", listen, self.h2_port, self.root, ""))
        with harness.Gateway(config, [listen], name="tls-up-name", threads=1) as gw:
            for _ in range(3):
                self.assertEqual(curl(listen, "a.localhost")[0], 200, gw.proc.output_tail())
                self.assertEqual(curl(listen, "w.localhost")[0], 502, gw.proc.output_tail())
                # No name: the dial host, an IP, so no SNI (Caddy's upstream then refuses).
                self.assertEqual(curl(listen, "n.localhost")[0], 502, gw.proc.output_tail())
            line = gw.proc.wait_line(lambda l: "upstream_tls_failed" in l and
                                     '"sni_sent":false' in l, timeout=5)
            self.assertTrue(line, gw.proc.output_tail())


@unittest.skipIf(harness.gateway_kind() == "caddy", "the upstream side of hsp-gateway")
class Http1ToH2cTest(unittest.TestCase):
    def test_http1_client_to_grpc_upstream_gets_trailers_in_the_last_chunk(self):
        peer = harness.Proc(["/usr/bin/python3", os.path.join(HERE, "grpc_peer.py"), "serve"])
        try:
            line = peer.wait_line(lambda l: l.startswith("port "), timeout=20)
            self.assertTrue(line, peer.output_tail())
            grpc_port = int(line.split()[1])
            listen = harness.free_port()
            config = ("http://g.localhost:%d {\n\tbind 127.0.0.1\n"
                      "\treverse_proxy h2c://127.0.0.1:%d\n}\n" % (listen, grpc_port))
            with harness.Gateway(config, [listen], name="h1-h2c") as gw:
                msg = b"\x00\x00\x00\x00\x05hello"  # a gRPC message frame: "hello"
                p = subprocess.run(
                    ["curl", "-sS", "-m", "10", "--http1.1", "--raw", "-D", "-",
                     "-H", "content-type: application/grpc", "-H", "te: trailers",
                     "--data-binary", "@-", "--resolve", "g.localhost:%d:%s" % (listen, LOOPBACK),
                     "http://g.localhost:%d/hsp.test.Echo/Unary" % listen],
                    input=msg, capture_output=True, timeout=30)
                out = p.stdout
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn(b"HTTP/1.1 200 OK", out, gw.proc.output_tail())
                self.assertIn(b"Transfer-Encoding: chunked", out)
                self.assertIn(b"echo:hello", out)
                # The trailers ride in the chunked body's trailer section.
                self.assertRegex(out, rb"\r\n0\r\n(.*\r\n)*grpc-status: 0\r\n")
        finally:
            peer.stop()


if __name__ == "__main__":
    harness.main()

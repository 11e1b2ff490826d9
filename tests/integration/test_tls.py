"""HTTPS (issue 4), mostly over HTTP/1.1 (HTTP/2 has test_h2.py): TLS listeners with
certificates from the local CA and from files, SNI selection, ALPN (h2 preferred, http/1.1, an
unknown protocol refused), protocol ranges, the TLS placeholders and the access log's
request.tls, the HTTP->HTTPS redirect, a certificate swap on reload while a request is in
flight, and a short bounded h2load --h1 run over TLS.

Real clients: curl, openssl s_client, h2load and Python's ssl module. Everything listens on
127.0.0.1 (every site says `bind 127.0.0.1`) on ports chosen at run time; certificates are made
with `openssl req` in a temporary directory, and the local CA lives in the gateway's own
temporary XDG data directory. Nothing is written to any trust store: clients are handed the
root or the self-signed certificate explicitly."""

import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

import harness

LOOPBACK = harness.LOOPBACK


def make_cert(directory, stem, names):
    """A self-signed P-256 certificate for `names` (DNS SANs); returns (cert path, key path)."""
    cert = os.path.join(directory, stem + ".pem")
    key = os.path.join(directory, stem + ".key")
    san = ",".join("DNS:" + n for n in names)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=" + names[0], "-addext",
                    "subjectAltName=" + san], check=True, capture_output=True, timeout=30)
    return cert, key


def der_of(cert_path):
    with open(cert_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def client_context(cafile=None, alpn=None, max_version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if max_version:
        ctx.maximum_version = max_version
    return ctx


class TlsResponse:
    def __init__(self, status, headers, body, peer_der, alpn, version):
        self.status = status
        self.headers = headers
        self.body = body
        self.peer_der = peer_der
        self.alpn = alpn
        self.version = version

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def tls_connect(port, sni, ctx=None, timeout=15.0):
    raw = socket.create_connection((LOOPBACK, port), timeout=timeout)
    try:
        return (ctx or client_context()).wrap_socket(raw, server_hostname=sni)
    except Exception:
        raw.close()
        raise


def tls_get(port, sni, target="/", host=None, ctx=None, timeout=15.0, on_handshake=None):
    """One request over a fresh TLS connection (Connection: close); reads to EOF."""
    s = tls_connect(port, sni, ctx, timeout)
    try:
        der = s.getpeercert(binary_form=True)
        if on_handshake:
            on_handshake(der)
        req = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (
            target, host or "%s:%d" % (sni, port))
        s.sendall(req.encode())
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLEOFError:
                break  # no close_notify: the data read so far is what counts
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = [tuple(x.split(": ", 1)) for x in lines[1:] if ": " in x]
        return TlsResponse(status, headers, body, der, s.selected_alpn_protocol(), s.version())
    finally:
        s.close()


class TlsClient(harness.Client):
    """harness.Client (keep-alive, raw HTTP/1.1) over one TLS connection."""

    def __init__(self, port, sni, ctx=None, timeout=15.0):
        self.port = port
        self.host = sni
        self.timeout = timeout
        self.conn = harness.Conn(tls_connect(port, sni, ctx, timeout), timeout=timeout)


def local_ca_root(gw):
    return os.path.join(gw.tmp, "home", "data", "hsp-gateway", "pki", "authorities", "local",
                        "root.crt")


@unittest.skipIf(harness.gateway_kind() == "caddy", "hsp-gateway's TLS listener")
class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = tempfile.mkdtemp(prefix="hsp-tls-certs-")
        cls.a = make_cert(cls.certs, "a", ["a.example.test"])
        cls.wild = make_cert(cls.certs, "wild", ["*.wild.example.test"])
        cls.b = make_cert(cls.certs, "b", ["b.example.test"])
        cls.s1 = make_cert(cls.certs, "s1", ["s.example.test"])
        cls.s2 = make_cert(cls.certs, "s2", ["s.example.test"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certs, ignore_errors=True)

    def ports(self):
        return harness.free_port(), harness.free_port()

    def options(self, http, https):
        return ["http_port %d" % http, "https_port %d" % https]

    def test_local_ca_site_with_curl_openssl_and_redirect(self):
        http, https = self.ports()
        config = ("a.localhost {\n\tbind 127.0.0.1\n"
                  "\trespond \"hello {scheme} {http.request.tls.server_name}\"\n}\n")
        with harness.Gateway(config, [http, https], self.options(http, https), name="tls-ca") as gw:
            root = local_ca_root(gw)
            self.assertTrue(os.path.isfile(root), gw.proc.output_tail())
            # The root's path is logged once, and the CA never touched the system trust store
            # (it only lives under the gateway's data directory).
            ready = [j for j in gw.proc.json_lines() if j.get("msg") == "tls_local_ca_ready"]
            self.assertEqual(len(ready), 1, gw.proc.output_tail())
            self.assertEqual(ready[0]["root"], root)
            url = "https://a.localhost:%d/x" % https
            resolve = "a.localhost:%d:%s" % (https, LOOPBACK)
            for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
                p = subprocess.run(["curl", "-sS", flag, "--cacert", root, "--resolve", resolve,
                                    "-w", "\\n%{http_code} %{http_version}", url],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(p.stdout, "hello https a.localhost\n200 " + version, flag)

            # A client that sends no ALPN at all, the request typed by hand.
            req = "GET /y HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n"
            p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (LOOPBACK, https),
                                "-servername", "a.localhost", "-CAfile", root, "-ign_eof"],
                               input=req, capture_output=True, text=True, timeout=30)
            self.assertIn("Verify return code: 0 (ok)", p.stdout, p.stdout + p.stderr)
            self.assertIn("No ALPN negotiated", p.stdout)
            self.assertIn("HTTP/1.1 200 OK", p.stdout)
            self.assertIn("hello https a.localhost", p.stdout)

            # A protocol we do not speak is never selected (handshake refused); among h2 and
            # http/1.1 ours is the preference order, h2 first, whatever the client's order.
            with self.assertRaises(ssl.SSLError):
                tls_get(https, "a.localhost", ctx=client_context(alpn=["spdy/3.1"]))
            r = tls_get(https, "a.localhost", ctx=client_context(root, alpn=["http/1.1"]))
            self.assertEqual((r.status, r.alpn), (200, "http/1.1"))
            ctx = client_context(root, alpn=["http/1.1", "h2"])
            with socket.create_connection((LOOPBACK, https), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="a.localhost") as s:
                    self.assertEqual(s.selected_alpn_protocol(), "h2")

            # HTTP -> HTTPS: 308, no default port (the https_port option, as Caddy 2.6.2 does),
            # and the HTTPS side answers itself (no loop).
            r = harness.fetch(http, target="/p?q=1", host="a.localhost:%d" % http)
            self.assertEqual(r.status, 308, r)
            self.assertEqual(r.header("Location"), "https://a.localhost/p?q=1")
            r = tls_get(https, "a.localhost", target="/p?q=1", ctx=client_context(root))
            self.assertEqual(r.status, 200)
            self.assertIsNone(r.header("Location"))

    def test_tls_placeholders_and_access_log(self):
        # Caddy 2.6's {http.request.tls.*} values and request.tls object in the access log.
        http, https = self.ports()
        config = ("a.localhost {\n\tbind 127.0.0.1\n\tlog {\n\t\toutput stdout\n\t}\n"
                  "\trespond \"{tls_version} {tls_cipher} {http.request.tls.proto} "
                  "{http.request.tls.resumed} {http.request.tls.proto_mutual}\"\n}\n")
        with harness.Gateway(config, [http, https], self.options(http, https),
                             name="tls-ph") as gw:
            root = local_ca_root(gw)
            r = tls_get(https, "a.localhost", ctx=client_context(root, alpn=["http/1.1"],
                                                                 max_version=ssl.TLSVersion.TLSv1_2))
            self.assertEqual(r.status, 200)
            version, cipher, proto, resumed, mutual = r.body.decode().split(" ")
            self.assertEqual((version, proto, resumed, mutual),
                             ("tls1.2", "http/1.1", "false", "true"))
            self.assertRegex(cipher, r"^TLS_ECDHE_(RSA|ECDSA)_WITH_[A-Z0-9_]+$")
            r = tls_get(https, "a.localhost", ctx=client_context(root))
            self.assertTrue(r.body.decode().startswith("tls1.3 TLS_AES_"), r.body)
            logs = harness.wait_until(lambda: len(gw.access_logs()) >= 2 and gw.access_logs())
            self.assertTrue(logs, gw.proc.output_tail())
            t = logs[-1]["request"]["tls"]
            self.assertEqual((t["version"], t["proto"], t["server_name"], t["resumed"]),
                             (0x0304, "", "a.localhost", False))
            self.assertNotIn("proto_mutual", t)  # Caddy 2.6.2 does not log it
            self.assertIn(t["cipher_suite"], (0x1301, 0x1302, 0x1303))

    def test_sni_selects_among_three_certificates(self):
        http, https = self.ports()
        config = ""
        for host, (cert, key), text in (("a.example.test", self.a, "a"),
                                         ("*.wild.example.test", self.wild, "wild"),
                                         ("b.example.test", self.b, "b")):
            config += ("%s {\n\tbind 127.0.0.1\n\ttls %s %s\n\trespond \"%s {host}\"\n}\n"
                       % (host, cert, key, text))
        with harness.Gateway(config, [http, https], self.options(http, https), name="tls-sni"):
            for sni, cert, body in (("a.example.test", self.a[0], b"a a.example.test"),
                                    ("x.wild.example.test", self.wild[0],
                                     b"wild x.wild.example.test"),
                                    ("B.Example.Test", self.b[0], b"b B.Example.Test")):
                r = tls_get(https, sni)
                self.assertEqual(r.peer_der, der_of(cert), sni)
                self.assertEqual((r.status, r.body), (200, body), sni)
            # Verified against the self-signed certificate itself, as a client would.
            r = tls_get(https, "a.example.test", ctx=client_context(self.a[0]))
            self.assertEqual(r.status, 200)
            # A wildcard covers one label only; names nobody serves (and no SNI at all, with no
            # IP site) fail the handshake, as in Caddy.
            for sni in ("a.b.wild.example.test", "zzz.example.test", None):
                with self.assertRaises((ssl.SSLError, ConnectionError), msg=str(sni)):
                    tls_get(https, sni)

    def test_protocol_range_per_name(self):
        # As Caddy's connection policies: a `protocols tls1.3` site refuses TLS 1.2 even on a
        # port it shares with a site that allows TLS 1.2.
        http, https = self.ports()
        (acert, akey), (bcert, bkey) = self.a, self.b
        config = ("a.example.test {\n\tbind 127.0.0.1\n\ttls %s %s {\n\t\tprotocols tls1.3\n"
                  "\t}\n\trespond \"a\"\n}\n"
                  "b.example.test {\n\tbind 127.0.0.1\n\ttls %s %s\n\trespond \"b\"\n}\n"
                  % (acert, akey, bcert, bkey))
        old = lambda: client_context(max_version=ssl.TLSVersion.TLSv1_2)  # noqa: E731
        with harness.Gateway(config, [http, https], self.options(http, https), name="tls-ver"):
            with self.assertRaises(ssl.SSLError):
                tls_get(https, "a.example.test", ctx=old())
            r = tls_get(https, "a.example.test")
            self.assertEqual((r.status, r.version), (200, "TLSv1.3"))
            r = tls_get(https, "b.example.test", ctx=old())
            self.assertEqual((r.status, r.version), (200, "TLSv1.2"))

    def test_reload_swaps_certificate_while_a_request_is_in_flight(self):
        http, https = self.ports()
        up = harness.UpstreamServer(harness.slow_handler(2.0), name="slow")
        try:
            def config(pair):
                return ("s.example.test {\n\tbind 127.0.0.1\n\ttls %s %s\n"
                        "\treverse_proxy %s\n}\n" % (pair[0], pair[1], up.addr))
            with harness.Gateway(config(self.s1), [http, https], self.options(http, https),
                                 name="tls-swap") as gw:
                result = {}

                def in_flight():
                    try:
                        result["r"] = tls_get(https, "s.example.test", target="/slow",
                                              timeout=30)
                    except Exception as e:  # reported by the main thread
                        result["error"] = e

                t = threading.Thread(target=in_flight)
                t.start()
                self.assertTrue(harness.wait_until(lambda: up.started >= 1, timeout=10))
                gw.reload(config(self.s2))
                line = gw.proc.wait_line(lambda l: '"config_loaded"' in l and
                                         '"generation":2' in l, timeout=10)
                self.assertIsNotNone(line, gw.proc.output_tail())
                # New connections get the new certificate at once; no restart.
                r = tls_get(https, "s.example.test", target="/fast?body=new")
                self.assertEqual(r.peer_der, der_of(self.s2[0]))
                self.assertEqual((r.status, r.body), (200, b"new"))
                t.join(timeout=30)
                self.assertNotIn("error", result, result.get("error"))
                old = result["r"]
                self.assertEqual(old.status, 200)
                self.assertEqual(old.peer_der, der_of(self.s1[0]))  # kept its certificate
                self.assertIn(b'"/slow"', old.body)
        finally:
            up.stop()

    def test_proxy_keepalive_bodies_and_websocket_over_tls(self):
        http, https = self.ports()
        echo = harness.UpstreamServer(harness.echo_handler(), name="echo")
        ws = harness.UpstreamServer(harness.websocket_handler(), name="ws")
        try:
            config = ("a.localhost {\n\tbind 127.0.0.1\n\treverse_proxy /ws* %s\n"
                      "\treverse_proxy %s\n}\n" % (ws.addr, echo.addr))
            with harness.Gateway(config, [http, https], self.options(http, https),
                                 name="tls-proxy") as gw:
                ctx = client_context(local_ca_root(gw))
                with TlsClient(https, "a.localhost", ctx) as c:
                    # One connection: plain, with a body, a slow answer (the client watch runs
                    # on the TLS stream meanwhile), a chunked upload.
                    r = c.request("GET", "/a?x=1")
                    self.assertEqual(r.status, 200, r)
                    info = r.json()
                    fields = {k.lower(): v for k, v in info["headers"]}
                    self.assertEqual(fields.get("x-forwarded-proto"), "https")
                    body = os.urandom(300 * 1024)
                    r = c.request("POST", "/up", body=body)
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.json()["body_len"], len(body))
                    r = c.request("GET", "/slow?delay_ms=300")
                    self.assertEqual(r.status, 200, r)
                    chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                    r = c.request("POST", "/chunked", [("Transfer-Encoding", "chunked")],
                                  body=chunked)
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.json()["body_prefix"], "hello world")
                self.assertEqual(echo.accepted, 1)  # one pooled upstream connection throughout
                with TlsClient(https, "a.localhost", ctx) as c:
                    resp, key = harness.ws_handshake(c, "/ws/chat", host="a.localhost")
                    self.assertEqual(resp.status, 101, resp)
                    for i in range(5):
                        msg = ("message %d " % i).encode() * (i + 1)
                        c.conn.sendall(harness.ws_encode(1, msg, mask=True))
                        self.assertEqual(harness.ws_read_frame(c.conn), (True, 1, msg))
                    big = os.urandom(100 * 1024)
                    c.conn.sendall(harness.ws_encode(2, big, mask=True))
                    self.assertEqual(harness.ws_read_frame(c.conn), (True, 2, big))
                    c.conn.sendall(harness.ws_encode(8, b"\x03\xe8", mask=True))
                    self.assertEqual(harness.ws_read_frame(c.conn)[1], 8)
                    self.assertTrue(c.is_closed_by_peer(5.0), "tunnel not closed after close")
        finally:
            echo.stop()
            ws.stop()

    def test_plain_http_to_the_https_port_gets_gos_answer(self):
        http, https = self.ports()
        config = "a.localhost {\n\tbind 127.0.0.1\n\trespond \"ok\"\n}\n"
        with harness.Gateway(config, [http, https], self.options(http, https), name="tls-plain"):
            with socket.create_connection((LOOPBACK, https), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            self.assertEqual(data, b"HTTP/1.0 400 Bad Request\r\n\r\n"
                                   b"Client sent an HTTP request to an HTTPS server.\n")

    def test_bad_certificate_file_on_reload_keeps_the_old_snapshot(self):
        http, https = self.ports()
        bad_key = os.path.join(self.certs, "not-a-key.pem")
        with open(bad_key, "w") as f:
            f.write("not a key\n")

        def config(cert, key):
            return "s.example.test {\n\tbind 127.0.0.1\n\ttls %s %s\n\trespond \"s\"\n}\n" % (
                cert, key)

        with harness.Gateway(config(*self.s1), [http, https], self.options(http, https),
                             name="tls-bad") as gw:
            for cert, key in ((self.s2[0], bad_key), (self.s2[0], self.a[1]),
                              (os.path.join(self.certs, "missing.pem"), self.s2[1])):
                before = len([j for j in gw.proc.json_lines() if j.get("msg") == "reload_failed"])
                gw.reload(config(cert, key))
                self.assertTrue(harness.wait_until(
                    lambda: len([j for j in gw.proc.json_lines()
                                 if j.get("msg") == "reload_failed"]) > before, timeout=10),
                    gw.proc.output_tail())
                r = tls_get(https, "s.example.test")
                self.assertEqual(r.peer_der, der_of(self.s1[0]), (cert, key))
                self.assertEqual(r.status, 200)
            errors = [j["error"] for j in gw.proc.json_lines() if j.get("msg") == "reload_failed"]
            self.assertTrue(any("missing.pem" in e for e in errors), errors)

    def test_handshake_under_read_header_timeout(self):
        http, https = self.ports()
        config = "a.localhost {\n\tbind 127.0.0.1\n\trespond \"ok\"\n}\n"
        options = self.options(http, https) + ["servers {\n\t\ttimeouts {\n\t\t\tread_header 1s"
                                               "\n\t\t}\n\t}"]
        with harness.Gateway(config, [http, https], options, name="tls-hs-timeout"):
            # A client that connects and never sends its ClientHello is cut after read_header.
            with harness.Client(https, timeout=15) as c:
                self.assertTrue(c.is_closed_by_peer(10.0), "silent TLS client not closed")
            r = tls_get(https, "a.localhost")
            self.assertEqual(r.status, 200)

    def test_drain_on_sigterm_finishes_tls_requests_and_closes_idle_ones(self):
        http, https = self.ports()
        up = harness.UpstreamServer(harness.slow_handler(1.0), name="slow")
        try:
            config = "a.localhost {\n\tbind 127.0.0.1\n\treverse_proxy %s\n}\n" % up.addr
            gw = harness.Gateway(config, [http, https], self.options(http, https),
                                 name="tls-drain").start()
            try:
                idle = TlsClient(https, "a.localhost")
                self.assertEqual(idle.request("GET", "/first").status, 200)
                result = {}

                def in_flight():
                    try:
                        result["r"] = tls_get(https, "a.localhost", target="/slow", timeout=30)
                    except Exception as e:  # reported by the main thread
                        result["error"] = e

                t = threading.Thread(target=in_flight)
                t.start()
                self.assertTrue(harness.wait_until(lambda: up.started >= 2, timeout=10))
                rc = gw.proc.stop(timeout=20)
                t.join(timeout=30)
                self.assertEqual(rc, 0, gw.proc.output_tail())
                self.assertNotIn("error", result, result.get("error"))
                self.assertEqual(result["r"].status, 200)
                self.assertTrue(idle.is_closed_by_peer(5.0))
                idle.close()
            finally:
                gw.stop()
        finally:
            up.stop()

    def test_h2load_h1_over_tls(self):
        http, https = self.ports()
        config = "a.localhost {\n\tbind 127.0.0.1\n\trespond \"ok\"\n}\n"
        with harness.Gateway(config, [http, https], self.options(http, https), name="tls-load") as gw:
            p = subprocess.run(["h2load", "--h1", "-n", "2000", "-c", "10",
                                "--connect-to=%s:%d" % (LOOPBACK, https),
                                "https://a.localhost:%d/" % https],
                               capture_output=True, text=True, timeout=120)
            harness.log(p.stdout[-1500:])
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("2000 succeeded, 0 failed, 0 errored", p.stdout)
            self.assertRegex(p.stdout, r"status codes: 2000 2xx")
            self.assertRegex(p.stdout, r"Application protocol: http/1.1")
            # Clients that close without close_notify (h2load, curl) end cleanly: no errors.
            errors = [j for j in gw.proc.json_lines() if j.get("level") == "error"]
            self.assertEqual(errors, [])


if __name__ == "__main__":
    harness.main()

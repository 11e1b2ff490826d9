"""HTTP/2 downstream (issue 4): h2 over TLS (ALPN) and h2c with prior knowledge, proxied to
HTTP/1.1 upstreams.

Real clients: curl (--http2, --http1.1, --http2-prior-knowledge), nghttp, h2load (h2 and --h1),
Python's ssl module without ALPN, and a python3-h2 client (H2Client below, also used by
test_h2_abuse.py) for bodies, concurrency and exact header checks. Certificates: the gateway's
local CA (`tls internal`; clients are handed its root from the gateway's temporary data
directory) and self-signed files made with `openssl req` in a temporary directory. Nothing is
written to any trust store. Everything listens on 127.0.0.1, ports chosen at run time; names
never go through DNS (curl --resolve, h2load --connect-to, an IP site for nghttp).

Written against Caddy 2.6.2 first (HSP_GATEWAY=/usr/bin/caddy). Caddy 2.6 ignores SIGHUP, so
the certificate swap reloads it through its admin API (on a loopback port); hsp-gateway gets
SIGHUP."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

import harness
import test_tls

LOOPBACK = harness.LOOPBACK
IS_CADDY = harness.gateway_kind() == "caddy"


# ---------------------------------------------------------------------------------------------
# A python3-h2 client over one connection (TLS with ALPN h2, or cleartext prior knowledge).

class H2Stream:
    def __init__(self, sid):
        self.id = sid
        self.headers = None
        self.data = bytearray()
        self.trailers = None
        self.ended = False
        self.reset = None  # RST_STREAM error code received

    @property
    def status(self):
        return int(self.header(":status")) if self.headers else None

    def header(self, name):
        for k, v in self.headers or ():
            if k == name:
                return v
        return None

    def done(self):
        return self.ended or self.reset is not None

    def json(self):
        return json.loads(bytes(self.data).decode())

    def __repr__(self):
        return "<H2Stream %d status=%s reset=%s %r>" % (self.id, self.status, self.reset,
                                                        bytes(self.data[:200]))


class GoAway:
    def __init__(self, payload):
        self.last_stream_id = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        self.error_code = int.from_bytes(payload[4:8], "big")
        self.additional_data = bytes(payload[8:])

    def __repr__(self):
        return "<GOAWAY last_stream_id=%d error_code=%d %r>" % (
            self.last_stream_id, self.error_code, self.additional_data[:100])


def h2_context(cafile=None, alpn=("h2",)):
    ctx = test_tls.client_context(cafile, alpn=list(alpn) if alpn else None)
    return ctx


class H2Client:
    """One HTTP/2 connection. Requests are started with start() and driven by wait(); the event
    loop acknowledges received data (so large responses flow) and sends request bodies as the
    peer's windows allow."""

    def __init__(self, port, sni=None, ctx=None, tls=True, timeout=30.0, authority=None,
                 validate_outbound=True, window=None):
        self.timeout = timeout
        raw = socket.create_connection((LOOPBACK, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            try:
                self.sock = (ctx or h2_context()).wrap_socket(raw, server_hostname=sni)
            except Exception:
                raw.close()
                raise
            self.alpn = self.sock.selected_alpn_protocol()
            if self.alpn != "h2":
                self.sock.close()
                raise AssertionError("ALPN selected %r, not h2" % self.alpn)
            self.peer_der = self.sock.getpeercert(binary_form=True)
        else:
            self.sock = raw
            self.alpn = None
            self.peer_der = None
        self.scheme = "https" if tls else "http"
        self.authority = authority or ("%s:%d" % (sni, port) if sni else "%s:%d" % (LOOPBACK,
                                                                                   port))
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate_outbound,
                                        normalize_outbound_headers=validate_outbound)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if window:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.conn.increment_flow_control_window(window)
        self.streams = {}
        self.bodies = {}
        self.goaway = None      # the last GoAway received
        self.goaways = []
        self.inbuf = b""
        self.closed = False     # EOF or reset from the peer
        self.remote_settings_seen = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def start(self, method, path, headers=(), body=None, authority=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", self.scheme),
                (":authority", authority or self.authority), (":path", path)]
        hdrs += list(headers)
        if body is not None and not any(k == "content-length" for k, _ in hdrs):
            hdrs.append(("content-length", str(len(body))))
        st = H2Stream(sid)
        self.streams[sid] = st
        self.conn.send_headers(sid, hdrs, end_stream=(body is None and end))
        if body is not None:
            self.bodies[sid] = memoryview(bytes(body))
        self._pump()
        self.flush()
        return st

    def _pump(self):
        for sid in list(self.bodies):
            mv = self.bodies[sid]
            if self.streams[sid].done():
                del self.bodies[sid]
                continue
            while len(mv):
                n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                        len(mv))
                if n <= 0:
                    break
                self.conn.send_data(sid, mv[:n].tobytes())
                mv = mv[n:]
            if len(mv):
                self.bodies[sid] = mv
            else:
                self.conn.end_stream(sid)
                del self.bodies[sid]

    def read_once(self, timeout=None):
        """Reads and processes one chunk; False once the connection is closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        # GOAWAY frames are taken out before python3-h2 sees them: h2 4.1 closes its state
        # machine on GOAWAY and then rejects the frames of streams the server still completes
        # (graceful shutdown), which is exactly what the tests need to read.
        self.inbuf += data
        passed = []
        while len(self.inbuf) >= 9:
            n = int.from_bytes(self.inbuf[:3], "big")
            if len(self.inbuf) < 9 + n:
                break
            frame, self.inbuf = self.inbuf[:9 + n], self.inbuf[9 + n:]
            if frame[3] == 7:  # GOAWAY
                self.goaway = GoAway(frame[9:])
                self.goaways.append(self.goaway)
            else:
                passed.append(frame)
        if passed:
            for ev in self.conn.receive_data(b"".join(passed)):
                self._event(ev)
        self._pump()
        try:
            self.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.closed = True
        return True

    def _event(self, ev):
        st = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived):
            st.headers = ev.headers
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            pass
        elif isinstance(ev, h2.events.DataReceived):
            if st is not None:
                st.data += ev.data
            try:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            except h2.exceptions.StreamClosedError:
                pass
        elif isinstance(ev, h2.events.TrailersReceived):
            st.trailers = ev.headers
        elif isinstance(ev, h2.events.StreamEnded):
            st.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if st is not None:
                st.reset = ev.error_code
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.remote_settings_seen = True

    def wait(self, streams, timeout=None):
        """Drives the connection until every stream in `streams` ended or was reset; raises on
        timeout or if the connection closed first."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not all(s.done() for s in streams):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("streams not done: %r" % [s for s in streams if not s.done()])
            if not self.read_once(timeout=left):
                raise ConnectionError("connection closed with streams open: %r (goaway %r)"
                                      % ([s for s in streams if not s.done()], self.goaway))
        return streams

    def request(self, method, path, headers=(), body=None, authority=None, timeout=None):
        st = self.start(method, path, headers, body, authority)
        self.wait([st], timeout)
        return st

    def close(self):
        try:
            self.conn.close_connection()
            self.flush()
        except Exception:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fields_of(info):
    """Request fields the echo upstream saw, names lower-cased, in order."""
    return [(k.lower(), v) for k, v in info["headers"]]


def curl(args, timeout=60):
    p = subprocess.run(["curl", "-sS"] + args, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def https_options(http, https):
    return ["http_port %d" % http, "https_port %d" % https]


class H2Test(harness.GatewayTest):
    @classmethod
    def setUpClass(cls):
        cls.certs = tempfile.mkdtemp(prefix="hsp-h2-certs-")
        cls.b = test_tls.make_cert(cls.certs, "b", ["b.example.test"])
        cls.a = test_tls.make_cert(cls.certs, "a", ["a.example.test"])
        cls.wild = test_tls.make_cert(cls.certs, "wild", ["*.wild.example.test"])
        cls.c = test_tls.make_cert(cls.certs, "c", ["c.example.test"])
        cls.s1 = test_tls.make_cert(cls.certs, "s1", ["s.example.test"])
        cls.s2 = test_tls.make_cert(cls.certs, "s2", ["s.example.test"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certs, ignore_errors=True)

    def https_gateway(self, config, name, options=(), **kw):
        """A gateway with automatic HTTPS on (Caddy too) on two fresh ports."""
        self.http, self.https = harness.free_port(), harness.free_port()
        gw = self.gateway(config, [self.https],
                          global_options=https_options(self.http, self.https) + list(options),
                          caddy_auto_https_off=False, name=name, **kw)
        return gw

    def wait_cert(self, port, sni, cafile):
        """The local CA issues on start; with Caddy the handshake can race the issuance."""
        def ok():
            try:
                test_tls.tls_get(port, sni, ctx=test_tls.client_context(cafile), timeout=5)
                return True
            except (ssl.SSLError, OSError):
                return False
        self.assertTrue(harness.wait_until(ok, timeout=15, interval=0.2),
                        "no verifiable certificate for %s" % sni)

    def sites_config(self, echo, big):
        (bcert, bkey) = self.b
        return ("a.localhost {\n\tbind 127.0.0.1\n\ttls internal\n\treverse_proxy /big* %s\n"
                "\treverse_proxy %s\n}\n"
                "b.example.test {\n\tbind 127.0.0.1\n\ttls %s %s\n\treverse_proxy %s\n}\n"
                "127.0.0.1 {\n\tbind 127.0.0.1\n\ttls internal\n\treverse_proxy %s\n}\n"
                % (big.addr, echo.addr, bcert, bkey, echo.addr, echo.addr))

    # -----------------------------------------------------------------------------------------

    def test_clients_over_tls_internal_and_certificate_files(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        big = self.upstream(harness.bigbody_handler(), "big")
        gw = self.https_gateway(self.sites_config(echo, big), "h2-clients")
        root = gw.local_ca_root()
        self.wait_cert(self.https, "a.localhost", root)
        port = self.https
        for sni, cafile in (("a.localhost", root), ("b.example.test", self.b[0])):
            url = "https://%s:%d/x?y=1" % (sni, port)
            resolve = "%s:%d:%s" % (sni, port, LOOPBACK)
            for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
                rc, out, err = curl([flag, "--cacert", cafile, "--resolve", resolve,
                                     "-w", "\n%{http_code} %{http_version}", url])
                self.assertEqual(rc, 0, "%s %s: %s" % (sni, flag, err))
                body, _, tail = out.rpartition("\n")
                self.assertEqual(tail, "200 " + version, (sni, flag, out))
                info = json.loads(body)
                self.assertEqual(info["target"], "/x?y=1")
                self.assertEqual(info["version"], "HTTP/1.1")  # h1 to the upstream
            # A client that offers no ALPN at all gets HTTP/1.1.
            ctx = test_tls.client_context(cafile)
            r = test_tls.tls_get(port, sni, target="/noalpn", ctx=ctx)
            self.assertIsNone(r.alpn)
            self.assertEqual(r.status, 200, r.body)
            self.assertIn(b'"/noalpn"', r.body)

        # nghttp has no --resolve: the IP site (no SNI; the local CA's certificate for the IP).
        p = subprocess.run(["nghttp", "-v", "https://%s:%d/nghttp" % (LOOPBACK, port)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:] + p.stderr)
        self.assertRegex(p.stdout, r"recv \(stream_id=\d+\) :status: 200")
        self.assertIn('"/nghttp"', p.stdout)

        for extra, proto in (([], "h2"), (["--h1"], "http/1.1")):
            argv = ["h2load"] + extra + ["-n", "200", "-c", "4"]
            if not extra:
                argv += ["-m", "10"]
            argv += ["--connect-to=%s:%d" % (LOOPBACK, port), "https://a.localhost:%d/load" % port]
            p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            harness.log(p.stdout[-1200:])
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("200 succeeded, 0 failed, 0 errored", p.stdout)
            self.assertIn("status codes: 200 2xx", p.stdout)
            self.assertIn("Application protocol: %s" % proto, p.stdout)

    def test_bodies_and_concurrent_streams(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        big = self.upstream(harness.bigbody_handler(), "big")
        gw = self.https_gateway(self.sites_config(echo, big), "h2-bodies")
        root = gw.local_ca_root()
        self.wait_cert(self.https, "a.localhost", root)
        with H2Client(self.https, "a.localhost", h2_context(root)) as c:
            body = os.urandom(1536 * 1024)  # 1.5 MiB up
            st = c.request("POST", "/upload", [("content-type", "application/octet-stream")],
                           body=body, timeout=60)
            self.assertEqual(st.status, 200, st)
            info = st.json()
            self.assertEqual(info["body_len"], len(body))
            self.assertEqual(info["body_sha256"], hashlib.sha256(body).hexdigest())

            n = 4 << 20  # 4 MiB down
            st = c.request("GET", "/big?n=%d" % n, timeout=60)
            self.assertEqual(st.status, 200, st)
            self.assertEqual(len(st.data), n)
            self.assertEqual(hashlib.sha256(bytes(st.data)).hexdigest(),
                             harness.pattern_bytes(n))

            # 50 streams at once on this connection; the upstream holds each 300 ms, so they
            # overlap at the gateway.
            streams = [c.start("GET", "/s/%d?delay_ms=300" % i) for i in range(50)]
            c.wait(streams, timeout=60)
            for i, st in enumerate(streams):
                self.assertEqual(st.status, 200, st)
                self.assertEqual(st.json()["target"], "/s/%d?delay_ms=300" % i)
            self.assertIsNone(c.goaway)

    def test_request_translation_to_http1(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        big = self.upstream(harness.bigbody_handler(), "big")
        gw = self.https_gateway(self.sites_config(echo, big), "h2-headers")
        root = gw.local_ca_root()
        self.wait_cert(self.https, "a.localhost", root)
        authority = "a.localhost:%d" % self.https
        path = "/p/a%20b/c?x=1&y=%2F&z=&x=2"
        with H2Client(self.https, "a.localhost", h2_context(root)) as c:
            st = c.request("GET", path, [("x-one", "1"), ("cookie", "a=1"), ("cookie", "b=2"),
                                         ("accept", "*/*")])
            self.assertEqual(st.status, 200, st)
            info = st.json()
            self.assertEqual(info["target"], path)
            self.assertEqual(info["method"], "GET")
            fields = fields_of(info)
            names = [k for k, _ in fields]
            self.assertEqual([v for k, v in fields if k == "host"], [authority])
            self.assertFalse([k for k in names if k.startswith(":")], fields)
            for hop in ("connection", "keep-alive", "proxy-connection", "transfer-encoding",
                        "upgrade", "http2-settings"):
                self.assertNotIn(hop, names, fields)
            self.assertEqual([v for k, v in fields if k == "x-one"], ["1"])
            # RFC 9113 §8.2.3: split cookie fields are one field on HTTP/1.1.
            self.assertEqual([v for k, v in fields if k == "cookie"], ["a=1; b=2"])
            # Response: HTTP/1-only fields of the upstream are not forwarded in h2.
            self.assertIsNone(st.header("connection"))
            self.assertEqual(st.header("x-upstream"), "echo")

            # A POST whose body has no length in h2 reaches the upstream whole.
            st = c.start("POST", "/nolen", end=False)
            c.conn.send_data(st.id, b"hello ")
            c.conn.send_data(st.id, b"world", end_stream=True)
            c.flush()
            c.wait([st])
            self.assertEqual(st.status, 200, st)
            self.assertEqual(st.json()["body_prefix"], "hello world")

        # Connection-specific fields are malformed in h2 (RFC 9113 §8.2.2): the stream is
        # refused (RST_STREAM or a 4xx), and nothing reaches the upstream.
        before = echo.started
        for name, value in (("connection", "keep-alive"), ("transfer-encoding", "chunked"),
                            ("upgrade", "websocket"), ("keep-alive", "timeout=5"),
                            ("proxy-connection", "keep-alive"), ("te", "gzip")):
            with H2Client(self.https, "a.localhost", h2_context(root),
                          validate_outbound=False) as c:
                st = c.start("GET", "/bad-" + name, [(name, value)])
                try:
                    c.wait([st], timeout=15)
                except ConnectionError:
                    pass  # a connection error (GOAWAY) is a refusal too
                refused = st.reset is not None or (st.status is not None and
                                                   400 <= st.status < 500) or c.closed
                self.assertTrue(refused, "%s: %r" % (name, st))
        self.assertEqual(echo.started, before, echo.requests[-3:])

    def test_h2c_prior_knowledge_only_when_enabled(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        site = ":__PORT__ {\n\tbind 127.0.0.1\n\treverse_proxy __UP__\n}\n"
        on_port, off_port = harness.free_port(), harness.free_port()
        self.gateway(site, [on_port], {"PORT": on_port, "UP": echo.addr},
                     global_options=["servers {\n\t\tprotocols h1 h2 h2c\n\t}"], name="h2c-on")
        self.gateway(site, [off_port], {"PORT": off_port, "UP": echo.addr}, name="h2c-off")

        url = "http://%s:%d/h2c?q=1" % (LOOPBACK, on_port)
        rc, out, err = curl(["--http2-prior-knowledge", "-w", "\n%{http_code} %{http_version}",
                             url])
        self.assertEqual(rc, 0, err)
        body, _, tail = out.rpartition("\n")
        self.assertEqual(tail, "200 2")
        self.assertEqual(json.loads(body)["target"], "/h2c?q=1")
        rc, out, err = curl(["--http1.1", "-w", "\n%{http_code} %{http_version}", url])
        self.assertEqual((rc, out.rpartition("\n")[2]), (0, "200 1.1"), err)
        with H2Client(on_port, tls=False) as c:
            streams = [c.start("GET", "/h2c/%d" % i) for i in range(10)]
            c.wait(streams)
            self.assertEqual([s.status for s in streams], [200] * 10)
            self.assertEqual(fields_of(streams[0].json()).count(("host", "%s:%d" % (
                LOOPBACK, on_port))), 1)

        # `Upgrade: h2c` (curl --http2 on http://): a bodyless request switches after a 101
        # and is answered on stream 1, as Caddy 2.6 does; one with a body stays HTTP/1.1.
        up_url = "http://%s:%d/upgraded?x=2" % (LOOPBACK, on_port)
        rc, out, err = curl(["--http2", "-w", "\n%{http_code} %{http_version}", up_url])
        self.assertEqual(rc, 0, err)
        body, _, tail = out.rpartition("\n")
        self.assertEqual(tail, "200 2")
        upgraded = json.loads(body)
        self.assertEqual(upgraded["target"], "/upgraded?x=2")
        # The upgrade's own fields stay here. (Caddy 2.6.2 forwards Connection: Upgrade and
        # Upgrade: h2c to the upstream on the upgraded request, which then asks the upstream
        # to switch too; hsp-gateway does not, on purpose.)
        names = [k.lower() for k, _ in fields_of(upgraded)]
        self.assertNotIn("http2-settings", names)
        self.assertNotIn("upgrade", names)
        rc, out, err = curl(["--http2", "--data-binary", "abc", "-w",
                             "\n%{http_code} %{http_version}", up_url])
        self.assertEqual((rc, out.rpartition("\n")[2]), (0, "200 1.1"), err)

        # Without h2c in `protocols` the preface is not answered as HTTP/2, nor the upgrade.
        url = "http://%s:%d/h2c" % (LOOPBACK, off_port)
        rc, out, err = curl(["--http2", "-w", "\n%{http_code} %{http_version}", url])
        self.assertEqual((rc, out.rpartition("\n")[2]), (0, "200 1.1"), err)
        rc, out, err = curl(["--http2-prior-knowledge", "-m", "10", "-w",
                             "\n%{http_code} %{http_version}", url])
        self.assertNotEqual(out.rpartition("\n")[2].split(" ")[-1], "2", (rc, out, err))
        rc, out, err = curl(["--http1.1", "-w", "\n%{http_code} %{http_version}", url])
        self.assertEqual((rc, out.rpartition("\n")[2]), (0, "200 1.1"), err)

    def test_sni_among_three_certificates_over_h2_and_redirect(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        config = ""
        for host, (cert, key) in (("a.example.test", self.a),
                                  ("*.wild.example.test", self.wild),
                                  ("c.example.test", self.c)):
            config += ("%s {\n\tbind 127.0.0.1\n\ttls %s %s\n\treverse_proxy %s\n}\n"
                       % (host, cert, key, echo.addr))
        self.https_gateway(config, "h2-sni")
        for sni, cert in (("a.example.test", self.a[0]), ("x.wild.example.test", self.wild[0]),
                          ("other.wild.example.test", self.wild[0]),
                          ("c.example.test", self.c[0])):
            # Verified against the expected certificate itself, with ALPN h2 only.
            with H2Client(self.https, sni, h2_context(cert)) as c:
                self.assertEqual(c.peer_der, test_tls.der_of(cert), sni)
                st = c.request("GET", "/sni")
                self.assertEqual(st.status, 200, (sni, st))
                self.assertEqual([v for k, v in fields_of(st.json()) if k == "host"],
                                 ["%s:%d" % (sni, self.https)])
        # openssl s_client with -alpn h2 names the served subject per name.
        for sni, subject in (("a.example.test", "a.example.test"),
                             ("y.wild.example.test", "*.wild.example.test"),
                             ("c.example.test", "c.example.test")):
            p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (LOOPBACK,
                                                                               self.https),
                                "-servername", sni, "-alpn", "h2"],
                               input=b"", capture_output=True, timeout=30)
            out = p.stdout.decode("latin-1")
            self.assertIn("ALPN protocol: h2", out, out + p.stderr.decode("latin-1"))
            self.assertRegex(out, r"subject=CN ?= ?%s\n" % re.escape(subject))

        # HTTP -> HTTPS: 308 to the same name and target.
        r = harness.fetch(self.http, target="/p?q=1", host="c.example.test:%d" % self.http)
        self.assertEqual(r.status, 308, r)
        self.assertRegex(r.header("Location") or "", r"^https://c\.example\.test(:\d+)?/p\?q=1$")
        rc, out, err = curl(["--http2", "-L", "--cacert", self.c[0],
                             "--resolve", "c.example.test:%d:%s" % (self.http, LOOPBACK),
                             "--connect-to", "c.example.test:443:%s:%d" % (LOOPBACK, self.https),
                             "-w", "\n%{http_code} %{http_version}",
                             "http://c.example.test:%d/follow" % self.http])
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.rpartition("\n")[2], "200 2")

    def test_certificate_swap_on_reload_with_h2_stream_in_flight(self):
        up = self.upstream(harness.slow_handler(2.0), "slow")

        def config(pair):
            return ("s.example.test {\n\tbind 127.0.0.1\n\ttls %s %s\n\treverse_proxy %s\n}\n"
                    % (pair[0], pair[1], up.addr))

        # Caddy 2.6 ignores SIGHUP: it is reloaded through its admin API on loopback.
        admin = "127.0.0.1:%d" % harness.free_port() if IS_CADDY else "off"
        gw = self.https_gateway(config(self.s1), "h2-swap", admin=admin)
        c = H2Client(self.https, "s.example.test", h2_context(self.s1[0]))
        try:
            st = c.start("GET", "/slow-in-flight")
            self.assertTrue(harness.wait_until(lambda: up.started >= 1, timeout=10))
            if IS_CADDY:
                rc, out, err = gw.reload_caddy(config(self.s2))
                self.assertEqual(rc, 0, out + err)
            else:
                gw.reload(config(self.s2))
                line = gw.proc.wait_line(lambda l: '"config_loaded"' in l and
                                         '"generation":2' in l, timeout=10)
                self.assertIsNotNone(line, gw.proc.output_tail())
            # A new connection after the reload gets the new certificate, over h2.
            with H2Client(self.https, "s.example.test", h2_context(self.s2[0])) as c2:
                self.assertEqual(c2.peer_der, test_tls.der_of(self.s2[0]))
                self.assertEqual(c2.request("GET", "/slow-new").status, 200)
            c.wait([st], timeout=30)
            self.assertEqual(st.status, 200, st)
            self.assertEqual(st.json()["target"], "/slow-in-flight")
            self.assertEqual(c.peer_der, test_tls.der_of(self.s1[0]))
        finally:
            c.close()

    def test_sigterm_sends_goaway_and_the_stream_completes(self):
        up = self.upstream(harness.echo_handler(), "slow")
        config = "a.localhost {\n\tbind 127.0.0.1\n\ttls internal\n\treverse_proxy %s\n}\n" % (
            up.addr)
        gw = self.https_gateway(config, "h2-term", options=["grace_period 10s"])
        root = gw.local_ca_root()
        self.wait_cert(self.https, "a.localhost", root)
        c = H2Client(self.https, "a.localhost", h2_context(root))
        try:
            self.assertEqual(c.request("GET", "/warm").status, 200)
            st = c.start("GET", "/slow?delay_ms=2000")
            self.assertTrue(harness.wait_until(lambda: up.started >= 2, timeout=10))
            gw.proc.send_signal(signal.SIGTERM)
            c.wait([st], timeout=30)
            self.assertEqual(st.status, 200, st)
            self.assertEqual(st.json()["target"], "/slow?delay_ms=2000")
            # GOAWAY before or after the stream's end; then the connection closes.
            deadline = time.monotonic() + 15
            while c.goaway is None and time.monotonic() < deadline and c.read_once(timeout=15):
                pass
            self.assertIsNotNone(c.goaway, "no GOAWAY on SIGTERM")
            self.assertEqual(c.goaway.error_code, 0, c.goaway)  # NO_ERROR
            self.assertGreaterEqual(c.goaway.last_stream_id, st.id)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and c.read_once(timeout=15):
                pass
            self.assertTrue(c.closed, "connection still open after GOAWAY")
        finally:
            c.close()
        rc = gw.proc.wait(20)
        self.assertEqual(rc, 0, gw.proc.output_tail())


if __name__ == "__main__":
    harness.main()

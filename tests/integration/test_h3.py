"""HTTP/3 downstream (issue 7): the UDP twin of an HTTPS site's port, proxied through the same
routes as h1/h2 to HTTP/1.1 upstreams: a GET (upstream view, access log), a 4 MiB response, a
1 MiB upload, 50 requests on one connection and 4 clients at once, an unknown host (as over h2),
Alt-Svc on h1/h2 responses and `servers { protocols h1 h2 }`, Chromium (forced QUIC with two
SNI names, and the Alt-Svc upgrade), the certificate swap on reload, a reload that replaces the
h3 listener on the same port, drain on SIGTERM, Version Negotiation, connection migration, and
malformed requests (stream errors that never reach the upstream).

Real clients only:
  - Debian's `gtlsclient` (ngtcp2-client 0.12, GnuTLS). It does not verify certificates. Its
    --sni option has no effect: it sends the HOST argument as SNI, and "localhost" when HOST is
    an IP, so the gtlsclient sites are named `localhost` (resolved to 127.0.0.1 by /etc/hosts;
    the site binds 127.0.0.1 only, so ::1 would fail loudly). It exits 0 whatever happened
    (refused, timed out, reset), so every run is judged from its verbose log (GtlsRun below:
    response fields, body sizes, stream close codes, the server's certificate from the
    dumped CRYPTO frames) or from the files --download wrote. Every run is wrapped in
    `timeout`.
  - curl (h1 and h2 over TCP: Alt-Svc, and the unknown-host answer over h2).
  - Debian's headless Chromium through chromium.py (forced QUIC, and the Alt-Svc upgrade), kept
    on loopback, with its strace network audit when strace is installed.

Everything listens on 127.0.0.1, ports chosen at run time (TCP and UDP free: ports.py);
certificates are the gateway's local CA (`tls internal`, in its temporary data directory) or
files made by openssl in a temporary directory. Nothing is written to any trust store.
Floods of Initials and stream-limit abuse are another test's business (not here)."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chromium  # noqa: E402
import harness  # noqa: E402
import ports  # noqa: E402
import test_tls  # noqa: E402

LOOPBACK = harness.LOOPBACK
GTLSCLIENT = shutil.which("gtlsclient") or "/usr/bin/gtlsclient"
ALT_SVC_MA = 2592000


# ---------------------------------------------------------------------------------------------
# gtlsclient and a reader of its verbose log.

_RESP_FIELD = re.compile(r"^http: stream 0x([0-9a-f]+) \[(:?[^:\]]+): (.*)\]$")
_BODY = re.compile(r"^http: stream 0x([0-9a-f]+) body (\d+) bytes$")
_CLOSED = re.compile(r"HTTP stream (\d+) closed with error code (\d+)")
_RESET = re.compile(r"frm rx \d+ 1RTT RESET_STREAM\(0x04\) id=0x([0-9a-f]+) "
                    r"app_error_code=.*?\(0x([0-9a-f]+)\)")
_HEXDUMP = re.compile(r"^[0-9a-f]{8}  ")

H3_NO_ERROR = 0x100
H3_MESSAGE_ERROR = 0x10e


class H3Stream:
    def __init__(self, sid):
        self.id = sid
        self.fields = []          # response fields, pseudo-headers included, in order
        self.body_len = 0         # as gtlsclient counted it (the body itself is not dumped)
        self.close_code = None    # "HTTP stream N closed with error code C"
        self.reset_code = None    # RESET_STREAM received from the server

    @property
    def status(self):
        v = self.field(":status")
        return int(v) if v is not None else None

    def field(self, name):
        for k, v in self.fields:
            if k == name:
                return v
        return None

    def __repr__(self):
        return "<H3Stream %d status=%s body=%d close=%s reset=%s>" % (
            self.id, self.status, self.body_len, self.close_code, self.reset_code)


class GtlsRun:
    """One gtlsclient run, read from its verbose log (stderr and stdout together)."""

    def __init__(self, argv, rc, out, elapsed):
        self.argv = argv
        self.rc = rc
        self.out = out
        self.elapsed = elapsed
        self.streams = {}
        self.handshake = "QUIC handshake has completed" in out
        m = re.search(r"Negotiated ALPN is (\S+)", out)
        self.alpn = m.group(1) if m else None
        self.lines = out.splitlines()
        for line in self.lines:
            m = _RESP_FIELD.match(line)
            if m:
                self.stream(int(m.group(1), 16)).fields.append((m.group(2), m.group(3)))
                continue
            m = _BODY.match(line)
            if m:
                self.stream(int(m.group(1), 16)).body_len += int(m.group(2))
                continue
            m = _CLOSED.search(line)
            if m:
                self.stream(int(m.group(1))).close_code = int(m.group(2))
                continue
            m = _RESET.search(line)
            if m:
                self.stream(int(m.group(1), 16)).reset_code = int(m.group(2), 16)

    def stream(self, sid):
        if sid not in self.streams:
            self.streams[sid] = H3Stream(sid)
        return self.streams[sid]

    def statuses(self):
        return [s.status for _, s in sorted(self.streams.items())]

    def ok_count(self):
        """Streams that got 200 and closed cleanly (H3_NO_ERROR, no reset)."""
        return sum(1 for s in self.streams.values()
                   if s.status == 200 and s.close_code == H3_NO_ERROR and s.reset_code is None)

    def crypto_data(self, level="Handshake"):
        """The CRYPTO stream bytes the client dumped for one encryption level (needs a run
        without --no-quic-dump)."""
        out = bytearray()
        collecting = False
        for line in self.lines:
            if line.startswith("Ordered CRYPTO data in "):
                collecting = line == "Ordered CRYPTO data in %s crypto level" % level
                continue
            if collecting:
                if _HEXDUMP.match(line):
                    hexpart = line.split("  |", 1)[0].split()[1:]
                    out += bytes(int(b, 16) for b in hexpart)
                else:
                    collecting = False
        return bytes(out)

    def peer_certificates(self):
        """The DER certificates of the server's TLS 1.3 Certificate message, leaf first."""
        data = self.crypto_data()
        i = 0
        while i + 4 <= len(data):
            mtype, mlen = data[i], int.from_bytes(data[i + 1:i + 4], "big")
            body = data[i + 4:i + 4 + mlen]
            i += 4 + mlen
            if mtype != 11:  # Certificate
                continue
            j = 1 + body[0]  # certificate_request_context
            end = j + 3 + int.from_bytes(body[j:j + 3], "big")
            j += 3
            certs = []
            while j < end:
                n = int.from_bytes(body[j:j + 3], "big")
                certs.append(bytes(body[j + 3:j + 3 + n]))
                j += 3 + n
                j += 2 + int.from_bytes(body[j:j + 2], "big")  # extensions
            return certs
        return []

    def describe(self, tail=25):
        interesting = [ln for ln in self.lines if not ln.startswith(("I0", "Sent packet",
                                                                     "Received packet",
                                                                     "Set timer"))
                       and not _HEXDUMP.match(ln)]
        return "gtlsclient %s -> rc=%s %.2fs handshake=%s streams=%s\n%s" % (
            " ".join(self.argv[4:]), self.rc, self.elapsed, self.handshake,
            sorted(self.streams.values(), key=lambda s: s.id), "\n".join(interesting[-tail:]))


def gtls_argv(port, urls, extra=(), host="localhost", timeout=30, quic_dump=False,
              http_dump=False):
    """quic_dump: hex dumps of CRYPTO and STREAM data (needed for peer_certificates());
    http_dump: response bodies, and the "body N bytes" lines body_len counts."""
    argv = ["timeout", "-k", "3", str(timeout), GTLSCLIENT, "--exit-on-all-streams-close",
            "--timeout=%ds" % max(5, timeout), "--handshake-timeout=5s"]
    if not quic_dump:
        argv.append("--no-quic-dump")
    if not http_dump:
        argv.append("--no-http-dump")
    return argv + list(extra) + [host, str(port)] + list(urls)


def gtls(port, urls, extra=(), host="localhost", timeout=30, **dumps):
    """Runs gtlsclient to completion (bounded by `timeout`); a GtlsRun."""
    argv = gtls_argv(port, urls, extra, host, timeout, **dumps)
    t0 = time.monotonic()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout + 10)
    return GtlsRun(argv, p.returncode, p.stdout.decode("utf-8", "replace"),
                   time.monotonic() - t0)


class GtlsBackground:
    """gtlsclient started now, read later (result())."""

    def __init__(self, port, urls, extra=(), host="localhost", timeout=30, **dumps):
        self.argv = gtls_argv(port, urls, extra, host, timeout, **dumps)
        self.timeout = timeout
        self.t0 = time.monotonic()
        self.out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT)

    def result(self):
        try:
            rc = self.proc.wait(timeout=self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=5)
        self.out.seek(0)
        text = self.out.read().decode("utf-8", "replace")
        self.out.close()
        return GtlsRun(self.argv, rc, text, time.monotonic() - self.t0)


def curl(args, timeout=30):
    p = subprocess.run(["timeout", "-k", "3", str(timeout), "curl", "-sS"] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 10)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def curl_head(port, flag, host="localhost", extra=()):
    """(status, [(name, value)], body) of GET / over TCP with curl `flag` (--http1.1, --http2),
    the certificate unchecked, the name pinned to 127.0.0.1."""
    rc, out, err = curl([flag, "-k", "-D", "-", "--resolve", "%s:%d:%s" % (host, port, LOOPBACK)]
                        + list(extra) + ["https://%s:%d/" % (host, port)])
    if rc != 0:
        raise AssertionError("curl %s failed rc=%d: %s" % (flag, rc, err))
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    fields = [(k.strip().lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
    return status, fields, body


def udp_bound(port):
    """True while something holds UDP 127.0.0.1:port (our bind then fails)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((LOOPBACK, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def udp_owners(port):
    """The `ss -ulnp` lines of the UDP sockets bound to 127.0.0.1:port (one per gateway worker
    and listener), with the owning process."""
    p = subprocess.run(["ss", "-H", "-u", "-l", "-n", "-p"], capture_output=True, text=True,
                       timeout=10)
    return [ln for ln in p.stdout.splitlines()
            if len(ln.split()) > 3 and ln.split()[3] == "%s:%d" % (LOOPBACK, port)]


def page_handler():
    """Serves chromium.REPORT_PAGE, never cacheable (one browser loads it several times)."""
    def handle(req):
        req.read_body()
        req.send_response(200, [("Content-Type", "text/html; charset=utf-8"),
                                ("Cache-Control", "no-store")],
                          chromium.REPORT_PAGE.encode())
        return "keep"
    return handle


TRICKLE_CHUNK = 16 << 10
TRICKLE_CHUNKS = 15


def trickle_handler():
    """A chunked response of ?chunks=N (default TRICKLE_CHUNKS) pieces of TRICKLE_CHUNK bytes,
    100 ms apart: the client keeps receiving (and acknowledging) for 1.5 s."""
    def handle(req):
        req.read_body()
        req.conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Cache-Control: no-store\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(int(req.query.get("chunks", TRICKLE_CHUNKS))):
            if i:
                time.sleep(0.1)
            part = harness.PATTERN[:TRICKLE_CHUNK]
            req.conn.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        req.conn.sendall(b"0\r\n\r\n")
        return "keep"
    return handle


def site(host, upstream, tls="tls internal"):
    """A site block: loopback only, access log on (stderr), everything proxied."""
    return ("%s {\n\tbind 127.0.0.1\n\t%s\n\tlog\n\treverse_proxy %s\n}\n"
            % (host, tls, upstream))


@unittest.skipIf(harness.gateway_kind() == "caddy", "hsp-gateway's h3 listener (log formats, "
                 "SIGHUP reload)")
class H3Test(harness.GatewayTest):
    @classmethod
    def setUpClass(cls):
        cls.certs = tempfile.mkdtemp(prefix="hsp-h3-certs-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certs, ignore_errors=True)

    def h3_gateway(self, config, name, options=(), wait_udp=True, sni="localhost",
                   extra_args=()):
        """A gateway with HTTPS on a port free for TCP and UDP (self.https); waits for a TLS
        handshake over TCP (the local CA issues at start) and for the UDP socket."""
        self.http, self.https = harness.free_port(), ports.tcp_and_udp_port()
        gw = self.gateway(config, [self.https],
                          global_options=["http_port %d" % self.http,
                                          "https_port %d" % self.https] + list(options),
                          name=name, extra_args=extra_args)

        def tls_ok():  # a handshake only: no request may reach the tests' upstreams
            try:
                test_tls.tls_connect(self.https, sni, timeout=5).close()
                return True
            except OSError:
                return False
        self.assertTrue(harness.wait_until(tls_ok, timeout=15, interval=0.1),
                        "no TLS handshake for %s:\n%s" % (sni, gw.proc.output_tail()))
        if wait_udp:
            self.assertTrue(harness.wait_until(lambda: udp_bound(self.https), timeout=10),
                            "no UDP listener on %d:\n%s" % (self.https, gw.proc.output_tail()))
        return gw

    def url(self, path, host="localhost"):
        return "https://%s:%d%s" % (host, self.https, path)

    def h3_logs(self, gw, uri=None):
        return [j for j in gw.access_logs() if j["request"].get("proto") == "HTTP/3.0"
                and (uri is None or j["request"].get("uri") == uri)]

    def assert_ok(self, run, n=1):
        self.assertTrue(run.handshake, run.describe())
        self.assertEqual(run.alpn, "h3", run.describe())
        self.assertEqual(run.ok_count(), n, run.describe())

    # -----------------------------------------------------------------------------------------

    def test_get_through_the_gateway(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        gw = self.h3_gateway(site("localhost", echo.addr), "h3-get")
        dl = tempfile.mkdtemp(dir=gw.tmp)
        run = gtls(self.https, [self.url("/h3/get?x=1")], ["--download=" + dl], http_dump=True)
        self.assert_ok(run)
        st = run.streams[0]
        self.assertEqual(st.field("content-type"), "application/json")
        self.assertEqual(st.field("x-upstream"), "echo")
        self.assertEqual(st.body_len, int(st.field("content-length")))
        with open(os.path.join(dl, "get?x=1"), "rb") as f:
            info = json.loads(f.read())
        self.assertEqual((info["method"], info["target"], info["version"]),
                         ("GET", "/h3/get?x=1", "HTTP/1.1"))
        fields = {k.lower(): v for k, v in info["headers"]}
        self.assertEqual(fields.get("host"), "localhost:%d" % self.https)  # = :authority
        self.assertEqual(fields.get("x-forwarded-proto"), "https")
        self.assertEqual(fields.get("x-forwarded-for"), LOOPBACK)
        self.assertEqual(fields.get("user-agent"), "nghttp3/ngtcp2 client")
        self.assertEqual(echo.count("GET"), 1)
        logs = harness.wait_until(lambda: self.h3_logs(gw, "/h3/get?x=1"), timeout=5)
        self.assertTrue(logs, gw.proc.output_tail())
        req = logs[0]["request"]
        self.assertEqual((logs[0]["status"], req["method"], req["host"]),
                         (200, "GET", "localhost:%d" % self.https))
        self.assertEqual(req["tls"]["proto"], "h3", req)
        self.assertEqual(req["tls"]["server_name"], "localhost", req)

    def test_quic_retry_flag_makes_every_client_prove_its_address(self):
        # `run --quic-retry`: each new connection's first Initial is answered with a Retry,
        # and the client (which repeats its Initial with the token) is served.
        echo = self.upstream(harness.echo_handler(), "echo")
        gw = self.h3_gateway(site("localhost", echo.addr), "h3-retry", extra_args=["--quic-retry"])
        line = gw.proc.wait_line(lambda l: '"listening"' in l and '"h3":true' in l, timeout=5)
        self.assertIsNotNone(line, gw.proc.output_tail())
        self.assertIn('"quic_retry":true', line)
        for i in range(2):
            run = gtls(self.https, [self.url("/retry%d" % i)])
            self.assert_ok(run)
            self.assertIn("type=Retry", run.out, run.describe())  # gtlsclient's frame log
        self.assertEqual(echo.count("GET"), 2)

    def test_proxied_to_an_h2c_upstream(self):
        # HTTP/3 in, HTTP/2 out: the upstream is a second gateway speaking h2c (prior knowledge)
        # whose access log says which protocol reached it.
        up_port = harness.free_port()
        upstream = self.gateway(
            # Any host: the client's authority (localhost:PORT) goes upstream unchanged.
            "http://:%d {\n\tbind 127.0.0.1\n\tlog\n"
            "\trespond \"via {http.request.proto}\" 200\n}\n" % up_port, [up_port],
            global_options=["servers {\n\t\tprotocols h1 h2 h2c\n\t}"], name="h2c-up")
        harness.wait_port(up_port, timeout=10, proc=upstream.proc)
        gw = self.h3_gateway(site("localhost", "h2c://127.0.0.1:%d" % up_port), "h3-to-h2c")
        dl = tempfile.mkdtemp(dir=gw.tmp)
        body = os.path.join(gw.tmp, "body.bin")
        with open(body, "wb") as f:
            f.write(os.urandom(100_000))
        get = gtls(self.https, [self.url("/via-h2c")], ["--download=" + dl])
        self.assert_ok(get)
        with open(os.path.join(dl, "via-h2c"), "rb") as f:
            self.assertEqual(f.read(), b"via HTTP/2.0")
        post = gtls(self.https, [self.url("/post-h2c")], ["-m", "POST", "-d", body])
        self.assert_ok(post)
        logs = harness.wait_until(
            lambda: [j for j in upstream.access_logs() if j["request"]["uri"] in
                     ("/via-h2c", "/post-h2c")] or None, timeout=5)
        self.assertTrue(logs, upstream.proc.output_tail())
        seen = {j["request"]["uri"]: j["request"]["proto"] for j in upstream.access_logs()}
        self.assertEqual(seen.get("/via-h2c"), "HTTP/2.0", seen)
        self.assertEqual(seen.get("/post-h2c"), "HTTP/2.0", seen)
        front = {j["request"]["uri"]: (j["request"]["proto"], j["status"])
                 for j in self.h3_logs(gw)}
        self.assertEqual(front.get("/via-h2c"), ("HTTP/3.0", 200), front)
        self.assertEqual(front.get("/post-h2c"), ("HTTP/3.0", 200), front)

    def test_4mib_response_arrives_intact(self):
        big = self.upstream(harness.bigbody_handler(), "big")
        gw = self.h3_gateway(site("localhost", big.addr), "h3-big")
        dl = tempfile.mkdtemp(dir=gw.tmp)
        n = 4 << 20
        for chunked in ("0", "1"):
            name = "big?n=%d&chunked=%s" % (n, chunked)
            run = gtls(self.https, [self.url("/" + name)], ["--download=" + dl], timeout=40)
            self.assert_ok(run)
            with open(os.path.join(dl, name), "rb") as f:
                data = f.read()
            self.assertEqual(len(data), n, name)
            self.assertEqual(hashlib.sha256(data).hexdigest(), harness.pattern_bytes(n), name)
        logs = harness.wait_until(lambda: len(self.h3_logs(gw)) >= 2 and self.h3_logs(gw),
                                  timeout=5)
        self.assertEqual([j["size"] for j in logs], [n, n], logs)

    def test_post_1mib_body_reaches_the_upstream(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        gw = self.h3_gateway(site("localhost", echo.addr), "h3-post")
        body = os.urandom(1 << 20)
        path = os.path.join(gw.tmp, "body.bin")
        with open(path, "wb") as f:
            f.write(body)
        dl = tempfile.mkdtemp(dir=gw.tmp)
        run = gtls(self.https, [self.url("/h3/upload")],
                   ["-m", "POST", "-d", path, "--download=" + dl], timeout=40)
        self.assert_ok(run)
        with open(os.path.join(dl, "upload"), "rb") as f:
            info = json.loads(f.read())
        self.assertEqual(info["method"], "POST")
        self.assertEqual(info["body_len"], len(body))
        self.assertEqual(info["body_sha256"], hashlib.sha256(body).hexdigest())
        fields = {k.lower(): v for k, v in info["headers"]}
        self.assertEqual(fields.get("content-length"), str(len(body)))  # the client's, kept
        logs = harness.wait_until(lambda: self.h3_logs(gw, "/h3/upload"), timeout=5)
        self.assertTrue(logs, gw.proc.output_tail())

    def test_50_requests_on_one_connection_and_4_clients_at_once(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        gw = self.h3_gateway(site("localhost", echo.addr), "h3-many")
        run = gtls(self.https, [self.url("/one/a"), self.url("/one/b")], ["-n", "50"])
        self.assert_ok(run, 50)
        self.assertEqual(sorted(run.streams), list(range(0, 200, 4)))  # one connection
        self.assertEqual(echo.count(), 50)
        # Several clients at once (each its own connection, spread over the workers).
        clients = [GtlsBackground(self.https, [self.url("/par/%d" % i)], ["-n", "20"])
                   for i in range(4)]
        runs = [c.result() for c in clients]
        for r in runs:
            self.assert_ok(r, 20)
        self.assertEqual(echo.count(), 130)
        logs = harness.wait_until(lambda: len(self.h3_logs(gw)) >= 130 and self.h3_logs(gw),
                                  timeout=5)
        self.assertTrue(logs, "%d h3 access-log lines" % len(self.h3_logs(gw)))
        self.assertEqual({j["status"] for j in logs}, {200})
        # One remote address (one connection) for the 50, five in all.
        peers = {j["request"]["remote_port"] for j in logs}
        one = {j["request"]["remote_port"] for j in logs if j["request"]["uri"].startswith("/one")}
        self.assertEqual((len(one), len(peers)), (1, 5), peers)

    def test_unknown_host_gets_the_same_answer_as_over_h2(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        self.h3_gateway(site("localhost", echo.addr), "h3-unknown")
        # SNI localhost (a certificate exists), :authority other.test: no site matches. Caddy
        # answers an empty 200 over h2 and h3 alike; the gateway must do the same on both.
        status, fields, body = curl_head(self.https, "--http2",
                                         extra=["-H", "Host: other.test:%d" % self.https])
        fields = dict(fields)
        self.assertEqual((status, body, fields.get("content-length", "0")), (200, "", "0"))
        run = gtls(self.https, ["https://other.test:%d/nobody" % self.https], http_dump=True)
        self.assert_ok(run)
        st = run.streams[0]
        self.assertEqual((st.status, st.body_len), (200, 0), run.describe())
        self.assertEqual(st.field("content-length") or "0", "0")
        self.assertEqual(echo.count(), 0)

    def test_alt_svc_and_protocols_without_h3(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        gw = self.h3_gateway(site("localhost", echo.addr), "h3-altsvc")
        want = 'h3=":%d"; ma=%d' % (self.https, ALT_SVC_MA)
        for flag in ("--http1.1", "--http2"):
            status, fields, _ = curl_head(self.https, flag)
            self.assertEqual(status, 200, flag)
            self.assertEqual([v for k, v in fields if k == "alt-svc"], [want], (flag, fields))
        # Over h3 itself no Alt-Svc is needed (Caddy 2.6 sends none either).
        run = gtls(self.https, [self.url("/")])
        self.assert_ok(run)
        self.assertIsNone(run.streams[0].field("alt-svc"), run.describe())
        self.assertTrue(udp_owners(self.https), "ss shows no UDP socket on %d" % self.https)
        gw.stop()
        self.assertTrue(harness.wait_until(lambda: not udp_bound(self.https), timeout=5),
                        "UDP port still held after the gateway stopped")

        # `protocols h1 h2`: no UDP socket, no Alt-Svc, an h3 client gets nothing.
        gw = self.h3_gateway(site("localhost", echo.addr), "h3-off",
                             options=["servers {\n\t\tprotocols h1 h2\n\t}"], wait_udp=False)
        for flag in ("--http1.1", "--http2"):
            status, fields, _ = curl_head(self.https, flag)
            self.assertEqual(status, 200, flag)
            self.assertNotIn("alt-svc", dict(fields), (flag, fields))
        self.assertFalse(udp_bound(self.https), udp_owners(self.https))
        self.assertEqual(udp_owners(self.https), [])
        before = echo.count()
        run = gtls(self.https, [self.url("/nope")], ["--handshake-timeout=2s"], timeout=10)
        self.assertFalse(run.handshake, run.describe())
        self.assertEqual(run.streams, {}, run.describe())
        self.assertEqual(echo.count(), before)
        self.assertEqual(self.h3_logs(gw), [])

    def test_chromium_loads_over_h3_forced_and_via_alt_svc(self):
        page = self.upstream(page_handler(), "page")
        host, other = "h3.test", "h3b.test"
        pki = chromium.make_test_pki(os.path.join(self.certs, "chromium"), host)
        pki_b = chromium.make_test_pki(os.path.join(self.certs, "chromium-b"), other)
        # Two sites with their own certificates on the port: the QUIC handshake picks by SNI.
        config = (site(host, page.addr, tls="tls %s %s" % (pki["chain"], pki["key"])) +
                  site(other, page.addr, tls="tls %s %s" % (pki_b["chain"], pki_b["key"])))
        gw = self.h3_gateway(config, "h3-chromium", sni=host)
        url = "https://%s:%d/" % (host, self.https)
        url_b = "https://%s:%d/" % (other, self.https)
        host_map = {host: LOOPBACK, other: LOOPBACK}
        trace = os.path.join(gw.tmp, "strace.txt") if shutil.which("strace") else None
        rs = chromium.load_pages([url, url_b], host_map,
                                 force_quic=["%s:%d" % (h, self.https) for h in (host, other)],
                                 spki_hashes=pki["spki"] + pki_b["spki"], timeout=60,
                                 strace_log=trace)
        for r, u in zip(rs, (url, url_b)):
            harness.log("chromium forced: %s" % chromium.describe(r))
            self.assertIsNone(r["error"], chromium.describe(r))
            self.assertEqual((r["nextHopProtocol"], r["responseStatus"]), ("h3", 200),
                             chromium.describe(r))
            self.assertEqual((r["protocol"], r["status"]), ("h3", 200))
            self.assertEqual(r["remote"], "%s:%d" % (LOOPBACK, self.https))
            self.assertEqual(r["report"], {"nextHopProtocol": "h3", "responseStatus": 200,
                                           "url": u})
            self.assertIn("hello from the server under test", r["body"])
        logs = harness.wait_until(lambda: len(self.h3_logs(gw, "/")) >= 2 and
                                  self.h3_logs(gw, "/"), timeout=5)
        self.assertTrue(logs, gw.proc.output_tail())
        self.assertEqual(sorted((j["request"]["host"], j["request"]["tls"]["server_name"])
                                for j in logs),
                         [("%s:%d" % (h, self.https), h) for h in (host, other)])
        if trace:
            audit = chromium.audit_strace(trace)
            harness.log("strace audit: loopback=%d probe_only=%s foreign=%s" % (
                len(audit["loopback"]), sorted(set(audit["probe_only"])), audit["foreign"]))
            self.assertEqual(audit["foreign"], [])
            self.assertTrue(audit["loopback"])
        else:
            harness.log("strace not installed: Chromium's network audit not run")

        # Unforced: the first load is h2 and carries Alt-Svc; a later one in the same browser
        # is h3 (the test root is allowed for QUIC on this host only).
        before = len(self.h3_logs(gw))
        rs = chromium.load_pages([url] * 4, host_map, spki_hashes=pki["spki"], timeout=60,
                                 settle=0.5, allow_unknown_root_hosts=[host])
        protos = [x["nextHopProtocol"] for x in rs]
        harness.log("chromium alt-svc: %s" % protos)
        self.assertTrue(all(x["error"] is None and x["responseStatus"] == 200 for x in rs),
                        [chromium.describe(x) for x in rs])
        self.assertEqual(protos[0], "h2", protos)
        self.assertIn("h3", protos[1:], protos)
        self.assertEqual(set(protos[protos.index("h3"):]), {"h3"}, protos)
        self.assertGreater(len(self.h3_logs(gw)), before)

    def test_certificate_swap_on_reload(self):
        s1 = test_tls.make_cert(self.certs, "swap1", ["localhost"])
        s2 = test_tls.make_cert(self.certs, "swap2", ["localhost"])
        echo = self.upstream(harness.echo_handler(), "echo")

        def config(pair):
            return site("localhost", echo.addr, tls="tls %s %s" % pair)

        gw = self.h3_gateway(config(s1), "h3-swap")
        run = gtls(self.https, [self.url("/before")], quic_dump=True)
        self.assert_ok(run)
        certs = run.peer_certificates()
        self.assertTrue(certs, "no Certificate message in the dump:\n" + run.describe())
        self.assertEqual(certs[0], test_tls.der_of(s1[0]))
        # A request in flight across the reload keeps its connection (and certificate).
        slow = GtlsBackground(self.https, [self.url("/inflight?delay_ms=1500")], quic_dump=True)
        self.assertTrue(harness.wait_until(lambda: echo.started >= 2, timeout=10),
                        "the in-flight request did not reach the upstream")
        gw.reload(config(s2))
        line = gw.proc.wait_line(lambda l: '"config_loaded"' in l and '"generation":2' in l,
                                 timeout=10)
        self.assertIsNotNone(line, gw.proc.output_tail())
        run = gtls(self.https, [self.url("/after")], quic_dump=True)
        self.assert_ok(run)
        self.assertEqual(run.peer_certificates()[:1], [test_tls.der_of(s2[0])])
        old = slow.result()
        self.assert_ok(old)
        self.assertEqual(old.peer_certificates()[:1], [test_tls.der_of(s1[0])])

    def test_reload_replacing_the_h3_listener_keeps_serving(self):
        # A reload that replaces the listener but keeps h3 on the port (here the ALPN list
        # changes: `protocols h1 h3`). The old listener drains its connections while the new
        # one accepts: requests in flight must complete, new connections must be served
        # meanwhile, and the old UDP sockets must go once drained.
        up = self.upstream(trickle_handler(), "trickle")
        config = site("localhost", up.addr)
        gw = self.h3_gateway(config, "h3-replace")
        sockets = len(udp_owners(self.https))
        dl = tempfile.mkdtemp(dir=gw.tmp)
        chunks = 20  # 2 s of response
        inflight = [GtlsBackground(self.https, [self.url("/inflight%d?chunks=%d" % (i, chunks))],
                                   ["--download=" + dl], timeout=10) for i in range(3)]
        self.assertTrue(harness.wait_until(lambda: up.started >= 3, timeout=10),
                        "the in-flight requests did not reach the upstream")
        gw.global_options.append("servers {\n\t\tprotocols h1 h3\n\t}")
        gw.reload(config)
        line = gw.proc.wait_line(lambda l: '"config_loaded"' in l and '"generation":2' in l,
                                 timeout=10)
        self.assertIsNotNone(line, gw.proc.output_tail())
        during = len(udp_owners(self.https))
        fresh = [gtls(self.https, [self.url("/new%d?chunks=1" % i)], ["--handshake-timeout=1s"],
                      timeout=6) for i in range(6)]
        old = [c.result() for c in inflight]
        harness.log("h3 listener replaced: UDP sockets %d before, %d during the drain; new "
                    "connections served %s; in flight %s" % (
                        sockets, during, [r.ok_count() for r in fresh],
                        [(r.ok_count(), r.statuses(), round(r.elapsed, 1)) for r in old]))
        for r in fresh:
            self.assert_ok(r)
        for i, r in enumerate(old):
            self.assert_ok(r)
            name = "inflight%d?chunks=%d" % (i, chunks)
            self.assertEqual(os.path.getsize(os.path.join(dl, name)), chunks * TRICKLE_CHUNK)
        self.assertTrue(harness.wait_until(lambda: len(udp_owners(self.https)) == sockets,
                                           timeout=5),
                        "UDP sockets on the port: %s" % udp_owners(self.https))

    def test_reload_turning_h3_off_and_on_keeps_one_socket_set(self):
        # h3 turned off (`protocols h1 h2`) while a request is in flight, then on again before
        # that connection has drained: the listener must take its draining endpoints back
        # rather than bind a second socket set on the port (the kernel would then hand new
        # Initials to the draining set, which refuses them, and packets of the draining
        # connection to the fresh set, which does not know it).
        up = self.upstream(trickle_handler(), "trickle")
        config = site("localhost", up.addr)
        gw = self.h3_gateway(config, "h3-off-on")
        sockets = len(udp_owners(self.https))
        dl = tempfile.mkdtemp(dir=gw.tmp)
        chunks = 20  # 2 s of response
        inflight = GtlsBackground(self.https, [self.url("/inflight?chunks=%d" % chunks)],
                                  ["--download=" + dl], timeout=10)
        self.assertTrue(harness.wait_until(lambda: up.started >= 1, timeout=10),
                        "the in-flight request did not reach the upstream")
        gw.global_options.append("servers {\n\t\tprotocols h1 h2\n\t}")
        gw.reload(config)
        self.assertIsNotNone(gw.proc.wait_line(
            lambda l: '"config_loaded"' in l and '"generation":2' in l, timeout=10))
        gw.global_options.pop()
        gw.reload(config)
        self.assertIsNotNone(gw.proc.wait_line(
            lambda l: '"config_loaded"' in l and '"generation":3' in l, timeout=10))
        after = len(udp_owners(self.https))
        fresh = [gtls(self.https, [self.url("/new%d?chunks=1" % i)], ["--handshake-timeout=1s"],
                      timeout=6) for i in range(8)]
        old = inflight.result()
        harness.log("h3 off and on: UDP sockets %d before, %d after; new connections served %s; "
                    "in flight %s" % (sockets, after, [r.ok_count() for r in fresh],
                                      (old.ok_count(), old.statuses(), round(old.elapsed, 1))))
        self.assertEqual(after, sockets, "UDP sockets on the port: %s" % udp_owners(self.https))
        for r in fresh:
            self.assert_ok(r)
        self.assert_ok(old)
        self.assertEqual(os.path.getsize(os.path.join(dl, "inflight?chunks=%d" % chunks)),
                         chunks * TRICKLE_CHUNK)

    def test_sigterm_drains_h3_requests(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        gw = self.h3_gateway(site("localhost", echo.addr), "h3-drain",
                             options=["grace_period 10s"])
        self.assert_ok(gtls(self.https, [self.url("/warm")]))
        slow = GtlsBackground(self.https, [self.url("/slow?delay_ms=2000")])
        self.assertTrue(harness.wait_until(lambda: echo.started >= 2, timeout=10),
                        "the slow request did not reach the upstream")
        t_term = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        # Draining: the UDP socket may still be open, but a new connection gets no answer.
        time.sleep(0.2)
        fresh = gtls(self.https, [self.url("/after-term")], ["--handshake-timeout=1s"],
                     timeout=8)
        self.assertIsNone(gw.proc.poll(), "exited before the slow request finished")
        self.assertEqual(fresh.ok_count(), 0, fresh.describe())
        self.assertNotIn("/after-term", [r["target"] for r in echo.requests])
        old = slow.result()
        self.assert_ok(old)
        rc = gw.proc.wait(20)
        harness.log("h3 drain: exited %.2fs after SIGTERM, rc=%s" % (time.monotonic() - t_term,
                                                                     rc))
        self.assertEqual(rc, 0, gw.proc.output_tail())
        logs = self.h3_logs(gw, "/slow?delay_ms=2000")
        self.assertEqual([j["status"] for j in logs], [200], gw.proc.output_tail())

    def test_version_negotiation_and_migration(self):
        up = self.upstream(trickle_handler(), "trickle")
        gw = self.h3_gateway(site("localhost", up.addr), "h3-vn")
        # An unknown QUIC version gets a Version Negotiation packet; the client retries in v1.
        run = gtls(self.https, [self.url("/vn?chunks=1")],
                   ["-v", "0x1a2a3a4a", "--preferred-versions=v1"])
        self.assertIn("type=VN", run.out, run.describe())
        self.assertRegex(run.out, r"pkt rx \d+ VN v=0x00000001")
        self.assert_ok(run)
        # The client moves to another local port (active migration, with path validation)
        # while the response is still trickling in: the rest of it follows the client. The
        # new 4-tuple may hash to the other worker's socket, which must hand the datagrams to
        # the connection's owner (connection-ID routing). Four clients at once.
        # (gtlsclient's --nat-rebinding is not used: after it the client sends nothing from
        # its new port and ignores what arrives on the old one, so it hangs against Caddy too.)
        dl = tempfile.mkdtemp(dir=gw.tmp)
        clients = [GtlsBackground(self.https, [self.url("/move%d" % i)],
                                  ["--change-local-addr=300ms", "--download=" + dl])
                   for i in range(4)]
        for i, c in enumerate(clients):
            r = c.result()
            self.assert_ok(r)
            ports_used = set(re.findall(r"Sent packet: local=\[127\.0\.0\.1\]:(\d+)", r.out))
            self.assertEqual(len(ports_used), 2, "the client did not move: " + r.describe())
            self.assertEqual(os.path.getsize(os.path.join(dl, "move%d" % i)),
                             TRICKLE_CHUNKS * TRICKLE_CHUNK)

    def test_malformed_requests_never_reach_the_upstream(self):
        echo = self.upstream(harness.echo_handler(), "echo")
        self.h3_gateway(site("localhost", echo.addr), "h3-malformed")
        # RFC 9114 §4.1.2: a malformed request is a stream error of type H3_MESSAGE_ERROR.
        # (Caddy 2.6.2 resets CONNECT-with-:path and an empty method with 0x101 but answers
        # "GE T".) None of them may reach the HTTP/1.1 upstream, least of all a method that
        # would rewrite the upstream's request line (CR LF inside it).
        for method in ("CONNECT",  # with :scheme and :path (forbidden for CONNECT)
                       "",
                       "GE T",
                       "GET /smuggled HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET"):
            run = gtls(self.https, [self.url("/m")], ["-m", method], timeout=15)
            self.assertTrue(run.handshake, run.describe())
            st = run.streams.get(0)
            self.assertIsNotNone(st, "method %r: %s" % (method, run.describe()))
            self.assertEqual((st.status, st.reset_code), (None, H3_MESSAGE_ERROR),
                             "method %r: %s" % (method, run.describe()))
        self.assertEqual(echo.started, 0, echo.requests)
        # The gateway is still serving.
        self.assert_ok(gtls(self.https, [self.url("/still-ok")]))
        self.assertEqual(echo.count(), 1)


if __name__ == "__main__":
    harness.main()

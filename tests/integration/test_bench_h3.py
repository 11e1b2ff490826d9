#!/usr/bin/env python3
"""hsp-bench over HTTP/3 (bench/load/h3_connection.cc) against a real HTTP/3 server.

The server is Debian's Caddy 2.6.2, which speaks h3 on the UDP twin of its HTTPS port: started
here on 127.0.0.1 with a port chosen at run time, `tls internal` with HOME and XDG dirs in a
temp dir (its local CA root lands there and is passed to hsp-bench with --cacert; nothing goes
to a trust store), admin off, and an access log that tells which protocol each request used.
An HTTP/1.1 upstream of ours behind `reverse_proxy` checks uploaded bodies byte for byte.

Checks: 200 requests with -c 2 -m 10 all 200 and reported as h3, and Caddy saw HTTP/3.0;
a 1 MiB response body counted exactly; a POST body arrives intact; an unknown CA gives tls
errors and -k passes; nothing listening on the UDP port gives connect errors without hanging;
HEAD and 204 are responses, not resets (Caddy 2.6's quic-go sends a body after a HEAD head,
which nghttp3 rejects: only that stream is reset, the request was complete at its head).

$HSP_BENCH is the hsp-bench binary (ctest sets it). Loads are small and bounded (-n).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import ports  # noqa: E402

BIG = 1 << 20
UPLOAD = (1 << 20) + 7  # larger than the initial stream window; not a multiple of anything


def bench_binary():
    path = os.environ.get("HSP_BENCH")
    if not path:
        raise RuntimeError("set HSP_BENCH to the hsp-bench binary (ctest does)")
    return path


def upload_checker(expected_sha):
    """201 when the body is exactly the uploaded file, 422 otherwise."""
    def handle(req):
        req.read_body()  # keeps the first 64 KiB, hashes all of it
        ok = req.body_sha256 == expected_sha
        req.send_response(201 if ok else 422, [("Content-Type", "text/plain")],
                          b"ok" if ok else b"mismatch")
        return "keep"
    return handle


class CaddyH3:
    def __init__(self, tmp, upstream_addr):
        self.dir = tmp
        self.port = ports.tcp_and_udp_port()
        self.access_log = os.path.join(tmp, "access.log")
        with open(os.path.join(tmp, "big.bin"), "wb") as f:
            f.write(os.urandom(BIG))
        caddyfile = """{
	admin off
	skip_install_trust
	default_bind 127.0.0.1
	auto_https disable_redirects
	storage file_system __DIR__/data
}
https://localhost:__PORT__ {
	tls internal
	log {
		output file __LOG__
		format json
	}
	handle /big {
		root * __DIR__
		rewrite * /big.bin
		file_server
	}
	handle /upload {
		reverse_proxy __UP__
	}
	handle /empty {
		respond 204
	}
	handle {
		respond "hello" 200
	}
}
"""
        caddyfile = harness.render(caddyfile, {"DIR": tmp, "PORT": self.port,
                                               "LOG": self.access_log, "UP": upstream_addr})
        path = os.path.join(tmp, "Caddyfile")
        with open(path, "w") as f:
            f.write(caddyfile)
        env = dict(os.environ, HOME=tmp, XDG_DATA_HOME=os.path.join(tmp, "xdg-data"),
                   XDG_CONFIG_HOME=os.path.join(tmp, "xdg-config"))
        self.proc = harness.Proc([harness.caddy_binary(), "run", "--config", path,
                                  "--adapter", "caddyfile"], env=env, cwd=tmp)
        harness.wait_port(self.port, timeout=20, proc=self.proc)
        self.root = os.path.join(tmp, "data", "pki", "authorities", "local", "root.crt")
        if not harness.wait_until(lambda: os.path.exists(self.root), timeout=10):
            raise RuntimeError("Caddy wrote no local CA root:\n" + self.proc.output_tail())

    def url(self, path="/"):
        return "https://localhost:%d%s" % (self.port, path)

    def connect_to(self):
        # The URL names localhost (Caddy's certificate name); the packets go to 127.0.0.1 only.
        return "localhost:%d:127.0.0.1:%d" % (self.port, self.port)

    def log_records(self):
        return harness.read_json_lines(self.access_log)

    def stop(self):
        self.proc.stop()


class BenchH3Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hsp-bench-h3-")
        cls.upload = os.urandom(UPLOAD)
        cls.upload_path = os.path.join(cls.tmp, "upload.bin")
        with open(cls.upload_path, "wb") as f:
            f.write(cls.upload)
        cls.upstream = harness.UpstreamServer(
            upload_checker(hashlib.sha256(cls.upload).hexdigest()), name="upload")
        cls.caddy = CaddyH3(cls.tmp, cls.upstream.addr)
        # Caddy starts its QUIC listener next to the TCP one; wait until h3 answers.
        deadline = time.monotonic() + 15
        while True:
            report, _ = cls.bench(cls.caddy.url(), "-n", "1", "-c", "1",
                                  "--cacert", cls.caddy.root, check=False)
            if report and report.get("status", {}).get("200") == 1:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("Caddy never answered over h3: %r\n%s"
                                   % (report, cls.caddy.proc.output_tail()))
            time.sleep(0.2)

    @classmethod
    def tearDownClass(cls):
        cls.caddy.stop()
        cls.upstream.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def bench(cls, url, *args, timeout=60, check=True, connect_to=True):
        argv = [bench_binary(), url, "--proto", "h3", "--json", "--timeout", "5"]
        if connect_to:
            argv += ["--connect-to", cls.caddy.connect_to()]
        argv += list(args)
        t0 = time.monotonic()
        rc, out, err = harness.run_cmd(argv, timeout=timeout)
        elapsed = time.monotonic() - t0
        report = None
        try:
            report = json.loads(out)
        except ValueError:
            if check:
                raise AssertionError("no JSON report (rc=%d):\n%s\n%s" % (rc, out, err))
        if check:
            harness.log("hsp-bench %s -> %.2fs rps=%s status=%s errors=%s" % (
                " ".join(args), elapsed, report.get("rps"), report.get("status"),
                report.get("errors")))
        return report, elapsed

    def errors(self, report):
        return {k: v for k, v in report.get("errors", {}).items() if v}

    def test_200_requests_over_h3(self):
        before = len(self.caddy.log_records())
        report, _ = self.bench(self.caddy.url("/"), "-n", "200", "-c", "2", "-m", "10",
                               "--cacert", self.caddy.root)
        self.assertEqual(report["proto"], "h3")
        self.assertEqual(report["requests"], 200)
        self.assertEqual(report["status"], {"200": 200})
        self.assertEqual(self.errors(report), {})
        # Caddy agrees that these were HTTP/3 requests (and not a TCP fallback).
        records = harness.wait_until(
            lambda: [r for r in self.caddy.log_records()[before:]
                     if r.get("request", {}).get("uri") == "/"] or None, timeout=5) or []
        protos = {r["request"].get("proto") for r in records}
        self.assertGreaterEqual(len(records), 200)
        self.assertEqual(protos, {"HTTP/3.0"})

    def test_responses_without_a_body_are_not_errors(self):
        # HEAD (a head with content-length and no DATA) and 204: the response ends with the
        # head; both used to count as `reset` and cost a reconnect each.
        for path, args, status in (("/", ["-X", "HEAD"], "200"), ("/empty", [], "204")):
            report, _ = self.bench(self.caddy.url(path), "-n", "100", "-c", "2", "-m", "5",
                                   "--cacert", self.caddy.root, *args)
            self.assertEqual(report["status"], {status: 100}, report)
            self.assertEqual(self.errors(report), {}, report)
            self.assertEqual(report["reconnects"], 0, report)
            self.assertEqual(report["body_bytes"], 0, report)

    def test_large_response_body_counted_exactly(self):
        n = 8
        report, _ = self.bench(self.caddy.url("/big"), "-n", str(n), "-c", "1", "-m", "4",
                               "--cacert", self.caddy.root)
        self.assertEqual(report["status"], {"200": n})
        self.assertEqual(self.errors(report), {})
        if "body_bytes" in report:
            self.assertEqual(report["body_bytes"], n * BIG)
        # Every body byte came in QUIC packets, plus headers, framing and packet overhead.
        self.assertGreaterEqual(report["bytes_in"], n * BIG)
        self.assertLess(report["bytes_in"], n * BIG * 1.2)

    def test_post_body_arrives_intact(self):
        before = self.upstream.count("POST")
        report, _ = self.bench(self.caddy.url("/upload"), "-n", "20", "-c", "2", "-m", "5",
                               "-X", "POST", "--body", self.upload_path,
                               "--cacert", self.caddy.root)
        self.assertEqual(report["status"], {"201": 20}, "422 means a body differed")
        self.assertEqual(self.errors(report), {})
        self.assertEqual(self.upstream.count("POST") - before, 20)

    def test_unknown_ca_is_a_tls_error_and_insecure_passes(self):
        other_ca = os.path.join(self.tmp, "other-ca.pem")
        rc, out, err = harness.run_cmd(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", os.path.join(self.tmp, "other-ca.key"), "-out", other_ca,
             "-days", "2", "-subj", "/CN=not the caddy root"], timeout=30)
        self.assertEqual(rc, 0, err)
        report, _ = self.bench(self.caddy.url("/"), "-n", "3", "-c", "1", "--cacert", other_ca)
        self.assertEqual(report.get("status", {}).get("200", 0), 0)
        self.assertGreater(report["errors"].get("tls", 0), 0, report)
        self.assertEqual(set(self.errors(report)), {"tls"})

        report, _ = self.bench(self.caddy.url("/"), "-n", "3", "-c", "1", "-k")
        self.assertEqual(report["status"], {"200": 3})
        self.assertEqual(self.errors(report), {})

    def test_nothing_listening_is_a_connect_error_without_hanging(self):
        port = ports.tcp_and_udp_port()  # bound by nobody: the kernel answers ICMP unreachable
        url = "https://localhost:%d/" % port
        report, elapsed = self.bench(url, "-n", "3", "-c", "1", "--cacert", self.caddy.root,
                                     "--connect-to", "localhost:%d:127.0.0.1:%d" % (port, port),
                                     connect_to=False, timeout=60)
        self.assertEqual(report.get("status", {}).get("200", 0), 0)
        self.assertGreater(report["errors"].get("connect", 0), 0, report)
        self.assertEqual(set(self.errors(report)), {"connect"})
        # No hang: run_cmd's bound (60 s) would fail the test; the refusal is immediate and the
        # request timeout (5 s) bounds it at worst.
        harness.log("nothing listening: hsp-bench ended after %.2fs" % elapsed)


if __name__ == "__main__":
    unittest.main(verbosity=2)

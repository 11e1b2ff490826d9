"""ACME challenge answers in the data plane (issue 6), without a CA: the test writes the answer
files another replica's ACME manager would leave under `<data dir>/acme/challenge_tokens/`
(acme/storage.h), and checks what a CA would see.

- HTTP-01 (RFC 8555 §8.3): GET/HEAD /.well-known/acme-challenge/<token> answers 200 text/plain
  with the key authorization on the HTTP port, ahead of the site's HTTP->HTTPS redirect, and on
  the HTTPS port ahead of its routes; an unknown token falls through to the site untouched.
- TLS-ALPN-01 (RFC 8737): a handshake offering only acme-tls/1 (openssl s_client, Python's ssl)
  gets acme-tls/1 and the self-signed challenge certificate (SAN = the name, critical
  id-pe-acmeIdentifier = SHA-256 of the key authorization), then the connection closes with no
  HTTP; no answer file: the handshake fails. Normal clients still get the site's certificate.

Everything on 127.0.0.1, ports chosen at run time; the data directory is the test's own."""

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import unittest

import harness

LOOPBACK = harness.LOOPBACK
TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
KEY_AUTH = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
# DER of the extension RFC 8737 §3 asks for, minus the digest: OID 1.3.6.1.5.5.7.1.31,
# critical TRUE, extnValue OCTET STRING (34 bytes) holding an OCTET STRING of 32 bytes.
ACME_EXT_PREFIX = bytes.fromhex("06082b0601050507011f" "0101ff" "0422" "0420")


def acme_ext(key_auth):
    return ACME_EXT_PREFIX + hashlib.sha256(key_auth.encode()).digest()


class DataDirGateway(harness.Gateway):
    """harness.Gateway with `--data-dir`, the directory a shared volume would be."""

    def __init__(self, config, ports, data_dir, **kw):
        super().__init__(config, ports, **kw)
        self.data_dir = data_dir

    def argv(self):
        return super().argv() + ["--data-dir", self.data_dir]


@unittest.skipIf(harness.gateway_kind() == "caddy", "hsp-gateway's challenge answers")
class AcmeChallengesTest(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="hsp-acme-data-")
        self.tokens = os.path.join(self.data, "acme", "challenge_tokens")
        self.http, self.https = harness.free_port(), harness.free_port()
        config = ("x.test {\n\tbind 127.0.0.1\n\ttls internal\n"
                  "\trespond \"site {scheme} {path}\"\n}\n")
        self.gw = DataDirGateway(config, [self.http, self.https], self.data, name="acme-chal",
                                 global_options=["http_port %d" % self.http,
                                                 "https_port %d" % self.https])
        self.gw.start()

    def tearDown(self):
        self.gw.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    def put(self, kind, name, text):
        path = os.path.join(self.tokens, kind, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)  # atomic, as acme/storage.cc writes it
        return path

    def curl(self, url, *args):
        p = subprocess.run(["curl", "-sS", "-k", "--resolve",
                            "x.test:%d:%s" % (self.https, LOOPBACK)] + list(args) +
                           ["-w", "\n%{http_code}", url],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        body, _, code = p.stdout.rpartition("\n")
        return int(code), body

    def served_lines(self, msg):
        return [j for j in self.gw.proc.json_lines() if j.get("msg") == msg]

    def test_http01_from_the_shared_directory(self):
        well_known = "/.well-known/acme-challenge/"
        # Before the answer exists the site's redirect applies, as for any other path.
        r = harness.fetch(self.http, target=well_known + TOKEN, host="x.test")
        self.assertEqual(r.status, 308, r)
        self.put("http-01", TOKEN, KEY_AUTH)

        # Cleartext: the answer, ahead of the HTTP->HTTPS redirect.
        r = harness.fetch(self.http, target=well_known + TOKEN, host="x.test")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, KEY_AUTH.encode())  # no trailing newline
        self.assertEqual(r.header("Content-Type"), "text/plain")
        self.assertEqual(r.header("Content-Length"), str(len(KEY_AUTH)))
        # Any Host: the CA asks for the name being validated, which need not be a site here.
        code, body = self.curl("http://127.0.0.1:%d%s%s" % (self.http, well_known, TOKEN))
        self.assertEqual((code, body), (200, KEY_AUTH))
        r = harness.fetch(self.http, method="HEAD", target=well_known + TOKEN, host="x.test")
        self.assertEqual((r.status, r.body), (200, b""), r)
        self.assertEqual(r.header("Content-Length"), str(len(KEY_AUTH)))
        # Two answers on one keep-alive connection, then a normal request on it.
        with harness.Client(self.http) as c:
            for _ in range(2):
                r = c.request("GET", well_known + TOKEN, host="x.test")
                self.assertEqual((r.status, r.body), (200, KEY_AUTH.encode()))
            r = c.request("GET", "/other", host="x.test")
            self.assertEqual(r.status, 308)

        # Over TLS as well, ahead of the site's routes, in HTTP/1.1 and HTTP/2.
        for flag in ("--http1.1", "--http2"):
            code, body = self.curl("https://x.test:%d%s%s" % (self.https, well_known, TOKEN),
                                   flag)
            self.assertEqual((code, body), (200, KEY_AUTH), flag)
        code, body = self.curl("https://x.test:%d%s%s" % (self.https, well_known, TOKEN),
                               "--http2", "-I")
        self.assertEqual(code, 200)
        self.assertIn("content-length: %d" % len(KEY_AUTH), body.lower())

        # Unknown tokens, other methods, and paths that are not tokens fall through untouched.
        code, body = self.curl("https://x.test:%d%sunknown" % (self.https, well_known))
        self.assertEqual((code, body), (200, "site https %sunknown" % well_known))
        r = harness.fetch(self.http, target=well_known + "unknown", host="x.test")
        self.assertEqual(r.status, 308, r)
        self.assertEqual(r.header("Location"), "https://x.test%sunknown" % well_known)
        code, body = self.curl("https://x.test:%d%s%s" % (self.https, well_known, TOKEN),
                               "--http1.1", "-X", "POST", "-d", "x")
        self.assertEqual((code, body), (200, "site https %s%s" % (well_known, TOKEN)))
        # A path that would leave the http-01 directory is never read (no token has "/").
        with open(os.path.join(self.tokens, "secret"), "w") as f:
            f.write("../secret.x")
        code, body = self.curl("https://x.test:%d%s../secret" % (self.https, well_known),
                               "--path-as-is")
        self.assertEqual((code, body), (200, "site https %s../secret" % well_known))

        # Removing the file ends the answer at once.
        os.remove(os.path.join(self.tokens, "http-01", TOKEN))
        r = harness.fetch(self.http, target=well_known + TOKEN, host="x.test")
        self.assertEqual(r.status, 308, r)

        served = self.served_lines("acme_http01_served")
        self.assertEqual(len(served), 8, self.gw.proc.output_tail())
        self.assertEqual(served[0]["token_prefix"], TOKEN[:8])
        self.assertEqual(served[0]["remote_ip"], LOOPBACK)
        self.assertIn("conn_id", served[0])
        self.assertEqual(sum(1 for j in served if j.get("proto") == "h2"), 2)

    def s_client(self, sni, alpn):
        return subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (LOOPBACK, self.https),
                               "-servername", sni, "-alpn", alpn],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=30)

    def test_tls_alpn01_from_the_shared_directory(self):
        # No answer yet: the handshake fails (no_application_protocol).
        p = self.s_client("x.test", "acme-tls/1")
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("no application protocol", p.stderr, p.stderr)

        self.put("tls-alpn-01", "x.test", KEY_AUTH)
        p = self.s_client("x.test", "acme-tls/1")
        self.assertIn("ALPN protocol: acme-tls/1", p.stdout, p.stdout + p.stderr)
        self.assertIn("subject=CN = ACME TLS-ALPN-01 challenge", p.stdout)
        start = p.stdout.index("-----BEGIN CERTIFICATE-----")
        end = p.stdout.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
        der = ssl.PEM_cert_to_DER_cert(p.stdout[start:end])
        self.assertIn(acme_ext(KEY_AUTH), der)
        text = subprocess.run(["openssl", "x509", "-noout", "-text"], input=p.stdout[start:end],
                              capture_output=True, text=True, timeout=30).stdout
        self.assertIn("1.3.6.1.5.5.7.1.31: critical", text)
        self.assertIn("DNS:x.test", text)

        # A TLS client the way a CA connects: only acme-tls/1; after the handshake the
        # gateway closes without waiting for (or reading) any HTTP.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["acme-tls/1"])
        with socket.create_connection((LOOPBACK, self.https), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="x.test") as s:
                self.assertEqual(s.selected_alpn_protocol(), "acme-tls/1")
                self.assertIn(acme_ext(KEY_AUTH), s.getpeercert(binary_form=True))
                try:
                    got = s.recv(100)  # bounded by the socket's 10 s timeout
                except ssl.SSLEOFError:
                    got = b""
                self.assertEqual(got, b"")

        # Normal clients are unaffected: the site's certificate, h2 or http/1.1, the site.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.local_ca_root())
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection((LOOPBACK, self.https), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="x.test") as s:  # verifies the name
                self.assertEqual(s.selected_alpn_protocol(), "h2")
                self.assertNotIn(ACME_EXT_PREFIX, s.getpeercert(binary_form=True))
        code, body = self.curl("https://x.test:%d/p" % self.https, "--http2")
        self.assertEqual((code, body), (200, "site https /p"))

        # Another name has no answer; the removal of the file is seen at once.
        p = self.s_client("y.test", "acme-tls/1")
        self.assertNotIn("ALPN protocol: acme-tls/1", p.stdout)
        os.remove(os.path.join(self.tokens, "tls-alpn-01", "x.test"))
        p = self.s_client("x.test", "acme-tls/1")
        self.assertNotIn("ALPN protocol: acme-tls/1", p.stdout)

        served = self.served_lines("acme_tls_alpn01_served")
        self.assertEqual(len(served), 2, self.gw.proc.output_tail())
        self.assertEqual(served[0]["sni"], "x.test")

    def local_ca_root(self):
        return os.path.join(self.data, "pki", "authorities", "local", "root.crt")


if __name__ == "__main__":
    harness.main()

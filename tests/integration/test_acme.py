"""Automatic certificates by ACME (issue 6) end to end against a real Pebble (pebble.py): the
gateway obtains a certificate for `a.test` by HTTP-01 and by TLS-ALPN-01, serves it (curl
trusts only Pebble's issuing root), stores it under --data-dir, renews it on demand without
dropping an open connection, orders it once for two processes sharing the data directory,
survives Pebble rejecting half its nonces, backs off (keeping the old certificate) when the CA
is gone, and honours a 429's Retry-After from a stub CA.

Every process listens on 127.0.0.1 on ports chosen at run time. Pebble's VA connects to the
gateway's http_port / https_port (its httpPort / tlsPort), after resolving `a.test` through
pebble-challtestsrv, which answers 127.0.0.1 for every name. Nothing goes to a trust store.

Waits are bounds against hangs, not speed checks: Pebble runs with PEBBLE_VA_NOSLEEP=1 and
issues within a second; OBTAIN_TIMEOUT only decides when to give up.

By hand: HSP_GATEWAY=../../build/gateway/hsp-gateway python3 test_acme.py [-k NAME]
With HSP_GATEWAY=/usr/bin/caddy (Debian's Caddy 2.6.2) the same tests run against Caddy: a
check of the fixture and of the expected behaviour. Caddy's log lines and CLI differ, so only
the serving and storage checks mean anything in that mode (see CADDY_EVENTS). In that mode
test_two_processes_share_storage_one_order sometimes fails: the Caddy that does not hold the
order answers Pebble's HTTP-01 request with its HTTPS redirect (seen in 1 run of 3).
"""

import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import time
import unittest

import harness
import pebble
from pebble import Pebble, TlsClient, curl_https, served_leaf, wait_https

OBTAIN_TIMEOUT = 45.0  # seconds; Pebble with NOSLEEP issues in about one second
EVENT_TIMEOUT = 45.0
NAME = "a.test"
BODY = "hello a"

GLOBAL = """{
	email admin@example.test
	acme_ca __ACME_CA__
	acme_ca_root __ACME_CA_ROOT__
	http_port __HTTP__
	https_port __HTTPS__
	admin off
	skip_install_trust
}
"""

# `disable_tlsalpn_challenge` leaves HTTP-01 only, `disable_http_challenge` TLS-ALPN-01 only.
SITE = """
a.test {
	bind 127.0.0.1
	respond "hello a"
	tls {
		issuer acme {
			__CHALLENGE__
		}
	}
}
"""
HTTP01 = "disable_tlsalpn_challenge"
TLSALPN01 = "disable_http_challenge"

# Sites that must never be ordered from the CA: localhost and `tls internal` (local CA).
NOT_ACME_SITES = """
localhost {
	bind 127.0.0.1
	respond "hello localhost"
}

internal.test {
	bind 127.0.0.1
	tls internal
	respond "hello internal"
}
"""


def caddyfile(acme_ca, acme_ca_root, http_port, https_port, challenge=HTTP01, extra=""):
    return harness.render(GLOBAL + SITE + extra, {
        "ACME_CA": acme_ca, "ACME_CA_ROOT": acme_ca_root, "HTTP": http_port,
        "HTTPS": https_port, "CHALLENGE": challenge})


# Caddy names its events differently; used only when HSP_GATEWAY is caddy (a fixture check).
CADDY_EVENTS = {"acme_obtain_started": "obtaining certificate",
                "acme_certificate_obtained": "certificate obtained successfully"}


class AcmeGateway:
    """`hsp-gateway run --config F --data-dir D` (or Caddy, see the module doc) with its own
    temporary directory; `data_dir` may be shared with another AcmeGateway."""

    def __init__(self, config, http_port, https_port, data_dir=None, name="acme-gw",
                 data_dir_by_env=False):
        self.binary = os.path.abspath(harness.gateway_binary())
        self.kind = harness.gateway_kind(self.binary)
        self.http_port = http_port
        self.https_port = https_port
        self.tmp = tempfile.mkdtemp(prefix="hsp-it-%s-" % name)
        self.home = os.path.join(self.tmp, "home")
        os.makedirs(self.home)
        if data_dir is None:
            data_dir = os.path.join(self.tmp, "caddy" if self.kind == "caddy" else "data")
        self.data_dir = data_dir
        self.data_dir_by_env = data_dir_by_env
        self.config_path = os.path.join(self.tmp, "Caddyfile")
        with open(self.config_path, "w") as f:
            f.write(config)
        self.proc = None

    def env(self):
        env = dict(os.environ)
        env.pop("HSP_DATA_DIR", None)
        env["HOME"] = self.home
        env["XDG_CONFIG_HOME"] = os.path.join(self.home, "config")
        if self.kind == "caddy":
            # Caddy keeps its storage in $XDG_DATA_HOME/caddy: make that the data directory.
            env["XDG_DATA_HOME"] = os.path.dirname(self.data_dir)
        else:
            env["XDG_DATA_HOME"] = os.path.join(self.home, "data")
            if self.data_dir_by_env:
                env["HSP_DATA_DIR"] = self.data_dir
        return env

    def argv(self):
        if self.kind == "caddy":
            return [self.binary, "run", "--config", self.config_path, "--adapter", "caddyfile"]
        argv = [self.binary, "run", "--config", self.config_path, "--threads", "2"]
        if not self.data_dir_by_env:
            argv += ["--data-dir", self.data_dir]
        return argv

    def spawn(self):
        self.proc = harness.Proc(self.argv(), env=self.env(), cwd=self.tmp)
        return self

    def wait_ready(self, timeout=20.0):
        for port in (self.http_port, self.https_port):
            harness.wait_port(port, timeout=timeout, proc=self.proc)
        return self

    def start(self):
        return self.spawn().wait_ready()

    def stop(self):
        rc = self.proc.stop() if self.proc else None
        return rc

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def events(self, msg, name=NAME):
        """The gateway's JSON log lines `msg` about `name` (None: any name)."""
        out = []
        for j in self.proc.json_lines():
            m = j.get("msg")
            if self.kind == "caddy" and m == CADDY_EVENTS.get(msg):
                j = dict(j, name=j.get("identifier"))
            elif m != msg:
                continue
            if name is None or j.get("name") == name:
                out.append(j)
        return out

    def wait_event(self, msg, pred=lambda j: True, timeout=EVENT_TIMEOUT, name=NAME):
        deadline = time.monotonic() + timeout
        while True:
            hits = [j for j in self.events(msg, name) if pred(j)]
            if hits:
                return hits[0]
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return None
            time.sleep(0.1)

    def cli(self, *args, timeout=30):
        """`hsp-gateway ARGS --data-dir D` -> (rc, stdout, stderr)."""
        argv = [self.binary] + list(args) + ["--data-dir", self.data_dir]
        return harness.run_cmd(argv, timeout=timeout, env=self.env())

    def tail(self, n=60):
        return self.proc.output_tail(n) if self.proc else ""

    def cert_paths(self, issuer_key, name=NAME):
        d = os.path.join(self.data_dir, "certificates", issuer_key, name)
        return tuple(os.path.join(d, name + ext) for ext in (".crt", ".key", ".json"))


def cert_entries(doc):
    """`certs --json`: a list of entries, or an object holding one under "certificates"."""
    if isinstance(doc, dict):
        doc = doc.get("certificates", [])
    return doc if isinstance(doc, list) else []


def entry_for(doc, name):
    for e in cert_entries(doc):
        if isinstance(e, dict) and (e.get("name") == name or name in (e.get("names") or [])):
            return e
    return None


class AcmeTest(unittest.TestCase):
    """One Pebble and its gateway(s) per test, all stopped in cleanups (in reverse order)."""

    def setUp(self):
        self.http = harness.free_port()
        self.https = harness.free_port()

    def pebble(self, http_port=None, tls_port=None, nonce_reject=0):
        p = Pebble(http_port or self.http, tls_port or self.https, nonce_reject=nonce_reject)
        self.addCleanup(p.close)
        p.start()
        self.addCleanup(lambda: harness.log("--- pebble log ---\n" + p.log_tail(30)))
        return p

    def gateway(self, config, http_port=None, https_port=None, start=True, **kw):
        gw = AcmeGateway(config, http_port or self.http, https_port or self.https, **kw)
        self.addCleanup(gw.cleanup)
        self.addCleanup(self._stop_gateway, gw)
        if start:
            gw.start()
        return gw

    def _stop_gateway(self, gw):
        rc = gw.stop()
        lines = gw.proc.all_lines() if gw.proc else []
        acme = [ln for ln in lines if "acme" in ln or "certificate" in ln]
        harness.log("--- %s: acme log lines ---\n%s" % (gw.tmp, "\n".join(acme[-30:])))
        if isinstance(rc, int) and rc < 0 and rc != -signal.SIGKILL:
            self.fail("gateway died from signal %d" % -rc)

    def assert_served(self, gw, peb, timeout=OBTAIN_TIMEOUT):
        """Polls until https://a.test answers "hello a" with curl trusting only Pebble's
        issuing root."""
        ok, last = wait_https(gw.https_port, NAME, peb.issuing_root(), BODY, timeout, gw.proc)
        self.assertTrue(ok, "a.test not served with a Pebble certificate within %.0f s: "
                        "curl -> %r\n--- gateway ---\n%s\n--- pebble ---\n%s"
                        % (timeout, last, gw.tail(), peb.log_tail()))

    def assert_pebble_leaf(self, gw, peb):
        """The served leaf chains to Pebble's root, names a.test, is issued by Pebble's
        intermediate, and is the one stored under the data directory (key mode 0600)."""
        peer, der = served_leaf(gw.https_port, NAME, peb.issuing_root())
        self.assertIn(("DNS", NAME), peer.get("subjectAltName", ()))
        issuer_cn = pebble.rdn(peer["issuer"]).get("commonName", "")
        inter_cn = pebble.subject_of_pem(peb.intermediate_pem())
        self.assertTrue(issuer_cn.startswith("Pebble Intermediate CA"), peer["issuer"])
        self.assertIn("CN=" + issuer_cn, inter_cn)
        crt, key, meta = gw.cert_paths(peb.issuer_key)
        for path in (crt, key, meta):
            self.assertTrue(os.path.isfile(path), "%s missing; data dir holds:\n%s"
                            % (path, "\n".join(walk(gw.data_dir))))
        with open(crt) as f:
            chain = pebble.pem_certs(f.read())
        self.assertGreaterEqual(len(chain), 2, "leaf and intermediate expected in " + crt)
        self.assertEqual(chain[0], der, "the served leaf is not the stored one")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600, key)
        with open(meta) as f:
            json.load(f)
        return peer, der

    # -- 1 ------------------------------------------------------------------------------------
    def test_http01(self):
        # Pebble's TLS-ALPN-01 port has nothing behind it: only HTTP-01 can validate.
        peb = self.pebble(self.http, harness.closed_port())
        gw = self.gateway(caddyfile(peb.directory_url, peb.acme_ca_root, self.http, self.https,
                                    HTTP01))
        self.assert_served(gw, peb)
        self.assert_pebble_leaf(gw, peb)
        started = gw.events("acme_obtain_started")
        self.assertEqual(len(started), 1, gw.tail())
        if gw.kind != "caddy":
            self.assertEqual(started[0].get("ca"), peb.directory_url)
            got = gw.events("acme_certificate_obtained")
            self.assertEqual(len(got), 1, gw.tail())
            self.assertIs(got[0].get("renewal"), False)
            # The brief names the field not_after; the gateway's other certificate log lines
            # (tls_certs) say not_after_unix (seconds): either, in the future.
            if "not_after_unix" in got[0]:
                self.assertGreater(got[0]["not_after_unix"], time.time(), got[0])
            else:
                self.assertTrue(got[0].get("not_after"), got[0])
        self.assertEqual(gw.events("acme_failed"), [], gw.tail())
        self.assertTrue(any("validate w/ HTTP:" in ln for ln in peb.log_lines()),
                        "Pebble did not validate HTTP-01:\n" + peb.log_tail())

    # -- 2 ------------------------------------------------------------------------------------
    def test_tls_alpn01(self):
        # Pebble's HTTP-01 port has nothing behind it: only TLS-ALPN-01 can validate.
        peb = self.pebble(harness.closed_port(), self.https)
        # The data directory comes from HSP_DATA_DIR this time (the flag's alternative).
        gw = self.gateway(caddyfile(peb.directory_url, peb.acme_ca_root, self.http, self.https,
                                    TLSALPN01), data_dir_by_env=True)
        self.assert_served(gw, peb)
        self.assert_pebble_leaf(gw, peb)
        self.assertEqual(len(gw.events("acme_obtain_started")), 1, gw.tail())
        self.assertEqual(gw.events("acme_failed"), [], gw.tail())
        self.assertFalse(any("http-01" in ln.lower() for ln in peb.log_lines()),
                         "HTTP-01 tried although disabled:\n" + peb.log_tail())

    # -- localhost, `tls internal` ------------------------------------------------------------
    def test_localhost_and_tls_internal_never_ordered(self):
        peb = self.pebble()
        gw = self.gateway(caddyfile(peb.directory_url, peb.acme_ca_root, self.http, self.https,
                                    HTTP01, extra=NOT_ACME_SITES))
        self.assert_served(gw, peb)
        # Pebble saw one order, for a.test only.
        lines = peb.log_lines()
        self.assertEqual(sum("Added order" in ln for ln in lines), 1, peb.log_tail())
        self.assertFalse([ln for ln in lines if "localhost" in ln or "internal.test" in ln])
        if gw.kind != "caddy":  # Caddy logs "obtaining certificate" for its internal issuer too
            names = [j.get("name") for j in gw.events("acme_obtain_started", name=None)]
            self.assertEqual(names, [NAME], gw.tail())
        # Both still served over HTTPS, from the local CA.
        for host, body in (("localhost", "hello localhost"), ("internal.test", "hello internal")):
            status, got, err = self.local_ca_get(gw, host)
            self.assertEqual((status, got), (200, body), err)

    def local_ca_get(self, gw, host):
        # The local CA lives in the data directory (as Caddy's) or, if --data-dir is only for
        # ACME, where it lived before issue 6 ($XDG_DATA_HOME/hsp-gateway).
        rel = os.path.join("pki", "authorities", "local", "root.crt")
        roots = [os.path.join(gw.data_dir, rel),
                 os.path.join(gw.home, "data", "hsp-gateway", rel)]
        root = next((r for r in roots if os.path.isfile(r)), None)
        self.assertIsNotNone(root, "no local CA root in %s" % roots)
        return curl_https(gw.https_port, host, root)

    # -- 3 ------------------------------------------------------------------------------------
    @unittest.skipIf(harness.gateway_kind() == "caddy", "hsp-gateway CLI and SIGHUP")
    def test_forced_renewal_keeps_open_connection(self):
        peb = self.pebble()
        gw = self.gateway(caddyfile(peb.directory_url, peb.acme_ca_root, self.http, self.https,
                                    HTTP01))
        self.assert_served(gw, peb)
        old = TlsClient(self.https, NAME, peb.issuing_root())
        self.addCleanup(old.close)
        r = old.request("GET", "/", host=NAME)
        self.assertEqual((r.status, r.body), (200, BODY.encode()))
        serial1 = old.peer()["serialNumber"]

        rc, out, err = gw.cli("certs", "renew", NAME)
        self.assertEqual(rc, 0, out + err)
        gw.proc.send_signal(signal.SIGHUP)
        ev = gw.wait_event("acme_certificate_obtained", lambda j: j.get("renewal") is True)
        self.assertIsNotNone(ev, "no acme_certificate_obtained renewal=true:\n" + gw.tail())

        def new_serial():
            serial = served_leaf(self.https, NAME, peb.issuing_root())[0]["serialNumber"]
            return serial if serial != serial1 else None
        serial2 = harness.wait_until(new_serial, timeout=10)
        self.assertTrue(serial2, "a new connection still gets serial %s after the renewal:\n%s"
                        % (serial1, gw.tail()))
        # The connection opened before the renewal still answers (same connection: no new
        # handshake happened on it).
        r = old.request("GET", "/", host=NAME)
        self.assertEqual((r.status, r.body), (200, BODY.encode()))
        self.assertEqual(old.peer()["serialNumber"], serial1)
        self.assertEqual(gw.events("acme_failed"), [], gw.tail())

    # -- 4 ------------------------------------------------------------------------------------
    def test_two_processes_share_storage_one_order(self):
        http2, https2 = harness.free_port(), harness.free_port()
        # Pebble validates on gateway 1's ports; whichever process orders, gateway 1 must answer
        # (from the shared challenge_tokens directory when gateway 2 holds the order).
        peb = self.pebble(self.http, self.https)
        shared = tempfile.mkdtemp(prefix="hsp-it-acme-shared-")
        self.addCleanup(shutil.rmtree, shared, True)
        data = os.path.join(shared, "caddy" if harness.gateway_kind() == "caddy" else "data")
        gw1 = self.gateway(caddyfile(peb.directory_url, peb.acme_ca_root, self.http, self.https,
                                     HTTP01), data_dir=data, name="acme-gw1", start=False)
        gw2 = self.gateway(caddyfile(peb.directory_url, peb.acme_ca_root, http2, https2,
                                     HTTP01), http_port=http2, https_port=https2,
                           data_dir=data, name="acme-gw2", start=False)
        # Both processes up before either can have finished an order.
        gw1.spawn()
        gw2.spawn()
        gw1.wait_ready()
        gw2.wait_ready()
        self.assert_served(gw1, peb)
        self.assert_served(gw2, peb)
        _, der1 = served_leaf(self.https, NAME, peb.issuing_root())
        _, der2 = served_leaf(https2, NAME, peb.issuing_root())
        self.assertEqual(der1, der2, "the two processes serve different certificates")
        s1, s2 = gw1.events("acme_obtain_started"), gw2.events("acme_obtain_started")
        self.assertEqual(len(s1) + len(s2), 1, "expected one order across both processes:\n"
                         "--- gw1 ---\n%s\n--- gw2 ---\n%s" % (gw1.tail(), gw2.tail()))
        # The other one either waited on the lock (both started together, the usual case) or
        # found the certificate in storage; either way it says so.
        other = gw2 if s1 else gw1
        waited = other.events("acme_waiting_for_lock")
        loaded = other.events("acme_certificate_loaded")
        harness.log("the process that did not order logged: waiting_for_lock=%d "
                    "certificate_loaded=%d" % (len(waited), len(loaded)))
        if other.kind != "caddy":
            self.assertTrue(waited or loaded, other.tail())
        self.assertEqual(gw1.events("acme_failed") + gw2.events("acme_failed"), [])

    # -- 5 ------------------------------------------------------------------------------------
    def test_nonce_reject_50_percent(self):
        peb = self.pebble(nonce_reject=50)
        self.assertTrue(any("reject 50% of good nonces" in ln for ln in peb.log_lines()),
                        peb.log_tail())
        gw = self.gateway(caddyfile(peb.directory_url, peb.acme_ca_root, self.http, self.https,
                                    HTTP01))
        self.assert_served(gw, peb)
        self.assert_pebble_leaf(gw, peb)
        self.assertIsNotNone(gw.wait_event("acme_certificate_obtained", timeout=5), gw.tail())
        self.assertEqual(gw.events("acme_failed"), [], gw.tail())

    # -- 6 ------------------------------------------------------------------------------------
    @unittest.skipIf(harness.gateway_kind() == "caddy", "hsp-gateway CLI and SIGHUP")
    def test_ca_down_backs_off_and_keeps_serving(self):
        peb = self.pebble()
        gw = self.gateway(caddyfile(peb.directory_url, peb.acme_ca_root, self.http, self.https,
                                    HTTP01))
        self.assert_served(gw, peb)
        root = peb.issuing_root()  # Pebble's root changes if it restarts: keep this one
        _, der_before = served_leaf(self.https, NAME, root)
        peb.stop()

        rc, out, err = gw.cli("certs", "renew", NAME)
        self.assertEqual(rc, 0, out + err)
        gw.proc.send_signal(signal.SIGHUP)
        failed = gw.wait_event("acme_failed")
        self.assertIsNotNone(failed, "no acme_failed with Pebble down:\n" + gw.tail())
        harness.log("acme_failed: %s" % json.dumps(failed))
        self.assertEqual(failed.get("ca"), peb.directory_url)
        self.assertTrue(failed.get("step"), failed)
        self.assertIsInstance(failed.get("next_attempt_s"), (int, float), failed)
        self.assertGreaterEqual(failed["next_attempt_s"], 60, failed)
        self.assertGreaterEqual(failed.get("failures", 0), 1, failed)
        self.assertEqual(len(gw.events("acme_certificate_obtained")), 1, gw.tail())

        # The old certificate keeps serving.
        status, body, err = curl_https(self.https, NAME, root)
        self.assertEqual((status, body), (200, BODY), err)
        _, der_after = served_leaf(self.https, NAME, root)
        self.assertEqual(der_after, der_before)

        rc, out, err = gw.cli("certs", "--json")
        self.assertEqual(rc, 0, out + err)
        entry = entry_for(json.loads(out), NAME)
        self.assertIsNotNone(entry, "a.test not in `certs --json`:\n" + out)
        self.assertTrue(entry.get("last_error"), entry)
        for key in ("issuer", "not_after", "renew_at"):
            self.assertIn(key, entry, entry)
        self.assertEqual(entry["issuer"], peb.issuer_key)
        # Without --json: a table naming the certificate and its error.
        rc, out, err = gw.cli("certs")
        self.assertEqual(rc, 0, out + err)
        self.assertIn(NAME, out)

    # -- 7 ------------------------------------------------------------------------------------
    @unittest.skipIf(harness.gateway_kind() == "caddy", "hsp-gateway log lines")
    def test_rate_limited_waits_retry_after(self):
        stub = RateLimitedCa()
        self.addCleanup(stub.close)
        gw = self.gateway(caddyfile(stub.directory_url, stub.ca_pem, self.http, self.https,
                                    HTTP01))
        failed = gw.wait_event("acme_failed")
        self.assertIsNotNone(failed, "no acme_failed against the 429 stub:\n" + gw.tail())
        seen = stub.count()
        harness.log("acme_failed: %s" % json.dumps(failed))
        self.assertGreaterEqual(seen, 1)
        self.assertEqual(failed.get("ca"), stub.directory_url)
        self.assertEqual(failed.get("status"), 429, failed)
        self.assertEqual(failed.get("problem_type"), "urn:ietf:params:acme:error:rateLimited")
        self.assertEqual(failed.get("retry_after_s"), 120, failed)
        self.assertGreaterEqual(failed.get("next_attempt_s", 0), 120, failed)
        # Nothing is retried before Retry-After: no further request in the next two seconds
        # (a lower bound on the wait, so slowness cannot make this fail).
        time.sleep(2.0)
        self.assertEqual(stub.count(), seen, "the gateway asked the stub again: %r"
                         % stub.requests())
        # No certificate: the handshake for a.test fails (as Caddy's).
        status, _, err = curl_https(self.https, NAME, stub.ca_pem)
        self.assertEqual(status, 0, "a.test answered without a certificate")


    # -- shutdown during an order ---------------------------------------------------------------
    @unittest.skipIf(harness.gateway_kind() == "caddy", "hsp-gateway log lines")
    def test_sigterm_during_an_order_exits(self):
        """A CA that accepts the TLS connection and never answers holds the manager's thread in
        a request (30 s timeout, 3 min of polling at most): SIGTERM must still stop the gateway
        at once, and the abandoned order is not recorded as a failure."""
        stub = SilentCa()
        self.addCleanup(stub.close)
        gw = self.gateway(caddyfile(stub.directory_url, stub.ca_pem, self.http, self.https,
                                    HTTP01))
        started = gw.wait_event("acme_obtain_started")
        self.assertIsNotNone(started, "no acme_obtain_started:\n" + gw.tail())
        self.assertTrue(stub.wait_connected(10.0), "the gateway never reached the stub CA")
        gw.proc.popen.send_signal(signal.SIGTERM)
        # A bound on a hang, not a speed figure: the request alone would take 30 s.
        try:
            rc = gw.proc.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.fail("hsp-gateway still running 15 s after SIGTERM during an order:\n" + gw.tail())
        self.assertEqual(rc, 0, gw.tail())
        self.assertEqual(gw.events("acme_failed"), [], "a shutdown was recorded as a failure")


class SilentCa:
    """A TLS listener on 127.0.0.1 that completes handshakes and then never says a word."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="hsp-it-acme-silent-")
        self.ca_pem, cert, key = pebble.make_ca_and_leaf(self.tmp, "hsp test silent ACME CA")
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((harness.LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                c = self.ctx.wrap_socket(c, server_side=True)
            except (OSError, ssl.SSLError):
                c.close()
                continue
            self.conns.append(c)
            self.connected.set()

    def wait_connected(self, timeout):
        return self.connected.wait(timeout)

    @property
    def directory_url(self):
        return "https://127.0.0.1:%d/dir" % self.port

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class RateLimitedCa:
    """A stub ACME server on 127.0.0.1 (HTTPS, its own CA): every request gets 429 with
    Retry-After: 120 and a rateLimited problem document (RFC 8555 §6.6, §6.7)."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="hsp-it-acme-stub-")
        self.ca_pem, cert, key = pebble.make_ca_and_leaf(self.tmp, "hsp test stub ACME CA")
        self._lock = threading.Lock()
        self._requests = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                with stub._lock:
                    stub._requests.append("%s %s" % (self.command, self.path))
                body = json.dumps({"type": "urn:ietf:params:acme:error:rateLimited",
                                   "detail": "too many requests from the hsp test stub",
                                   "status": 429}).encode()
                self.send_response(429)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Retry-After", "120")
                self.send_header("Replay-Nonce", "stubnonce%d" % len(stub._requests))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = answer

            def log_message(self, fmt, *args):
                harness.log("[stub ca] " + fmt % args)

        self.server = http.server.ThreadingHTTPServer((harness.LOOPBACK, 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def directory_url(self):
        return "https://127.0.0.1:%d/dir" % self.port

    def count(self):
        with self._lock:
            return len(self._requests)

    def requests(self):
        with self._lock:
            return list(self._requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def walk(top):
    out = []
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            out.append("%o %s" % (stat.S_IMODE(os.stat(p).st_mode), os.path.relpath(p, top)))
    return out


if __name__ == "__main__":
    harness.main()

#!/usr/bin/env python3
"""Headless Chromium over HTTP/3 (chromium.py) against Debian's Caddy 2.6.2.

This proves the browser harness on a server known to speak h3, so that the gateway's h3 test
can use it unchanged. Caddy runs on 127.0.0.1 (TCP and the UDP twin of one port chosen at run
time) with a throw-away root CA + leaf for h3.test made by openssl (chromium.make_test_pki;
Caddy sends leaf + root), admin off, skip_install_trust, HOME/XDG/storage in a temp dir, and
serves chromium.REPORT_PAGE; its access log says which protocol each request came in on.

Checks:
  - forced onto QUIC (--origin-to-force-quic-on), the page is loaded over h3: the page's own
    performance entry (nextHopProtocol), DevTools' response protocol, and Caddy's access log
    (HTTP/3.0) agree, status 200, body as served;
  - without that flag the first load is h2 (so the h3 assertion can fail);
  - the Alt-Svc path: unforced, with the test host allowed an unknown root over QUIC
    (allow_unknown_root_hosts), the first load is h2 and a later one in the same browser h3;
  - without the SPKI list the load fails with a certificate error (so the certificate check is
    real and the SPKI list is what lets the test through);
  - when strace is installed: Chromium sends nothing to a non-loopback address, on a good load
    over QUIC and on a load of an unmapped name (the path where Chromium's DNS probe would
    query public DNS servers if it were not switched off). Without strace that test is
    skipped (strace is not among the test packages).
"""

import os
import shutil
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chromium  # noqa: E402
import harness  # noqa: E402
import ports  # noqa: E402

HOST = "h3.test"

CADDYFILE = """{
	admin off
	skip_install_trust
	default_bind 127.0.0.1
	auto_https disable_redirects
	storage file_system __DIR__/data
}
https://__HOST__:__PORT__ {
	bind 127.0.0.1
	tls __CHAIN__ __KEY__
	log {
		output file __LOG__
		format json
	}
	header Cache-Control no-store
	root * __SITE__
	file_server
}
"""


def udp_bound(port):
    """True once something holds UDP 127.0.0.1:port (our bind then fails)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((harness.LOOPBACK, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


class CaddyH3:
    def __init__(self, tmp):
        self.dir = tmp
        self.port = ports.tcp_and_udp_port()
        self.pki = chromium.make_test_pki(os.path.join(tmp, "pki"), HOST)
        site = os.path.join(tmp, "site")
        os.makedirs(site)
        with open(os.path.join(site, "index.html"), "w") as f:
            f.write(chromium.REPORT_PAGE)
        self.access_log = os.path.join(tmp, "access.log")
        path = os.path.join(tmp, "Caddyfile")
        with open(path, "w") as f:
            f.write(harness.render(CADDYFILE, {
                "DIR": tmp, "HOST": HOST, "PORT": self.port, "CHAIN": self.pki["chain"],
                "KEY": self.pki["key"], "LOG": self.access_log, "SITE": site}))
        env = dict(os.environ, HOME=tmp, XDG_DATA_HOME=os.path.join(tmp, "xdg-data"),
                   XDG_CONFIG_HOME=os.path.join(tmp, "xdg-config"))
        self.proc = harness.Proc([harness.caddy_binary(), "run", "--config", path,
                                  "--adapter", "caddyfile"], env=env, cwd=tmp)
        harness.wait_port(self.port, timeout=20, proc=self.proc)
        if not harness.wait_until(lambda: udp_bound(self.port), timeout=10):
            raise RuntimeError("Caddy has no UDP listener on %d:\n%s"
                               % (self.port, self.proc.output_tail()))

    def url(self, path="/"):
        return "https://%s:%d%s" % (HOST, self.port, path)

    def log_records(self):
        return harness.read_json_lines(self.access_log)

    def stop(self):
        self.proc.stop()


class ChromiumCaddyH3Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hsp-chromium-caddy-")
        cls.caddy = CaddyH3(cls.tmp)
        cls.host_map = {HOST: harness.LOOPBACK}
        cls.quic = ["%s:%d" % (HOST, cls.caddy.port)]

    @classmethod
    def tearDownClass(cls):
        cls.caddy.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def load(self, url=None, force_quic=True, spki=True, **kw):
        t0 = time.monotonic()
        r = chromium.load_page(url or self.caddy.url(), self.host_map,
                               force_quic=self.quic if force_quic else (),
                               spki_hashes=self.caddy.pki["spki"] if spki else (),
                               timeout=60, **kw)
        harness.log("chromium: %s total=%.2fs" % (chromium.describe(r), time.monotonic() - t0))
        return r

    def test_forced_quic_loads_over_h3(self):
        before = len(self.caddy.log_records())
        r = self.load()
        self.assertIsNone(r["error"], chromium.describe(r))
        self.assertEqual(r["nextHopProtocol"], "h3", chromium.describe(r))
        self.assertEqual(r["responseStatus"], 200, chromium.describe(r))
        self.assertEqual(r["protocol"], "h3", chromium.describe(r))
        self.assertEqual(r["status"], 200)
        self.assertEqual(r["remote"], "%s:%d" % (harness.LOOPBACK, self.caddy.port))
        self.assertIn("hello from the server under test", r["body"])
        # What the page's own script wrote into the DOM says the same.
        self.assertEqual(r["report"]["nextHopProtocol"], "h3")
        self.assertEqual(r["report"]["url"], self.caddy.url())
        # And so does the server.
        recs = harness.wait_until(
            lambda: [x for x in self.caddy.log_records()[before:]
                     if x.get("request", {}).get("uri") == "/"] or None, timeout=5) or []
        self.assertEqual({x["request"].get("proto") for x in recs}, {"HTTP/3.0"}, recs)

    def test_without_force_quic_first_load_is_h2(self):
        r = self.load(force_quic=False)
        self.assertIsNone(r["error"], chromium.describe(r))
        self.assertEqual(r["nextHopProtocol"], "h2", chromium.describe(r))
        self.assertEqual(r["responseStatus"], 200)
        self.assertEqual(r["protocol"], "h2")

    def test_alt_svc_upgrades_to_h3(self):
        before = len(self.caddy.log_records())
        t0 = time.monotonic()
        rs = chromium.load_pages([self.caddy.url()] * 4, self.host_map,
                                 spki_hashes=self.caddy.pki["spki"], timeout=60, settle=0.5,
                                 allow_unknown_root_hosts=[HOST])
        for r in rs:
            harness.log("chromium: %s" % chromium.describe(r))
        harness.log("alt-svc run: %.2fs" % (time.monotonic() - t0))
        protos = [r["nextHopProtocol"] for r in rs]
        self.assertTrue(all(r["error"] is None and r["responseStatus"] == 200 for r in rs), protos)
        self.assertEqual(protos[0], "h2", protos)  # Alt-Svc is learnt from this response
        self.assertIn("h3", protos[1:], protos)
        first_h3 = protos.index("h3")
        self.assertEqual(set(protos[first_h3:]), {"h3"}, protos)  # and kept once used
        recs = [x for x in self.caddy.log_records()[before:]
                if x.get("request", {}).get("uri") == "/"]
        self.assertIn("HTTP/3.0", {x["request"].get("proto") for x in recs})

    def test_without_spki_list_certificate_is_refused(self):
        r = self.load(spki=False)
        self.assertIsNotNone(r["error"], chromium.describe(r))
        self.assertNotEqual(r["nextHopProtocol"], "h3", chromium.describe(r))
        r = self.load(spki=False, force_quic=False)
        self.assertEqual(r["error"], "net::ERR_CERT_AUTHORITY_INVALID", chromium.describe(r))

    def test_chromium_stays_on_loopback(self):
        if not shutil.which("strace"):
            self.skipTest("strace not installed: network audit not run")
        for name, url in (("good_h3", self.caddy.url()),
                          ("unmapped_name", "https://not-mapped.test:%d/" % self.caddy.port)):
            trace = os.path.join(self.tmp, "strace-%s.txt" % name)
            r = self.load(url, strace_log=trace)
            audit = chromium.audit_strace(trace)
            harness.log("audit %s: loopback=%d probe_only=%s foreign=%s" % (
                name, len(audit["loopback"]), sorted(set(audit["probe_only"])),
                audit["foreign"]))
            self.assertEqual(audit["foreign"], [], name)
            self.assertTrue(audit["loopback"] or name == "unmapped_name", name)
            if name == "good_h3":
                self.assertEqual(r["nextHopProtocol"], "h3", chromium.describe(r))
            else:
                self.assertEqual(r["error"], "net::ERR_NAME_NOT_RESOLVED", chromium.describe(r))


if __name__ == "__main__":
    unittest.main(verbosity=2)

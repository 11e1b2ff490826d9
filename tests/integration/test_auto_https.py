"""Automatic HTTPS, config side (issue 4): HTTPS sites load, `adapt` prints their TLS
configuration, and `validate` / `run` load the certificate files of `tls CERT KEY` (a missing
one is an error with its position). Serving HTTPS and the redirects end to end is in
test_tls.py. What runs here: the auto_https / protocols options on plain-HTTP configs. Every
server binds 127.0.0.1 on ports chosen at run time."""

import json
import os
import re
import shutil
import tempfile
import time
import unittest

import harness

HTTPS = """{
	admin off
	skip_install_trust
	http_port __HTTP__
	https_port __HTTPS__
}

http://plain.localhost:__HTTP__ {
	bind 127.0.0.1
	respond "plain"
}

a.localhost {
	bind 127.0.0.1
	tls internal
	respond "secure"
}

b.localhost {
	bind 127.0.0.1
	tls cert.pem key.pem {
		protocols tls1.2 tls1.3
	}
	respond "files"
}
"""


@unittest.skipIf(harness.gateway_kind() == "caddy", "hsp-gateway CLI only")
class AutoHttpsCliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hsp-autohttps-")
        self.bin = harness.gateway_binary()
        self.http = harness.free_port()
        self.https = harness.free_port()
        self.path = os.path.join(self.tmp, "Caddyfile")
        with open(self.path, "w") as f:
            f.write(harness.render(HTTPS, {"HTTP": self.http, "HTTPS": self.https}))

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def env(self):
        env = dict(os.environ)
        env["HOME"] = os.path.join(self.tmp, "home")
        env["XDG_DATA_HOME"] = os.path.join(self.tmp, "data")
        env["XDG_CONFIG_HOME"] = os.path.join(self.tmp, "config")
        return env

    def check_file_errors(self, text):
        # The data plane serves HTTPS now (no more gate); what stops this config is the
        # certificate file that does not exist, named with the `tls` directive's position.
        self.assertRegex(text, re.escape(self.path) + r":21:2: tls: cert\.pem: cannot read")
        self.assertNotIn("not in the data plane yet", text)

    def test_validate_reports_missing_certificate_files(self):
        rc, out, err = harness.run_cmd([self.bin, "validate", "--config", self.path],
                                       env=self.env())
        harness.log(out + err)
        self.assertEqual(rc, 1, out + err)
        self.check_file_errors(out + err)

    def test_run_refuses_missing_certificate_files_and_listens_nowhere(self):
        rc, out, err = harness.run_cmd([self.bin, "run", "--config", self.path], timeout=20,
                                       env=self.env())
        harness.log(out + err)
        self.assertNotEqual(rc, 0, out + err)
        self.check_file_errors(out + err)
        self.assertFalse(harness.can_connect(self.http))

    def test_adapt_prints_the_tls_configuration(self):
        rc, out, err = harness.run_cmd([self.bin, "adapt", "--config", self.path],
                                       env=self.env())
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        servers = doc["apps"]["http"]["servers"]
        by_listen = {s["listen"][0]: s for s in servers.values()}
        tls_srv = by_listen["127.0.0.1:%d" % self.https]
        self.assertTrue(tls_srv["tls"])
        self.assertEqual(tls_srv["tls_connection_policies"], [
            {"match": {"sni": ["b.localhost"]}, "certificate_selection": {"any_tag": ["cert0"]},
             "protocol_min": "tls1.2", "protocol_max": "tls1.3"},
            {}])
        self.assertFalse(by_listen["127.0.0.1:%d" % self.http]["tls"])
        # The automatic redirects are added after adapting, as in Caddy: not printed.
        self.assertNotIn("request.host", out)
        self.assertEqual(doc["apps"]["tls"], {
            "certificates": {"load_files": [
                {"certificate": "cert.pem", "key": "key.pem", "tags": ["cert0"]}]},
            "automation": {"policies": [
                {"subjects": ["a.localhost"], "issuers": [{"module": "internal"}]}]}})


class AutoHttpsOptionsServeTest(unittest.TestCase):
    """The options load and a plain-HTTP site serves as before, no redirect in the way."""

    def serve(self, options):
        port = harness.free_port()
        config = ("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\trespond \"plain\"\n}\n" % port)
        with harness.Gateway(config, [port], global_options=options, name="autohttps"):
            r = harness.fetch(port, host="127.0.0.1:%d" % port)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, b"plain")
            self.assertIsNone(r.header("Location"))

    @unittest.skipIf(harness.gateway_kind() == "caddy", "the caddy harness adds auto_https off")
    def test_disable_redirects_and_protocols(self):
        self.serve(["auto_https disable_redirects", "servers {\n\t\tprotocols h1 h2\n\t}"])

    def test_off(self):
        if harness.gateway_kind() == "caddy":
            self.serve([])  # the harness already says auto_https off for caddy
        else:
            self.serve(["auto_https off"])


if __name__ == "__main__":
    harness.main()

"""The CLI: validate / adapt exit codes and errors naming file:line:col, version, and `run`
refusing a bad config. hsp-gateway only (Caddy's CLI differs)."""

import json
import os
import re
import tempfile
import unittest

import harness

GOOD = """{
	admin off
	skip_install_trust
}

:%(port)d {
	bind 127.0.0.1
	@api path /api/*
	handle @api {
		reverse_proxy 127.0.0.1:9 127.0.0.1:10 {
			lb_policy first
		}
	}
	respond "hello" 200
}
"""

# Two independent errors: an unknown directive (line 6, col 2) and an unknown matcher in
# another site (line 12, col 3).
BAD = """{
	admin off
}

:%(port)d {
	frobnicate on
	respond "x"
}

:%(port2)d {
	@m {
		nosuchmatcher x
	}
	respond @m "y"
}
"""


@unittest.skipIf(harness.gateway_kind() == "caddy", "hsp-gateway CLI only")
class CliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hsp-cli-")
        self.bin = harness.gateway_binary()

    def tearDown(self):
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_cli(self, *args, timeout=20):
        return harness.run_cmd([self.bin] + list(args), timeout=timeout)

    def test_version(self):
        rc, out, err = self.run_cli("version")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out + err, r"\d+\.\d+")

    def test_help_exits_zero_and_names_the_demo_port(self):
        rc, out, err = self.run_cli("help")
        self.assertEqual(rc, 0, err)
        self.assertIn("--demo-port", out)

    def test_demo_port_with_config_is_refused(self):
        path = self.write("good.caddyfile", GOOD % {"port": harness.free_port()})
        rc, out, err = self.run_cli("run", "--config", path, "--demo-port", "9000")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("--demo-port applies to the embedded demo only", err)

    def test_adapt_labels_prints_what_cdp_prints(self):
        # caddy-docker-proxy's generator goldens: labels in, Caddyfile out, {{upstreams}} fixed
        # to the single target "target" (see ../shared/conformance/cdp-testdata/MANIFEST.md).
        root = os.path.join(harness.HERE, "..", "..", "..", "shared", "conformance",
                            "cdp-testdata", "generator", "testdata", "labels")
        files = sorted(f for f in os.listdir(root) if f.endswith(".txt"))
        self.assertEqual(len(files), 9, root)
        for name in files:
            with open(os.path.join(root, name)) as f:
                labels_part, expected = f.read().split("----------", 1)
            path = self.write(name + ".labels", labels_part)
            rc, out, err = self.run_cli("adapt", "--labels", path, "--upstream", "target")
            expected = expected.strip()
            if expected.startswith("err:"):
                self.assertEqual(rc, 1, name)
                self.assertTrue(err.strip(), name)
                continue
            self.assertEqual(out.strip(), expected, name + "\n" + err)

    def test_validate_good(self):
        path = self.write("good.caddyfile", GOOD % {"port": harness.free_port()})
        rc, out, err = self.run_cli("validate", "--config", path)
        self.assertEqual(rc, 0, out + err)

    def test_validate_bad_lists_every_error_with_position(self):
        path = self.write("bad.caddyfile", BAD % {"port": harness.free_port(),
                                                   "port2": harness.free_port()})
        rc, out, err = self.run_cli("validate", "--config", path)
        text = out + err
        harness.log(text)
        self.assertEqual(rc, 1, text)
        self.assertIn("frobnicate", text)
        self.assertRegex(text, re.escape(path) + r":6:\d+")
        self.assertIn("nosuchmatcher", text)
        self.assertRegex(text, re.escape(path) + r":12:\d+")

    def test_validate_parse_error_position(self):
        path = self.write("unclosed.caddyfile", ":%d {\n\trespond \"x\"\n" % harness.free_port())
        rc, out, err = self.run_cli("validate", "--config", path)
        text = out + err
        harness.log(text)
        self.assertEqual(rc, 1, text)
        self.assertRegex(text, re.escape(path) + r":\d+:\d+")

    def test_validate_missing_file(self):
        rc, out, err = self.run_cli("validate", "--config", os.path.join(self.tmp, "nope"))
        self.assertNotEqual(rc, 0)

    def test_adapt_prints_deterministic_json(self):
        path = self.write("good.caddyfile", GOOD % {"port": 18080})
        rc, out, err = self.run_cli("adapt", "--config", path)
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertTrue(doc)
        self.assertIn("18080", out)
        rc2, out2, _ = self.run_cli("adapt", "--config", path)
        self.assertEqual(rc2, 0)
        self.assertEqual(out, out2, "adapt output is not deterministic")

    def test_adapt_bad_config_fails(self):
        path = self.write("bad.caddyfile", BAD % {"port": 18081, "port2": 18082})
        rc, out, err = self.run_cli("adapt", "--config", path)
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(out + err, re.escape(path) + r":6:\d+")

    def test_run_bad_config_exits_nonzero(self):
        path = self.write("bad.caddyfile", BAD % {"port": harness.free_port(),
                                                   "port2": harness.free_port()})
        rc, out, err = self.run_cli("run", "--config", path, timeout=15)
        self.assertNotEqual(rc, 0)
        self.assertRegex(out + err, re.escape(path) + r":6:\d+")

    def test_unsupported_directive_is_an_error(self):
        path = self.write("unsupported.caddyfile",
                          ":%d {\n\tbind 127.0.0.1\n\tfile_server\n}\n" % harness.free_port())
        rc, out, err = self.run_cli("validate", "--config", path)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("file_server", out + err)
        self.assertRegex(out + err, re.escape(path) + r":3:\d+")

    def test_run_logs_listening(self):
        port = harness.free_port()
        gw = harness.Gateway(":%d {\n\tbind 127.0.0.1\n\trespond \"ok\"\n}\n" % port, [port])
        try:
            gw.start()
            line = gw.proc.wait_line(lambda l: "listening" in l, 5)
            self.assertIsNotNone(line, gw.proc.output_tail())
            entry = json.loads(line)
            self.assertEqual(entry.get("msg"), "listening")
            self.assertIn(str(port), entry.get("addr", ""))
        finally:
            gw.stop()


if __name__ == "__main__":
    harness.main()

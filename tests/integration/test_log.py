"""The `log` directive: access-log lines (Caddy's field names) to a file, none for `discard`,
none for sites without `log`; one line per request, including 502s and redirects."""

import json
import os
import shutil
import tempfile
import time

import harness
from harness import Client, GatewayTest, closed_port, free_port

SITES = """
:__PORT__ {
	bind 127.0.0.1
	log {
		output file __LOGFILE__
		format json
	}
	handle /down* {
		reverse_proxy __DOWN__
	}
	redir /old /new
	reverse_proxy __UP__
}

:__PORT2__ {
	bind 127.0.0.1
	log {
		output discard
	}
	respond "quiet"
}

:__PORT3__ {
	bind 127.0.0.1
	respond "unlogged"
}
"""


class LogTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream(harness.echo_handler(), "echo")
        self.dir = tempfile.mkdtemp(prefix="hsp-log-")
        self.logfile = os.path.join(self.dir, "access.log")
        self.ports = [free_port(), free_port(), free_port()]
        self.gw = self.gateway(SITES, self.ports, {
            "PORT": self.ports[0], "PORT2": self.ports[1], "PORT3": self.ports[2],
            "UP": self.up.addr, "DOWN": "127.0.0.1:%d" % closed_port(),
            "LOGFILE": self.logfile})

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def entries(self):
        if not os.path.exists(self.logfile):
            return []
        out = []
        with open(self.logfile) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
        return [e for e in out if isinstance(e.get("request"), dict)]

    def test_file_output(self):
        with Client(self.ports[0]) as c:
            self.assertEqual(c.request("GET", "/a?x=1", [("User-Agent", "log-test")]).status, 200)
            self.assertEqual(c.request("POST", "/b", body=b"abc").status, 200)
            self.assertEqual(c.request("GET", "/old").status, 302)
            self.assertEqual(c.request("GET", "/down").status, 502)
        got = harness.wait_until(lambda: len(self.entries()) >= 4, 5)
        self.assertTrue(got, "access log file has %d entries" % len(self.entries()))
        time.sleep(0.2)
        entries = self.entries()
        self.assertEqual(len(entries), 4, entries)
        by_uri = {e["request"]["uri"]: e for e in entries}
        self.assertEqual(sorted(by_uri), ["/a?x=1", "/b", "/down", "/old"])
        e = by_uri["/a?x=1"]
        self.assertEqual(e["request"]["method"], "GET")
        self.assertEqual(e["request"]["host"], "127.0.0.1:%d" % self.ports[0])
        self.assertEqual(e["request"]["proto"], "HTTP/1.1")
        self.assertEqual(e["request"]["remote_ip"], "127.0.0.1")
        self.assertEqual(e["status"], 200)
        self.assertGreater(e["size"], 0)
        self.assertGreaterEqual(e["duration"], 0)
        self.assertEqual(by_uri["/b"]["request"]["method"], "POST")
        self.assertEqual(by_uri["/old"]["status"], 302)
        self.assertEqual(by_uri["/down"]["status"], 502)
        self.assertEqual(by_uri["/down"]["size"], 0)

    def test_discard_and_unlogged_sites_write_nothing(self):
        self.assertEqual(harness.fetch(self.ports[1], "GET", "/q").body, b"quiet")
        self.assertEqual(harness.fetch(self.ports[2], "GET", "/u").body, b"unlogged")
        self.assertEqual(harness.fetch(self.ports[0], "GET", "/logged").status, 200)
        self.assertTrue(harness.wait_until(lambda: self.entries(), 5))
        time.sleep(0.2)
        uris = [e["request"]["uri"] for e in self.entries()]
        self.assertEqual(uris, ["/logged"])
        process_logged = [j for j in self.gw.proc.json_lines()
                          if isinstance(j.get("request"), dict)
                          and j["request"].get("uri") in ("/q", "/u")]
        self.assertEqual(process_logged, [], "requests of unlogged sites were logged")


if __name__ == "__main__":
    harness.main()

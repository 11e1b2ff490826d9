"""End to end with a real external client (curl): GET, a 5 MiB upload (curl sends
`Expect: 100-continue` for it), a chunked upload from stdin, a redirect followed, and a 1 MiB
chunked download, all through a proxied site."""

import hashlib
import json
import os
import subprocess
import tempfile

import harness
from harness import GatewayTest, free_port

SITE = """
:__PORT__ {
	bind 127.0.0.1
	redir /go /api/landed 302
	handle /big* {
		reverse_proxy __BIG__
	}
	handle_path /api/* {
		reverse_proxy __UP__
	}
}
"""


class CurlTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream(harness.echo_handler(), "echo")
        self.big = self.upstream(harness.bigbody_handler(), "big")
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.gw = self.gateway(SITE, [self.port], {"PORT": self.port, "UP": self.up.addr,
                                                   "BIG": self.big.addr})

    def curl(self, *args, stdin=None):
        argv = ["curl", "-sS", "--noproxy", "*", "--max-time", "30"] + list(args)
        p = subprocess.run(argv, input=stdin, capture_output=True, timeout=60,
                           preexec_fn=harness._set_pdeathsig)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return p.stdout

    def test_get(self):
        out = self.curl("-H", "X-Test: 1", self.base + "/api/hello?x=1")
        info = json.loads(out)
        self.assertEqual(info["target"], "/hello?x=1")
        self.assertIn(["X-Test", "1"], info["headers"])

    def test_upload_with_expect_continue(self):
        data = os.urandom(5 << 20)
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            out = self.curl("--data-binary", "@" + f.name, "-H",
                            "Content-Type: application/octet-stream", self.base + "/api/up")
        info = json.loads(out)
        self.assertEqual(info["body_len"], len(data))
        self.assertEqual(info["body_sha256"], hashlib.sha256(data).hexdigest())

    def test_chunked_upload_from_stdin(self):
        data = os.urandom(300000)
        out = self.curl("-T", "-", self.base + "/api/stdin", stdin=data)
        info = json.loads(out)
        self.assertEqual(info["method"], "PUT")
        self.assertEqual(info["body_len"], len(data))
        self.assertIn(["Transfer-Encoding", "chunked"], info["headers"])

    def test_redirect_followed(self):
        out = self.curl("-L", self.base + "/go")
        self.assertEqual(json.loads(out)["target"], "/landed")

    def test_chunked_download(self):
        n = 1 << 20
        out = self.curl(self.base + "/big?n=%d&chunked=1" % n)
        self.assertEqual(len(out), n)
        self.assertEqual(hashlib.sha256(out).hexdigest(), harness.pattern_bytes(n))


if __name__ == "__main__":
    harness.main()

"""`hsp-gateway run` with no config file: the embedded demo serves a page through the proxy, and
listens on loopback only. hsp-gateway only."""

import os
import signal
import socket
import unittest

import harness


def free_port_pair():
    """A port P with P+1 also free (the demo's upstream site listens on P+1)."""
    for _ in range(50):
        p = harness.free_port()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((harness.LOOPBACK, p + 1))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port pair")


class DemoTest(unittest.TestCase):
    def test_demo_page_is_proxied_on_loopback(self):
        port = free_port_pair()
        proc = harness.Proc([harness.gateway_binary(), "run", "--demo-port", str(port),
                             "--threads", "1"], env=dict(os.environ))
        try:
            harness.wait_port(port, proc=proc)
            harness.wait_port(port + 1, proc=proc)
            resp = harness.fetch(port, target="/")
            self.assertEqual(resp.status, 200, proc.output_tail())
            self.assertIn(b"hsp-gateway works", resp.body)
            self.assertIn(("proxied by the site on 127.0.0.1:%d" % port).encode(), resp.body)
            self.assertTrue(harness.header_get(resp.headers, "Content-Type", "")
                            .startswith("text/html"))
            addrs = [j.get("addr", "") for j in proc.json_lines("stderr")
                     if j.get("msg") == "listening"]
            self.assertEqual(len(addrs), 2, proc.output_tail())
            for a in addrs:
                self.assertTrue(a.startswith("127.0.0.1:"), "demo listens beyond loopback: " + a)
        finally:
            rc = proc.stop(signal.SIGTERM, timeout=15)
        self.assertEqual(rc, 0, proc.output_tail())


if __name__ == "__main__":
    unittest.main()

"""Smoke test of bench/floor.sh, the kernel-floor measurement under issue 5's h1 CPU target: one
QUICK=1 run (1 s loads) of nginx, hsp-floor-forwarder and hsp-gateway in front of the script's
nginx backend, loaded by hsp-bench. Asserts that the measurement works, not any figure: the table
has the three rows with numbers, the "room left" line is printed, and every load got only 200s
and no errors (a proxy that did not serve fails the test).

Needs $HSP_GATEWAY, $HSP_BENCH and $HSP_FLOOR_FORWARDER (ctest sets them) and Debian's nginx.
Everything runs on 127.0.0.1 with ports the kernel picks; the script stops all it started on exit
or SIGTERM."""

import os
import re
import shutil
import unittest

from bench_smoke import NUM, assert_served, require_binaries, results, run_quick, table_rows

ROWS = {"nginx": "nginx", "floor": "floor (hsp-floor-forwarder)", "hsp-gateway": "hsp-gateway"}
ROOM = re.compile(r"^0\.8x nginx = [\d.]+ µs; floor = [\d.]+ µs \([\d.]+ x nginx\): "
                  r"room left for HTTP work = -?[\d.]+ µs$", re.M)


class FloorSmokeTest(unittest.TestCase):
    def test_quick_run(self):
        require_binaries(self, "HSP_GATEWAY", "HSP_BENCH", "HSP_FLOOR_FORWARDER")
        env = dict(os.environ)
        env.pop("PROXIES", None)  # the default set: nginx, floor, hsp-gateway
        stdout, out = run_quick(self, "floor.sh", 100, env, tail=4000)

        # Every load served: only 200s, no errors, requests counted at the backend.
        recs = results(out)
        self.assertEqual(sorted(r["who"] for r in recs), sorted(ROWS))
        for r in recs:
            self.assertNotIn("na", r, "%s: %s" % (r["who"], r.get("na")))
            assert_served(self, r, r["who"])
            self.assertGreater(r.get("backend_served", 0), 0, r["who"])

        # The printed table: three rows with numbers, then the "room left" line.
        with open(os.path.join(out, "summary.md")) as f:
            summary = f.read()
        for text in (stdout, summary):
            rows = table_rows(text, "| proxy | CPU µs/req |")
            self.assertEqual(sorted(c[0] for c in rows), sorted(ROWS.values()), text)
            for row in rows:
                # CPU, user, sys µs/req, req/s, CPU ×nginx
                for i in range(1, 6):
                    self.assertRegex(row[i], NUM, "%s column %d: %r" % (row[0], i, row))
                self.assertEqual(row[6], "0 / 0", row)
            self.assertRegex(text, ROOM)
        shutil.rmtree(out, ignore_errors=True)  # kept for inspection when an assertion fails


if __name__ == "__main__":
    unittest.main(verbosity=2)

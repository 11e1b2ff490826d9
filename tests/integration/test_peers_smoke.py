"""Smoke test of bench/peers.sh, the side-by-side harness: one QUICK=1 run (1 s loads) with all
five proxies (nginx, HAProxy, Caddy, h2o, hsp-gateway) in front of the script's nginx backend,
loaded by hsp-bench. Asserts that the harness works, not any figure: the summary table exists,
every proxy has a row with numbers for h1 and h2 and for the open-loop latency run, and every load
got only 200s and no errors (a proxy that did not serve fails the test).

Needs $HSP_GATEWAY and $HSP_BENCH (ctest sets both) and Debian's nginx, haproxy, caddy and h2o
(`HSP_WITH_TESTS=1 scripts/install-deps.sh`). Everything runs on 127.0.0.1 with ports the
kernel picks; the script stops all it started on exit or SIGTERM."""

import os
import shutil
import unittest

from bench_smoke import NUM, assert_served, require_binaries, results, run_quick, table_rows

PROXIES = ["nginx", "haproxy", "caddy", "h2o", "hsp-gateway"]


class PeersSmokeTest(unittest.TestCase):
    def test_quick_run_all_proxies(self):
        require_binaries(self, "HSP_GATEWAY", "HSP_BENCH")
        _, out = run_quick(self, "peers.sh", 170, dict(os.environ, PROXIES=" ".join(PROXIES)))

        # Every load served: only 200s, no errors, some requests. No proxy failed to start.
        measured = set()
        for r in results(out):
            where = "%s %s" % (r["who"], r["proto"])
            if "na" in r:
                self.assertEqual(r["proto"], "h3", "%s: %s" % (where, r["na"]))
                continue
            assert_served(self, r, where)
            if not r["who"].startswith("direct"):
                self.assertGreater(r.get("backend_served", 0), 0, where)
            measured.add((r["who"], r["proto"]))
        for p in PROXIES:
            for proto in ("h1", "h2", "h1-open"):
                self.assertIn((p, proto), measured, "%s %s was not measured" % (p, proto))
            self.assertIn(("direct@" + p, "h1-open"), measured)

        # The table: a row with numbers per proxy and protocol.
        summary = open(os.path.join(out, "summary.md")).read()
        closed = table_rows(summary, "| proxy | proto | req/s |")
        for p in PROXIES:
            for proto in ("h1", "h2"):
                row = next((c for c in closed if c[0] == p and c[1] == proto), None)
                self.assertIsNotNone(row, "no %s %s row in:\n%s" % (p, proto, summary))
                # req/s, p50, p99, CPU µs/req (first number), idle RSS, peak RSS
                for i in (2, 4, 5, 10, 11):
                    self.assertRegex(row[i], NUM, "%s %s column %d: %r" % (p, proto, i, row))
                self.assertRegex(row[7].split(" ")[0], NUM, "%s %s CPU: %r" % (p, proto, row))
        opened = table_rows(summary, "| proxy | rate req/s |")
        for p in PROXIES:
            row = next((c for c in opened if c[0] == p), None)
            self.assertIsNotNone(row, "no open-loop row for %s" % p)
            for i in (1, 2, 4, 6, 7):
                self.assertRegex(row[i], NUM, "%s open loop column %d: %r" % (p, i, row))
        self.assertIn("Targets (hsp-gateway, run 1):", summary)
        shutil.rmtree(out, ignore_errors=True)  # kept for inspection when an assertion fails


if __name__ == "__main__":
    unittest.main(verbosity=2)

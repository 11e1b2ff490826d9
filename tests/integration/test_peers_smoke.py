"""Smoke test of bench/peers.sh, the side-by-side harness: one QUICK=1 run (1 s loads) with all
five proxies (nginx, HAProxy, Caddy, h2o, hsp-gateway) in front of the script's nginx backend,
loaded by hsp-bench. Asserts that the harness works, not any figure: the summary table exists,
every proxy has a row with numbers for h1 and h2 and for the open-loop latency run, and every load
got only 200s and no errors (a proxy that did not serve fails the test).

Needs $HSP_GATEWAY and $HSP_BENCH (ctest sets both) and Debian's nginx, haproxy, caddy and h2o
(`HSP_WITH_TESTS=1 scripts/install-deps.sh`). Everything runs on 127.0.0.1 with ports the
kernel picks; the script stops all it started on exit or SIGTERM."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "bench", "peers.sh")
PROXIES = ["nginx", "haproxy", "caddy", "h2o", "hsp-gateway"]
NUM = re.compile(r"^[+-]?\d+(\.\d+)?$")

_script = None


def _on_term(signum, frame):
    # ctest's timeout: let the script's trap stop its servers before we go.
    if _script is not None and _script.poll() is None:
        _script.send_signal(signal.SIGTERM)
        try:
            _script.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)


def table_rows(text, header_start):
    """The cells of the markdown table whose header row starts with header_start."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


class PeersSmokeTest(unittest.TestCase):
    def test_quick_run_all_proxies(self):
        global _script
        for var in ("HSP_GATEWAY", "HSP_BENCH"):
            self.assertTrue(os.access(os.environ.get(var, ""), os.X_OK),
                            "set %s to the built binary (ctest does)" % var)
        out = tempfile.mkdtemp(prefix="peers-smoke.")
        env = dict(os.environ, QUICK="1", OUT=out, PROXIES=" ".join(PROXIES))
        t0 = time.monotonic()
        _script = subprocess.Popen(["bash", SCRIPT], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            stdout, _ = _script.communicate(timeout=170)
        except subprocess.TimeoutExpired:
            _script.send_signal(signal.SIGTERM)
            stdout, _ = _script.communicate(timeout=30)
            self.fail("peers.sh QUICK=1 did not finish in 170 s:\n" + stdout[-3000:])
        print("peers.sh QUICK=1: %.0f s, exit %d, output in %s" % (
            time.monotonic() - t0, _script.returncode, out), flush=True)
        print(stdout[-6000:], flush=True)
        self.assertEqual(_script.returncode, 0, stdout[-3000:])

        # Every load served: only 200s, no errors, some requests. No proxy failed to start.
        recs = [json.loads(line) for line in open(os.path.join(out, "results.jsonl"))
                if line.strip()]
        measured = set()
        for r in recs:
            where = "%s %s" % (r["who"], r["proto"])
            if "na" in r:
                self.assertEqual(r["proto"], "h3", "%s: %s" % (where, r["na"]))
                continue
            bench = r.get("bench") or {}
            self.assertIsNotNone(bench.get("rps"), "%s: no hsp-bench report: %s" % (
                where, r.get("stderr")))
            status = {str(k): v for k, v in (bench.get("status") or {}).items()}
            self.assertGreater(status.get("200", 0), 0, "%s: no 200s: %s" % (where, bench))
            self.assertEqual(set(status), {"200"}, "%s: statuses %s" % (where, status))
            self.assertEqual(sum((bench.get("errors") or {}).values()), 0,
                             "%s: errors %s" % (where, bench.get("errors")))
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

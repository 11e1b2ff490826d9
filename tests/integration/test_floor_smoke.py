"""Smoke test of bench/floor.sh, the kernel-floor measurement under issue 5's h1 CPU target: one
QUICK=1 run (1 s loads) of nginx, hsp-floor-forwarder and hsp-gateway in front of the script's
nginx backend, loaded by hsp-bench. Asserts that the measurement works, not any figure: the table
has the three rows with numbers, the "room left" line is printed, and every load got only 200s
and no errors (a proxy that did not serve fails the test).

Needs $HSP_GATEWAY, $HSP_BENCH and $HSP_FLOOR_FORWARDER (ctest sets them) and Debian's nginx.
Everything runs on 127.0.0.1 with ports the kernel picks; the script stops all it started on exit
or SIGTERM."""

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
SCRIPT = os.path.join(HERE, "..", "..", "bench", "floor.sh")
ROWS = {"nginx": "nginx", "floor": "floor (hsp-floor-forwarder)", "hsp-gateway": "hsp-gateway"}
NUM = re.compile(r"^[+-]?\d+(\.\d+)?$")
ROOM = re.compile(r"^0\.8x nginx = [\d.]+ µs; floor = [\d.]+ µs \([\d.]+ x nginx\): "
                  r"room left for HTTP work = -?[\d.]+ µs$", re.M)

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


class FloorSmokeTest(unittest.TestCase):
    def test_quick_run(self):
        global _script
        for var in ("HSP_GATEWAY", "HSP_BENCH", "HSP_FLOOR_FORWARDER"):
            self.assertTrue(os.access(os.environ.get(var, ""), os.X_OK),
                            "set %s to the built binary (ctest does)" % var)
        out = tempfile.mkdtemp(prefix="floor-smoke.")
        env = dict(os.environ, QUICK="1", OUT=out)
        env.pop("PROXIES", None)  # the default set: nginx, floor, hsp-gateway
        t0 = time.monotonic()
        _script = subprocess.Popen(["bash", SCRIPT], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            stdout, _ = _script.communicate(timeout=100)
        except subprocess.TimeoutExpired:
            _script.send_signal(signal.SIGTERM)
            stdout, _ = _script.communicate(timeout=30)
            self.fail("floor.sh QUICK=1 did not finish in 100 s:\n" + stdout[-3000:])
        print("floor.sh QUICK=1: %.0f s, exit %d, output in %s" % (
            time.monotonic() - t0, _script.returncode, out), flush=True)
        print(stdout[-4000:], flush=True)
        self.assertEqual(_script.returncode, 0, stdout[-3000:])

        # Every load served: only 200s, no errors, requests counted at the backend.
        with open(os.path.join(out, "results.jsonl")) as f:
            recs = [json.loads(line) for line in f if line.strip()]
        self.assertEqual(sorted(r["who"] for r in recs), sorted(ROWS))
        for r in recs:
            self.assertNotIn("na", r, "%s: %s" % (r["who"], r.get("na")))
            bench = r.get("bench") or {}
            self.assertIsNotNone(bench.get("rps"), "%s: no hsp-bench report: %s" % (
                r["who"], r.get("stderr")))
            status = {str(k): v for k, v in (bench.get("status") or {}).items()}
            self.assertGreater(status.get("200", 0), 0, "%s: no 200s: %s" % (r["who"], bench))
            self.assertEqual(set(status), {"200"}, "%s: statuses %s" % (r["who"], status))
            self.assertEqual(sum((bench.get("errors") or {}).values()), 0,
                             "%s: errors %s" % (r["who"], bench.get("errors")))
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

"""What the bench smoke tests (test_peers_smoke.py, test_floor_smoke.py) share: running one of
bench/*.sh in QUICK mode as a child that a ctest timeout (SIGTERM) stops cleanly, the checks that
every load of its results.jsonl was served, and reading its markdown tables. Nothing runs on
import."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.join(HERE, "..", "..", "bench")
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


def require_binaries(test, *env_vars):
    for var in env_vars:
        test.assertTrue(os.access(os.environ.get(var, ""), os.X_OK),
                        "set %s to the built binary (ctest does)" % var)


def run_quick(test, script, timeout, env, tail=6000):
    """Runs bench/<script> with QUICK=1 and OUT set; fails the test if it does not finish in
    timeout seconds or exits non-zero. Returns (stdout, out directory)."""
    global _script
    signal.signal(signal.SIGTERM, _on_term)
    name = os.path.splitext(script)[0]
    out = tempfile.mkdtemp(prefix="%s-smoke." % name)
    env = dict(env, QUICK="1", OUT=out)
    t0 = time.monotonic()
    _script = subprocess.Popen(["bash", os.path.join(BENCH_DIR, script)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stdout, _ = _script.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _script.send_signal(signal.SIGTERM)
        stdout, _ = _script.communicate(timeout=30)
        test.fail("%s QUICK=1 did not finish in %d s:\n%s" % (script, timeout, stdout[-3000:]))
    print("%s QUICK=1: %.0f s, exit %d, output in %s" % (
        script, time.monotonic() - t0, _script.returncode, out), flush=True)
    print(stdout[-tail:], flush=True)
    test.assertEqual(_script.returncode, 0, stdout[-3000:])
    return stdout, out


def results(out):
    """The records of <out>/results.jsonl, one per load or per proxy that did not start."""
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def assert_served(test, rec, where):
    """The load of rec got an hsp-bench report with only 200s and no errors."""
    bench = rec.get("bench") or {}
    test.assertIsNotNone(bench.get("rps"), "%s: no hsp-bench report: %s" % (
        where, rec.get("stderr")))
    status = {str(k): v for k, v in (bench.get("status") or {}).items()}
    test.assertGreater(status.get("200", 0), 0, "%s: no 200s: %s" % (where, bench))
    test.assertEqual(set(status), {"200"}, "%s: statuses %s" % (where, status))
    test.assertEqual(sum((bench.get("errors") or {}).values()), 0,
                     "%s: errors %s" % (where, bench.get("errors")))


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

#!/usr/bin/env python3
"""Label change -> route live, end to end, on a real dockerd in Swarm mode. Prints figures; it
is a benchmark, not a test (nothing is asserted about speed).

A private dockerd (tests/integration/dockerd.py: loopback only, its own data root) runs one
replicas-0 service labelled `caddy: http://app.localhost:<port>`, `caddy.bind: 127.0.0.1`,
`caddy.reverse_proxy: 127.0.0.1:<backend>`. hsp-gateway runs with `run --docker` (default
100 ms event throttle). Each round flips the label between two backends on 127.0.0.1 with
`docker service update --detach --label-add` and measures from the moment the update command
returns (the Swarm has accepted the change; without --detach the CLI waits ~5 s for convergence)
until the first request through the gateway answers from the new backend, polling every 2 ms.
Also printed: the same including the update command's own duration (CLI start-up included).

    HSP_GATEWAY=build/gateway/hsp-gateway python3 bench/label_latency.py [ROUNDS]

Needs root and Debian's docker.io, like the docker tests; runs in about a minute for 50 rounds.
Target (issue 3): < 1 s end to end with the default throttle.
"""

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
IT = os.path.join(HERE, "..", "tests", "integration")
sys.path.insert(0, IT)
sys.path.insert(0, os.path.join(IT, "docker"))

import dockerd  # noqa: E402
import harness  # noqa: E402
from dockertest import ask  # noqa: E402


def percentile(values, p):
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    gateway = os.path.abspath(os.environ.get("HSP_GATEWAY", os.path.join(
        HERE, "..", "build", "gateway", "hsp-gateway")))
    d = dockerd.attach()
    backends = [harness.UpstreamServer(harness.echo_handler(), name="b%d" % i) for i in (0, 1)]
    port = harness.free_port()
    service = "hsp_bench_latency"
    d.docker("service", "create", "--name", service, "--replicas", "0",
             "--label", "caddy=http://app.localhost:%d" % port,
             "--label", "caddy.bind=127.0.0.1",
             "--label", "caddy.reverse_proxy=%s" % backends[0].addr, dockerd.NO_IMAGE)
    env = d.env()
    env.pop("CADDY_INGRESS_NETWORKS", None)
    proc = harness.Proc([gateway, "run", "--docker", "--threads", "2"], env=env)
    try:
        harness.wait_port(port, timeout=30, proc=proc)
        deadline = time.monotonic() + 30
        while ask(port, "app.localhost")[1] != backends[0].name:
            if time.monotonic() > deadline:
                raise RuntimeError("the first route never came up")
            time.sleep(0.05)
        live, update = [], []
        for r in range(rounds):
            target = backends[(r + 1) % 2]
            t0 = time.monotonic()
            d.docker("service", "update", "--detach", "--label-add",
                     "caddy.reverse_proxy=%s" % target.addr, service)
            t1 = time.monotonic()
            while ask(port, "app.localhost", timeout=2)[1] != target.name:
                if time.monotonic() - t1 > 10:
                    raise RuntimeError("round %d: the route did not move within 10 s" % r)
                time.sleep(0.002)
            t2 = time.monotonic()
            update.append(t1 - t0)
            live.append(t2 - t1)
        ms = lambda v: "%.0f ms" % (v * 1000)  # noqa: E731
        print("label change -> route live, %d updates (dockerd %s, throttle 100 ms)"
              % (rounds, d.docker("version", "--format", "{{.Server.Version}}").strip()))
        print("  after `docker service update` returned: median %s, p99 %s, max %s"
              % (ms(statistics.median(live)), ms(percentile(live, 99)), ms(max(live))))
        total = [a + b for a, b in zip(update, live)]
        print("  including the update command itself:   median %s, p99 %s, max %s"
              % (ms(statistics.median(total)), ms(percentile(total, 99)), ms(max(total))))
    finally:
        proc.stop()
        d.docker("service", "rm", service, check=False)
        for b in backends:
            b.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

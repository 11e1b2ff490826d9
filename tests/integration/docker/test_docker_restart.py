"""Docker goes away under `hsp-gateway run --docker`: the private dockerd is stopped (SIGTERM,
waited for) -> the gateway keeps serving the last routes and logs docker_unreachable once; the
same dockerd is started again on the same data root (swarm state and services kept) -> the
gateway logs docker_connected and label updates apply again.

Run by hand: HSP_GATEWAY=.../hsp-gateway python3 test_docker_restart.py
"""

import time

from dockertest import DockerTest, ask, log, log_events, wait_for
import harness

DEADLINE = 10.0
# After a restart the gateway reconnects with backoff; CDP itself waits 30 s between event
# stream reconnects, and a full resync comes at the latest after the polling interval, which
# the test sets to 5 s. The bound is generous; the figure is printed.
RECONNECT_DEADLINE = 45.0


class DockerRestart(DockerTest):

    def served_by(self, port, backend):
        status, upstream, _ = ask(port, "app.localhost")
        return status == 200 and upstream == backend.name

    def test_keeps_serving_and_resumes(self):
        b1 = self.upstream(harness.echo_handler(), "backend1")
        b2 = self.upstream(harness.echo_handler(), "backend2")
        b3 = self.upstream(harness.echo_handler(), "backend3")
        port = harness.free_port()
        self.service("hsp_rs_app", {"caddy": "http://app.localhost:%d" % port,
                                    "caddy.bind": "127.0.0.1",
                                    "caddy.reverse_proxy": b1.addr})
        # Default polling (30 s): recovery must come from the events stream reconnecting.
        gw = self.run_gateway(wait_ports=[port])
        ok, _ = wait_for(lambda: self.served_by(port, b1), DEADLINE)
        self.assertTrue(ok, "not served by backend1:\n" + gw.output_tail())
        self.assertEqual(log_events(gw, "docker_unreachable"), [])

        t0 = time.monotonic()
        self.d.stop_daemon()
        log("dockerd stopped in %.1f s" % (time.monotonic() - t0))
        line = gw.wait_line(lambda l: "docker_unreachable" in l, timeout=RECONNECT_DEADLINE)
        self.assertTrue(line, "no docker_unreachable log line:\n" + gw.output_tail())
        # Keeps serving the last routes through several reconnect attempts (> one polling
        # interval), and says so once.
        end = time.monotonic() + 7.0
        n = 0
        while time.monotonic() < end:
            self.assertTrue(self.served_by(port, b1), "route lost while Docker is down: %r\n%s"
                            % (ask(port, "app.localhost"), gw.output_tail()))
            n += 1
            time.sleep(0.2)
        log("%d requests served while dockerd was down" % n)
        self.assertEqual(len(log_events(gw, "docker_unreachable")), 1, gw.output_tail())
        self.assertIsNone(gw.poll(), "gateway exited:\n" + gw.output_tail())

        t0 = time.monotonic()
        self.d.start_daemon()
        self.d.wait_swarm_active()
        log("dockerd back in %.1f s" % (time.monotonic() - t0))
        self.assertEqual(self.d.docker("service", "ls", "--format", "{{.Name}}").split(),
                         ["hsp_rs_app"], "swarm state not kept across the restart")
        down_ts = log_events(gw, "docker_unreachable")[0].get("ts", 0)

        def reconnected():
            return [j for j in log_events(gw, "docker_connected") if j.get("ts", 0) > down_ts]
        ok, _ = wait_for(reconnected, RECONNECT_DEADLINE, interval=0.1)
        log("gateway reconnected %.1f s after dockerd came back" % (time.monotonic() - t0))
        self.assertTrue(ok, "no docker_connected after the restart:\n" + gw.output_tail())
        self.assertTrue(self.served_by(port, b1))

        # Updates resume.
        self.label_add("hsp_rs_app", "caddy.reverse_proxy", b2.addr)
        ok, took = wait_for(lambda: self.served_by(port, b2), DEADLINE)
        log("label update after the restart -> route live: %.3f s" % took)
        self.assertTrue(ok, "label update after the restart not applied:\n" + gw.output_tail())
        self.label_add("hsp_rs_app", "caddy.reverse_proxy", b3.addr)
        ok, took = wait_for(lambda: self.served_by(port, b3), DEADLINE)
        self.assertTrue(ok, "second label update not applied:\n" + gw.output_tail())
        self.assertEqual(len(log_events(gw, "docker_unreachable")), 1, gw.output_tail())
        self.assertIsNone(gw.poll(), "gateway exited:\n" + gw.output_tail())


if __name__ == "__main__":
    harness.main()

"""`hsp-gateway run --docker`: live routes from service labels. Backends are harness
UpstreamServers on 127.0.0.1, named literally in the labels; the gateway listens on 127.0.0.1
(`caddy.bind`). A label update moves the route (delay printed, only a generous deadline
asserted), a removed service removes its route, a new service adds one, and a service with a
template error leaves every other route alone.

Run by hand: HSP_GATEWAY=.../hsp-gateway python3 test_docker_live.py
"""

import json
import time

from dockertest import DockerTest, ask, log, log_events, wait_for
import harness

DEADLINE = 10.0  # seconds; the target is < 1 s, printed, not asserted


class LiveRoutes(DockerTest):

    def app_labels(self, host, port, backend, **extra):
        labels = {"caddy": "http://%s:%d" % (host, port), "caddy.bind": "127.0.0.1",
                  "caddy.reverse_proxy": backend.addr}
        labels.update(extra)
        return labels

    def served_by(self, port, host, backend):
        status, upstream, _ = ask(port, host)
        return status == 200 and upstream == backend.name

    def test_update_remove_add(self):
        b1 = self.upstream(harness.echo_handler(), "backend1")
        b2 = self.upstream(harness.echo_handler(), "backend2")
        port = harness.free_port()
        # A base Caddyfile site keeps the listener up when the app's service goes away, so
        # "route gone" is observable as an answer that no longer comes from the backend.
        base = "http://base.localhost:%d {\n\tbind 127.0.0.1\n\trespond base-ok 200\n}\n" % port
        self.service("hsp_live_app", self.app_labels("app.localhost", port, b1))
        gw = self.run_gateway(base_config=base, wait_ports=[port])

        ok, _ = wait_for(lambda: self.served_by(port, "app.localhost", b1), DEADLINE)
        self.assertTrue(ok, "app.localhost not served by backend1: %r\n%s"
                        % (ask(port, "app.localhost"), gw.output_tail()))
        status, _, body = ask(port, "base.localhost")
        self.assertEqual((status, body), (200, b"base-ok"))

        # Label update -> backend2.
        self.label_add("hsp_live_app", "caddy.reverse_proxy", b2.addr)
        ok, took = wait_for(lambda: self.served_by(port, "app.localhost", b2), DEADLINE)
        log("label update -> route live: %.3f s" % took)
        self.assertTrue(ok, "label update not applied within %.0f s: %r\n%s"
                        % (DEADLINE, ask(port, "app.localhost"), gw.output_tail()))
        changed = [j for j in log_events(gw, "sites_changed")
                   if "app.localhost" in json.dumps(j.get("changed"))]
        self.assertTrue(changed, "no sites_changed line with app.localhost in `changed`:\n"
                        + gw.output_tail())

        # Service removed -> the route is gone; the base site still answers.
        self.d.docker("service", "rm", "hsp_live_app")

        def gone():
            status, upstream, _ = ask(port, "app.localhost")
            return status is not None and upstream is None
        ok, took = wait_for(gone, DEADLINE)
        log("service rm -> route gone: %.3f s" % took)
        self.assertTrue(ok, "route still there after service rm: %r\n%s"
                        % (ask(port, "app.localhost"), gw.output_tail()))
        # Answered like a host that was never configured (Caddy: an empty 200 when nothing
        # matches).
        self.assertEqual(ask(port, "app.localhost"), ask(port, "never.localhost"))
        hits = len(b2.requests)
        for _ in range(5):
            ask(port, "app.localhost")
        self.assertEqual(len(b2.requests), hits, "backend2 still reached after the rm")
        removed = [j for j in log_events(gw, "sites_changed")
                   if "app.localhost" in json.dumps(j.get("removed"))]
        self.assertTrue(removed, "no sites_changed line with app.localhost in `removed`:\n"
                        + gw.output_tail())
        self.assertEqual(ask(port, "base.localhost")[0], 200)

        # A new service -> its route appears.
        self.service("hsp_live_two", self.app_labels("two.localhost", port, b1))
        ok, took = wait_for(lambda: self.served_by(port, "two.localhost", b1), DEADLINE)
        log("service create -> route live: %.3f s" % took)
        self.assertTrue(ok, "new service's route not served: %r\n%s"
                        % (ask(port, "two.localhost"), gw.output_tail()))
        added = [j for j in log_events(gw, "sites_changed")
                 if "two.localhost" in json.dumps(j.get("added"))]
        self.assertTrue(added, "no sites_changed line with two.localhost in `added`:\n"
                        + gw.output_tail())
        loaded = [j for j in log_events(gw, "config_loaded") if j.get("source") == "docker"]
        self.assertTrue(loaded, "no config_loaded with source docker:\n" + gw.output_tail())
        self.assertIn("generation", loaded[-1])
        self.assertIsNone(gw.poll(), "gateway exited:\n" + gw.output_tail())

    def test_unrelated_change_no_reload(self):
        # Identical generated text -> no reload: a service without caddy labels changes nothing.
        b1 = self.upstream(harness.echo_handler(), "backend1")
        b2 = self.upstream(harness.echo_handler(), "backend2")
        port = harness.free_port()
        self.service("hsp_live_app", self.app_labels("app.localhost", port, b1))
        gw = self.run_gateway(wait_ports=[port])
        ok, _ = wait_for(lambda: self.served_by(port, "app.localhost", b1), DEADLINE)
        self.assertTrue(ok, "app.localhost not served:\n" + gw.output_tail())
        before = log_events(gw, "config_loaded")
        self.service("hsp_live_plain", {"other.label": "1"})
        # Settling time only (10x the event throttle), so that the unrelated event is handled
        # on its own rather than merged with the next one; nothing is asserted about it.
        time.sleep(1.0)
        self.label_add("hsp_live_app", "caddy.reverse_proxy", b2.addr)
        ok, _ = wait_for(lambda: self.served_by(port, "app.localhost", b2), DEADLINE)
        self.assertTrue(ok, "label update not applied:\n" + gw.output_tail())
        after = log_events(gw, "config_loaded")
        self.assertEqual(len(after), len(before) + 1,
                         "expected exactly one reload (the label update):\n" + gw.output_tail())
        self.assertEqual(after[-1].get("generation"), before[-1].get("generation") + 1)

    def test_template_error_isolated(self):
        b1 = self.upstream(harness.echo_handler(), "backend1")
        b2 = self.upstream(harness.echo_handler(), "backend2")
        port = harness.free_port()
        self.service("hsp_live_good", self.app_labels("good.localhost", port, b1))
        self.service("hsp_live_bad", self.app_labels("bad.localhost", port, b2,
                                                     **{"caddy.header": "X-A {{ nosuch }}"}))
        gw = self.run_gateway(wait_ports=[port])
        ok, _ = wait_for(lambda: self.served_by(port, "good.localhost", b1), DEADLINE)
        self.assertTrue(ok, "good.localhost not served: %r\n%s"
                        % (ask(port, "good.localhost"), gw.output_tail()))
        self.assertFalse(self.served_by(port, "bad.localhost", b2))
        self.assertEqual(len(b2.requests), 0)
        line = gw.wait_line(lambda l: "hsp_live_bad" in l and "nosuch" in l, timeout=5)
        self.assertTrue(line, "no log line names the bad service and the function:\n"
                        + gw.output_tail())

        # Breaking a serving service later: only its route goes; the good one stays.
        self.service("hsp_live_ok2", self.app_labels("ok2.localhost", port, b2))
        ok, _ = wait_for(lambda: self.served_by(port, "ok2.localhost", b2), DEADLINE)
        self.assertTrue(ok, "ok2.localhost not served:\n" + gw.output_tail())
        self.label_add("hsp_live_ok2", "caddy.respond", "{{ nosuch2 }}")
        ok, _ = wait_for(lambda: gw.wait_line(lambda l: "hsp_live_ok2" in l and "nosuch2" in l,
                                              timeout=0), DEADLINE)
        self.assertTrue(ok, "no log line names hsp_live_ok2:\n" + gw.output_tail())
        ok, _ = wait_for(lambda: not self.served_by(port, "ok2.localhost", b2), DEADLINE)
        self.assertTrue(ok, "ok2.localhost still served after its template error")
        self.assertTrue(self.served_by(port, "good.localhost", b1))
        # The fix of the bad service brings its route.
        self.label_add("hsp_live_bad", "caddy.header", "X-A fixed")
        ok, took = wait_for(lambda: self.served_by(port, "bad.localhost", b2), DEADLINE)
        self.assertTrue(ok, "bad.localhost not served after the fix:\n" + gw.output_tail())
        self.assertTrue(self.served_by(port, "good.localhost", b1))
        self.assertIsNone(gw.poll(), "gateway exited:\n" + gw.output_tail())

    def test_new_broken_service_is_reported_at_once(self):
        # A new service whose only block fails validation leaves the served Caddyfile as it
        # was (no reload), but the drop must be logged when it happens, naming the service.
        b1 = self.upstream(harness.echo_handler(), "backend1")
        port = harness.free_port()
        self.service("hsp_live_app", self.app_labels("app.localhost", port, b1))
        gw = self.run_gateway(wait_ports=[port])
        ok, _ = wait_for(lambda: self.served_by(port, "app.localhost", b1), DEADLINE)
        self.assertTrue(ok, "app.localhost not served:\n" + gw.output_tail())
        self.service("hsp_live_typo", self.app_labels("typo.localhost", port, b1,
                                                      **{"caddy.reverse_proxy.lb_polcy": "first"}))
        ok, took = wait_for(lambda: [j for j in log_events(gw, "block_dropped")
                                     if "service hsp_live_typo" in j.get("sources", [])],
                            DEADLINE)
        self.assertTrue(ok, "no block_dropped line names the service:\n" + gw.output_tail())
        log("block_dropped logged %.2f s after the service was created" % took)
        line = ok[0]
        self.assertEqual(line.get("block"), "http://typo.localhost:%d" % port)
        self.assertIn("Caddy 2.6 has no such subdirective", line.get("reason", ""))
        self.assertNotIn("<docker>:", line.get("reason", ""))
        self.assertTrue(self.served_by(port, "app.localhost", b1))


if __name__ == "__main__":
    harness.main()

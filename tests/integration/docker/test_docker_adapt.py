"""`hsp-gateway adapt --docker` against a real dockerd in Swarm mode: services and containers with
labels -> the Caddyfile that would be served (exact text, expected files next to this script);
dropped blocks and label problems on stderr; CDP's options and their errors.

Run by hand: HSP_GATEWAY=.../hsp-gateway python3 test_docker_adapt.py (starts a private dockerd).
"""

import os
import tempfile

from dockertest import NET_A, SUBNET_A, DockerTest, log, read_expected
import harness


class AdaptDocker(DockerTest):

    def make_basic_set(self):
        self.network(NET_A, SUBNET_A)
        # Global options from a keyless root: any source may carry them.
        self.service("hsp_t1_glob", {"caddy.admin": "off", "caddy.skip_install_trust": ""})
        # caddy_N isolation: one service, a snippet and two sites; `_N` directive suffixes keep
        # two `header` lines apart.
        self.service("hsp_t1_snip", {
            "caddy_0": "(common)", "caddy_0.header": "X-Hsp snippet",
            "caddy_1": "http://b.localhost", "caddy_1.import": "common",
            "caddy_1.header_0": "X-A 1", "caddy_1.header_1": "X-B 2",
            "caddy_1.respond": "b-here 200",
            "caddy_2": "http://b2.localhost", "caddy_2.respond": "b2-here 200"})
        # Two services on one site: their reverse_proxy upstream lists are concatenated, after
        # the container's (containers merge before services).
        self.service("hsp_t1_a", {"caddy": "http://a.localhost",
                                  "caddy.reverse_proxy": "127.0.0.1:9001"})
        self.service("hsp_t1_b", {"caddy": "http://a.localhost",
                                  "caddy.reverse_proxy": "127.0.0.1:9002"})
        # A template error drops this service's labels only, with a message naming it.
        self.service("hsp_t1_bad", {"caddy": "http://bad.localhost",
                                    "caddy.respond": "{{ nosuch }}"})
        # A malformed key is an error for that label only (CDP would crash).
        self.service("hsp_t1_malformed", {"caddy": "http://m.localhost", "caddy..x": "y",
                                          "caddy.respond": "m-ok 200"})
        # Containers with fixed addresses on the ingress network: {{upstreams}} as text.
        self.container("hsp_t1_c", {"caddy": "http://c.localhost",
                                    "caddy.reverse_proxy": "{{upstreams 8080}}",
                                    "caddy.header": "X-Container c"},
                       network=NET_A, ip="10.231.1.50")
        self.container("hsp_t1_c2", {"caddy": "http://a.localhost",
                                     "caddy.reverse_proxy": "{{upstreams 8081}}"},
                       network=NET_A, ip="10.231.1.51")
        # Which service's upstream comes first: CDP merges in Docker's list order, which for
        # services is by ID (random, so its merged lists reorder between daemons);
        # hsp-gateway merges services by name (README), and containers before services.
        return read_expected("adapt_basic.caddyfile", {"FIRST": "127.0.0.1:9001",
                                                        "SECOND": "127.0.0.1:9002"})

    def test_services_and_containers(self):
        expected = self.make_basic_set()
        rc, out, err = self.adapt(env={"CADDY_INGRESS_NETWORKS": NET_A})
        # The set has a service with a template error and a malformed label: the Caddyfile
        # without them is printed, and the exit status says something was skipped.
        self.assertEqual(rc, 1, err)
        if out != expected:
            log("--- expected ---\n%s--- got ---\n%s----------------" % (expected, out))
        self.assertEqual(out, expected)
        # The dropped service and the bad label are reported, by name.
        bad = [line for line in err.splitlines() if "hsp_t1_bad" in line]
        self.assertTrue(bad, "no stderr line names the service with the template error:\n"
                        + err)
        self.assertTrue(any("nosuch" in line for line in bad),
                        "the template error message does not name the function:\n" + err)
        malformed = [line for line in err.splitlines() if "caddy..x" in line]
        self.assertTrue(malformed, "no stderr line names the malformed label:\n" + err)
        self.assertTrue(any("hsp_t1_malformed" in line for line in malformed),
                        "the malformed-label message does not name the service:\n" + err)
        # The same through the flag and through --docker-sockets instead of DOCKER_HOST.
        env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
        self.assert_adapt(expected, args=["--ingress-networks", NET_A, "--docker-sockets",
                                          self.d.host], env=env, rc=1)

    def test_removed_service_disappears(self):
        self.service("hsp_t1_one", {"caddy": "http://one.localhost",
                                    "caddy.respond": "one 200"})
        self.service("hsp_t1_two", {"caddy": "http://two.localhost",
                                    "caddy.respond": "two 200"})
        self.assert_adapt("http://one.localhost {\n\trespond one 200\n}\n"
                          "http://two.localhost {\n\trespond two 200\n}\n")
        self.d.docker("service", "rm", "hsp_t1_one")
        self.label_add("hsp_t1_two", "caddy.respond", "two-b 201")
        self.assert_adapt("http://two.localhost {\n\trespond two-b 201\n}\n")

    def test_label_prefix_env_wins(self):
        self.service("hsp_t1_prefixed", {"hsp": "http://p.localhost", "hsp.respond": "p-ok 200",
                                         "caddy": "http://not-me.localhost",
                                         "caddy.respond": "no 200"})
        expected = read_expected("adapt_prefix.caddyfile")
        self.assert_adapt(expected, args=["--label-prefix", "hsp"])
        self.assert_adapt(expected, args=["--label-prefix", "caddy"],
                          env={"CADDY_DOCKER_LABEL_PREFIX": "hsp"})

    def test_base_caddyfile_merged(self):
        self.service("hsp_t1_site", {"caddy": "http://base.localhost",
                                     "caddy.respond": "from-label 200"})
        with tempfile.TemporaryDirectory() as tmp:
            base = os.path.join(tmp, "Caddyfile")
            with open(base, "w") as f:
                f.write("{\n\tadmin off\n}\n# a comment\nhttp://file.localhost {\n"
                        "\trespond from-file 200\n}\n")
            # File blocks keep their position as order, so they sort before label blocks.
            expected = ("{\n\tadmin off\n}\nhttp://file.localhost {\n\trespond from-file 200\n"
                        "}\nhttp://base.localhost {\n\trespond from-label 200\n}\n")
            self.assert_adapt(expected, args=["--config", base])
            self.assert_adapt(expected, env={"CADDY_DOCKER_CADDYFILE_PATH": base})

    def test_docker_unreachable_exit_1(self):
        with tempfile.TemporaryDirectory() as tmp:
            sock = "unix://%s/nothing.sock" % tmp
            rc, out, err = self.adapt(env={"DOCKER_HOST": sock})
            self.assertEqual(rc, 1, "stdout:\n%s\nstderr:\n%s" % (out, err))
            self.assertEqual(out, "")
            self.assertTrue(err.strip(), "no message on stderr")

    def test_invalid_options_exit_2(self):
        cases = [
            (["--polling-interval", "soon"], {}, "polling-interval"),
            (["--event-throttle-interval", "-"], {}, "event-throttle-interval"),
            ([], {"CADDY_DOCKER_POLLING_INTERVAL": "x1"}, "POLLING_INTERVAL"),
            (["--controller-network", "not-a-cidr"], {}, "controller-network"),
        ]
        for args, env, name in cases:
            with self.subTest(args=args, env=env):
                rc, out, err = self.adapt(args, env)
                self.assertEqual(rc, 2, "%s %s: rc %d\n%s" % (args, env, rc, err))
                self.assertIn(name.lower().replace("_", "-").replace("caddy-docker-", ""),
                              err.lower().replace("_", "-"))
        # Controller mode without its secret and servers: a start error naming what to set.
        rc, out, err = self.adapt(["--mode", "controller"])
        self.assertEqual(rc, 2, err)
        self.assertIn("needs HSP_PUSH_SECRET_FILE", err)


if __name__ == "__main__":
    harness.main()

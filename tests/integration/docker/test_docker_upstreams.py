"""`{{upstreams}}` from running swarm tasks and containers on overlay networks, checked as TEXT in
`hsp-gateway adapt --docker --process-caddyfile=false` output (the generated Caddyfile before
per-block validation, so that blocks the gateway cannot serve yet, e.g. HTTPS upstreams, still
show their upstream text): ingress selection by CADDY_INGRESS_NETWORKS (and the flag),
the `caddy_ingress_network` label, two networks, `{{upstreams https 8080}}`, and
proxy-service-tasks=false (service name). Nothing ever connects to these addresses.

Run by hand: HSP_GATEWAY=.../hsp-gateway python3 test_docker_upstreams.py
"""

from dockertest import NET_A, NET_B, SUBNET_A, SUBNET_B, DockerTest
import harness


def site(address, directive):
    return "%s {\n\t%s\n}\n" % (address, directive.rstrip())


class Upstreams(DockerTest):

    def assert_generated(self, expected, args=(), env=None):
        """The generated text, exact; then the served text (processing on): each block kept
        verbatim, or, only where hsp-gateway has a documented gap (HTTPS or h2c upstreams, until
        the TLS/HTTP/2 issue), dropped with a stderr line naming it. A `reverse_proxy` with no
        upstream is kept: it answers 503, as in Caddy."""
        self.assert_adapt(expected, ["--process-caddyfile=false"] + list(args), env)
        rc, out, err = self.adapt(args, env)
        self.assertEqual(rc, 0, err)
        kept = []
        for block in expected.split("\n}\n"):
            if not block:
                continue
            block += "\n}\n"
            address = block.split(" {", 1)[0]
            gap = any(g in block for g in ("https://", "h2c://"))
            if block in out or not gap:
                kept.append(block)
            else:
                self.assertTrue([l for l in err.splitlines() if address in l and "not supported"
                                 in l], "%s neither served nor dropped as not supported:\n%s"
                                % (address, err))
        self.assertEqual(out, "".join(kept) or "# Empty caddyfile\n")

    def setUp(self):
        super().setUp()
        self.network(NET_A, SUBNET_A)
        self.network(NET_B, SUBNET_B)
        # Two replicas on both networks; upstreams resolved through the ingress set.
        self.service("hsp_up_s1", {"caddy": "http://u1.localhost",
                                   "caddy.reverse_proxy": "{{upstreams}}"},
                     replicas=2, networks=[NET_A, NET_B])
        # One replica on both networks, but the label pins net_b; scheme and port applied.
        self.service("hsp_up_s2", {"caddy": "http://u2.localhost",
                                   "caddy.reverse_proxy": "{{upstreams https 8080}}",
                                   "caddy_ingress_network": NET_B},
                     replicas=1, networks=[NET_A, NET_B])
        # Containers with fixed addresses: one per network.
        self.container("hsp_up_c1", {"caddy": "http://c1.localhost",
                                     "caddy.reverse_proxy": "{{upstreams 81}}"},
                       network=NET_A, ip="10.231.1.200")
        self.container("hsp_up_c2", {"caddy": "http://c2.localhost",
                                     "caddy.reverse_proxy": "{{upstreams h2c 82}}"},
                       network=NET_B, ip="10.231.2.200")
        self.s1_a = self.d.task_addresses("hsp_up_s1", NET_A)
        self.s1_b = self.d.task_addresses("hsp_up_s1", NET_B)
        self.s2_b = self.d.task_addresses("hsp_up_s2", NET_B)
        self.assertEqual((len(self.s1_a), len(self.s1_b), len(self.s2_b)), (2, 2, 1))

    def expected(self, s1, c1, c2, s2):
        return (site("http://c1.localhost", "reverse_proxy " + c1)
                + site("http://c2.localhost", "reverse_proxy " + c2)
                + site("http://u1.localhost", "reverse_proxy " + s1)
                + site("http://u2.localhost", "reverse_proxy " + s2))

    def test_one_ingress_network(self):
        # Targets sorted as strings (CDP >= 2.11), joined by single spaces. c2 is not on the
        # ingress network: no upstream at all (CDP prints a bare `reverse_proxy`).
        s2 = "https://%s:8080" % self.s2_b[0]
        expected = self.expected(" ".join(sorted(self.s1_a)), "10.231.1.200:81", "", s2)
        self.assert_generated(expected, env={"CADDY_INGRESS_NETWORKS": NET_A})
        # The flag, and the environment variable winning over the flag.
        self.assert_generated(expected, args=["--ingress-networks", NET_A])
        self.assert_generated(expected, args=["--ingress-networks", NET_B],
                          env={"CADDY_INGRESS_NETWORKS": NET_A})

    def test_two_ingress_networks(self):
        s2 = "https://%s:8080" % self.s2_b[0]
        expected = self.expected(" ".join(sorted(self.s1_a + self.s1_b)), "10.231.1.200:81",
                                 "h2c://10.231.2.200:82", s2)
        self.assert_generated(expected, env={"CADDY_INGRESS_NETWORKS": "%s,%s" % (NET_A, NET_B)})

    def test_no_ingress_networks(self):
        # The gateway is not in a container here, so without a list nothing is an ingress
        # network: every {{upstreams}} is empty, except where caddy_ingress_network says.
        s2 = "https://%s:8080" % self.s2_b[0]
        self.assert_generated(self.expected("", "", "", s2))

    def test_proxy_service_tasks_false(self):
        expected = self.expected("hsp_up_s1", "10.231.1.200:81", "",
                                 "https://hsp_up_s2:8080")
        self.assert_generated(expected, args=["--proxy-service-tasks=false"],
                          env={"CADDY_INGRESS_NETWORKS": NET_A})
        self.assert_generated(expected, env={"CADDY_INGRESS_NETWORKS": NET_A,
                                         "CADDY_DOCKER_PROXY_SERVICE_TASKS": "false"})

    def test_scale_changes_upstreams(self):
        self.d.docker("service", "scale", "--detach", "hsp_up_s1=3")
        self.d.wait_tasks_running("hsp_up_s1", 3)
        s1 = self.d.task_addresses("hsp_up_s1", NET_A)
        self.assertEqual(len(s1), 3)
        s2 = "https://%s:8080" % self.s2_b[0]
        self.assert_generated(self.expected(" ".join(sorted(s1)), "10.231.1.200:81", "", s2),
                          env={"CADDY_INGRESS_NETWORKS": NET_A})


if __name__ == "__main__":
    harness.main()

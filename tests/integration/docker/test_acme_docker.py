"""ACME from Docker labels (issue 6): a Swarm service on the private dockerd (../dockerd.py) says
`caddy=a.test` with `caddy.tls.ca` / `caddy.tls.ca_root` naming a real Pebble (../pebble.py);
`hsp-gateway run --docker` with a base Caddyfile holding the global options (email, ports)
orders the certificate from that Pebble and serves the site with it.

Traffic stays on 127.0.0.1: the service has no replicas (nothing is scheduled, no image is
pulled; only its labels matter), the site binds 127.0.0.1 (`caddy.bind`), Pebble's VA resolves
`a.test` through pebble-challtestsrv to 127.0.0.1 and validates on the gateway's http_port,
and curl pins `a.test` to 127.0.0.1.

Run by hand: HSP_GATEWAY=.../hsp-gateway python3 test_acme_docker.py
"""

import os
import shutil
import stat
import tempfile

from dockertest import DockerTest, log, log_events
import harness
import pebble

OBTAIN_TIMEOUT = 60.0  # seconds; a bound against hangs (labels to route, then the order)

BASE = """{
	email admin@example.test
	http_port __HTTP__
	https_port __HTTPS__
	admin off
	skip_install_trust
}
"""


class AcmeFromLabels(DockerTest):

    def test_label_site_gets_certificate(self):
        http, https = harness.free_port(), harness.free_port()
        peb = pebble.Pebble(http, https)
        self.addCleanup(peb.close)
        peb.start()
        data = tempfile.mkdtemp(prefix="hsp-dt-acme-data-")
        self.addCleanup(shutil.rmtree, data, True)

        self.service("hsp_acme_app", {"caddy": "a.test", "caddy.bind": "127.0.0.1",
                                      "caddy.respond": "hello",
                                      "caddy.tls.ca": peb.directory_url,
                                      "caddy.tls.ca_root": peb.acme_ca_root})
        base = harness.render(BASE, {"HTTP": http, "HTTPS": https})
        gw = self.run_gateway(args=["--data-dir", data], base_config=base,
                              wait_ports=[http, https])

        ok, last = pebble.wait_https(https, "a.test", peb.issuing_root(), "hello",
                                     OBTAIN_TIMEOUT, gw)
        self.assertTrue(ok, "a.test not served with a Pebble certificate: curl -> %r\n"
                        "--- gateway ---\n%s\n--- pebble ---\n%s"
                        % (last, gw.output_tail(60), peb.log_tail()))
        started = [j for j in log_events(gw, "acme_obtain_started") if j.get("name") == "a.test"]
        self.assertEqual(len(started), 1, gw.output_tail(60))
        # The CA came from the site's label, not from a global option.
        self.assertEqual(started[0].get("ca"), peb.directory_url)
        obtained = [j for j in log_events(gw, "acme_certificate_obtained")
                    if j.get("name") == "a.test"]
        self.assertEqual(len(obtained), 1, gw.output_tail(60))

        peer, der = pebble.served_leaf(https, "a.test", peb.issuing_root())
        self.assertIn(("DNS", "a.test"), peer.get("subjectAltName", ()))
        self.assertTrue(pebble.rdn(peer["issuer"]).get("commonName", "")
                        .startswith("Pebble Intermediate CA"), peer["issuer"])
        folder = os.path.join(data, "certificates", peb.issuer_key, "a.test")
        with open(os.path.join(folder, "a.test.crt")) as f:
            self.assertEqual(pebble.pem_certs(f.read())[0], der)
        key = os.path.join(folder, "a.test.key")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        log("a.test obtained from labels: %s" % obtained[0])


if __name__ == "__main__":
    harness.main()

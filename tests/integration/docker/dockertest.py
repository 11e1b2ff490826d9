"""Shared pieces of the docker integration tests: the private dockerd (../dockerd.py), services
and containers with labels, `hsp-gateway adapt --docker` and `run --docker`.

Traffic rule: requests go only to the gateway and to backends on 127.0.0.1. Task, container and
overlay addresses are read from `docker inspect` and compared as TEXT with the generated
Caddyfile; nothing ever connects to them.
"""

import json
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import dockerd  # noqa: E402
import harness  # noqa: E402
from harness import log  # noqa: E402,F401

# Overlay subnets of the tests' networks (fixed so that containers can get fixed --ip and the
# expected files stay literal). Inside Docker's own namespaces only, never routed on the host.
NET_A, SUBNET_A = "hsp_net_a", "10.231.1.0/24"
NET_B, SUBNET_B = "hsp_net_b", "10.231.2.0/24"


class DockerTest(harness.GatewayTest):
    """One daemon per test process (the CTest fixture's, or a private one); every test starts
    from an empty swarm (no services, containers or user networks) and leaves one."""

    d = None

    @classmethod
    def setUpClass(cls):
        if DockerTest.d is None:
            DockerTest.d = dockerd.attach()
        cls.d = DockerTest.d

    def setUp(self):
        super().setUp()
        self.d.wipe()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            if not self.d.alive():
                # A test that stopped the daemon failed before restarting it: bring it back on
                # the same data root so that the next tests (and teardown) find it.
                self.d.start_daemon()
                self.d.wait_swarm_active()
            self.d.wipe()

    # -- docker objects -----------------------------------------------------------------------

    def network(self, name, subnet):
        self.d.docker("network", "create", "-d", "overlay", "--attachable", "--subnet", subnet,
                      name)

    def service(self, name, labels, replicas=0, networks=(), image=None, args=()):
        """A swarm service with service labels `labels` (dict, insertion order kept). With
        replicas 0 the image need not exist (nothing is scheduled, nothing pulled)."""
        argv = ["service", "create", "--detach", "--name", name, "--replicas", str(replicas)]
        for k, v in labels.items():
            argv += ["--label", "%s=%s" % (k, v)]
        for n in networks:
            argv += ["--network", n]
        if image is None:
            image = dockerd.IMAGE if replicas else dockerd.NO_IMAGE
        argv.append(image)
        argv += list(args)  # none: the image's CMD, a shell that sleeps and exits on SIGTERM
        self.d.docker(*argv)
        if replicas:
            self.d.wait_tasks_running(name, replicas)

    def container(self, name, labels, network=None, ip=None):
        """A running busybox container with container labels `labels`."""
        argv = ["run", "-d", "--name", name]
        for k, v in labels.items():
            argv += ["--label", "%s=%s" % (k, v)]
        if network:
            argv += ["--network", network]
        if ip:
            argv += ["--ip", ip]
        argv.append(dockerd.IMAGE)
        self.d.docker(*argv)
        state = self.d.inspect(name)[0]["State"]
        self.assertTrue(state["Running"], "container %s not running: %s" % (name, state))

    def label_add(self, service, key, value):
        self.d.docker("service", "update", "--detach", "--label-add", "%s=%s" % (key, value),
                      service)

    def api_get(self, path):
        """GET on the private daemon's unix socket (API 1.41) -> parsed JSON. Used only to learn
        Docker's own list order, which decides merge order."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self.d.sock)
        try:
            s.sendall(("GET /v1.41%s HTTP/1.0\r\nHost: docker\r\n\r\n" % path).encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertIn(b" 200 ", head.split(b"\r\n")[0], head)
        return json.loads(body)

    def service_order(self, names):
        """`names` in the order the Docker API lists the services."""
        listed = [s["Spec"]["Name"] for s in self.api_get("/services")]
        return [n for n in listed if n in names]

    # -- the gateway --------------------------------------------------------------------------

    def gw_env(self, extra=None):
        env = self.d.env()
        for k in list(env):
            if k.startswith("CADDY_DOCKER_") or k == "CADDY_INGRESS_NETWORKS":
                del env[k]
        env.update(extra or {})
        return env

    def adapt(self, args=(), env=None, timeout=60):
        """`hsp-gateway adapt --docker ARGS` -> (rc, stdout, stderr)."""
        argv = [gateway(), "adapt", "--docker"] + list(args)
        rc, out, err = harness.run_cmd(argv, timeout=timeout, env=self.gw_env(env))
        if err:
            log("adapt --docker %s stderr:\n%s" % (" ".join(args), err.rstrip()))
        return rc, out, err

    def assert_adapt(self, expected, args=(), env=None, rc=0):
        """Exact stdout of `adapt --docker`; rc 1 is expected when labels had to be skipped."""
        got_rc, out, err = self.adapt(args, env)
        self.assertEqual(got_rc, rc, "adapt --docker exit status:\n%s" % err)
        if out != expected:
            log("--- expected ---\n%s--- got ---\n%s----------------" % (expected, out))
        self.assertEqual(out, expected)
        return err

    def run_gateway(self, args=(), env=None, wait_ports=(), base_config=None):
        """`hsp-gateway run --docker` (2 threads), stopped at test end."""
        tmp = harness.tempfile.mkdtemp(prefix="hsp-dt-gw-")
        argv = [gateway(), "run", "--docker", "--threads", "2"]
        if base_config is not None:
            path = os.path.join(tmp, "Caddyfile")
            with open(path, "w") as f:
                f.write(base_config)
            argv += ["--config", path]
        argv += list(args)
        proc = harness.Proc(argv, env=self.gw_env(env), cwd=tmp)

        def stop():
            rc = proc.stop()
            harness.shutil.rmtree(tmp, ignore_errors=True)
            return rc
        self._stoppers.append(stop)
        for port in wait_ports:
            harness.wait_port(port, timeout=30, proc=proc)
        return proc


def gateway():
    # Absolute: the gateway runs with its own temporary directory as cwd.
    return os.path.abspath(harness.gateway_binary())


def read_expected(name, subs=None):
    with open(os.path.join(HERE, name)) as f:
        return harness.render(f.read(), subs or {})


def log_events(proc, msg):
    """The gateway's JSON log lines whose `msg` (or `event`) is `msg`."""
    return [j for j in proc.json_lines() if j.get("msg") == msg or j.get("event") == msg]


def ask(port, host, timeout=5.0):
    """GET / with Host `host` on the gateway -> (status, X-Upstream or None, body), or
    (None, None, error text) when the connection fails."""
    try:
        r = harness.fetch(port, host=host, timeout=timeout)
        return r.status, r.header("X-Upstream"), r.body
    except (OSError, ConnectionError, ValueError) as e:
        return None, None, str(e)


def wait_for(pred, timeout, interval=0.02):
    """Polls pred() until true; returns (value, seconds taken) or (falsy, timeout)."""
    t0 = time.monotonic()
    while True:
        v = pred()
        if v:
            return v, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return v, time.monotonic() - t0
        time.sleep(interval)

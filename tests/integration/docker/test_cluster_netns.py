"""Controller and servers on separate network stacks (cluster/): `run --docker` with
CADDY_DOCKER_MODE=controller pushes the Caddyfile made from Docker labels, the certificate it
orders from Pebble and the challenge answers to three CADDY_DOCKER_MODE=server instances, each
in its own network namespace with its own data directory (nothing shared but the push).

Topology, made by the test and deleted at the end (also after a failure; names carry the test's
pid, and namespaces left by a test process that no longer exists are deleted at start):

    hub namespace: bridge br0
      |-- ctl  10.231.0.1    controller (Docker through the private dockerd's unix socket),
      |                      Pebble + challtestsrv on the namespace's own 127.0.0.1, and a
      |                      capture endpoint on 127.0.0.1 that records sealed pushes
      |-- s1   10.231.0.11   server: sites on :80/:443, admin 10.231.0.11:2019, health :2020
      |-- s2   10.231.0.12   server
      |-- s3   10.231.0.13   server
      `-- cli  10.231.0.200  client (curl): outside the controller network

The interfaces are /24; CADDY_CONTROLLER_NETWORK is 10.231.0.0/25 on the servers, so the client
reaches their admin listeners but is not allowed in. No veth end is ever in the host's
namespace: nothing can leave the hub. challtestsrv answers every name with 10.231.0.11, so
Pebble's VA (in ctl) validates against server s1; the controller has no listener at all.

Checked, in one sequence (the set-up, an ACME order included, is too slow to repeat per case):
  1. all three servers serve app.test over HTTPS with the one certificate Pebble issued (curl
     --cacert Pebble's issuing root, pinned to each server's address); each data directory holds
     the same certificate file; the challenge answers are gone again. Then alpn.test, whose
     issuer turns HTTP-01 off, gets its certificate by TLS-ALPN-01 answered by a server.
  2. s3 SIGKILLed, a label changed: s1 and s2 serve the change; s3 restarted while the
     controller is stopped (SIGSTOP, so no round can come first) serves its saved push at once
     (server_state_restored), then the new one within a few intervals of SIGCONT.
  3. controller SIGTERMed: every server keeps serving (and `hsp-gateway health` says so).
  4. a body not sealed with the secret -> 401 and push_refused naming the peer, nothing changes;
     a peer outside CADDY_CONTROLLER_NETWORK gets no answer at all (admin_peer_refused).
  5. an older sealed push replayed (captured from the controller) -> 409 and push_stale; the
     current one replayed -> 200, not applied again.

Needs root (ip netns, veth, bridges, binding :80/:443 inside the namespaces). Run by hand:
HSP_GATEWAY=.../hsp-gateway python3 test_cluster_netns.py
(HSP_CLUSTER_VERBOSE=1: every process's log at the end)
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import time

from dockertest import DockerTest, gateway, log, log_events
import harness
import pebble
from pebble import run_in_netns

NAME = "app.test"
SERVICE = "hsp_cluster_app"
NAME_ALPN = "alpn.test"
SERVICE_ALPN = "hsp_cluster_alpn"
CTL_IP = "10.231.0.1"
SERVER_IPS = ["10.231.0.11", "10.231.0.12", "10.231.0.13"]
CLIENT_IP = "10.231.0.200"
CONTROLLER_NETWORK = "10.231.0.0/25"
ADMIN_PORT = 2019
HEALTH_PORT = 2020
INTERVAL = 1.0  # HSP_PUSH_CHECK_INTERVAL (s)

# Bounds against hangs, not expectations (the measured delays are printed).
START_TIMEOUT = 30.0
OBTAIN_TIMEOUT = 90.0   # controller start -> all three serve the Pebble certificate
CHANGE_TIMEOUT = 30.0   # label update -> servers serve it
CATCH_UP_TIMEOUT = 15.0  # controller resumed -> restarted server serves the new version

BASE = """{
	email admin@example.test
	admin off
	skip_install_trust
}
"""

NS_PREFIX = "hspcl"
# Read by the gateway; taken out of the environment the test was started with.
GATEWAY_ENV = ("CADDY_CONTROLLER_NETWORK", "HSP_PUSH_SECRET_FILE", "HSP_PUSH_CHECK_INTERVAL",
               "HSP_CONTROLLER_SERVERS", "HSP_ADMIN_LISTEN", "HSP_HEALTH_LISTEN", "HSP_DATA_DIR")


def _ip(*args, check=True):
    p = subprocess.run(["ip"] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError("ip %s -> rc %d: %s" % (" ".join(args), p.returncode,
                                                  p.stderr.decode("utf-8", "replace").strip()))
    return p.stdout.decode("utf-8", "replace")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Topology:
    """The namespaces above: ns(node) is a node's namespace name."""

    def __init__(self, nodes):
        self.tag = "%s%d" % (NS_PREFIX, os.getpid())
        self.nodes = dict(nodes)  # node -> address
        self.made = []

    def ns(self, node):
        return "%s-%s" % (self.tag, node)

    @staticmethod
    def sweep_stale():
        """Deletes namespaces of earlier runs whose test process is gone (a SIGKILLed run)."""
        for line in _ip("netns", "list").splitlines():
            name = line.split()[0] if line.split() else ""
            m = re.match(r"^%s(\d+)-" % NS_PREFIX, name)
            if m and not _pid_alive(int(m.group(1))):
                log("deleting stale namespace %s" % name)
                _ip("netns", "del", name, check=False)

    def _add(self, name):
        _ip("netns", "add", name)
        self.made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def up(self):
        hub = self.ns("hub")
        self._add(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        for node, addr in self.nodes.items():
            ns = self.ns(node)
            self._add(ns)
            # Both ends are created inside namespaces: the host's stack never sees them.
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "p-" + node,
                "netns", hub)
            _ip("-n", ns, "addr", "add", addr + "/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", hub, "link", "set", "p-" + node, "master", "br0", "up")

    def down(self):
        for name in reversed(self.made):
            _ip("netns", "del", name, check=False)
        self.made = []

    def argv(self, node, argv):
        return ["ip", "netns", "exec", self.ns(node)] + list(argv)

    def can_connect(self, node, addr, port):
        return run_in_netns(self.ns(node), harness.can_connect, port, host=addr)

    def wait_tcp(self, node, addr, port, timeout, proc=None):
        deadline = time.monotonic() + timeout
        while not self.can_connect(node, addr, port):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("process exited (rc=%s) before %s:%d was ready:\n%s"
                                   % (proc.poll(), addr, port, proc.output_tail(60)))
            if time.monotonic() > deadline:
                raise RuntimeError("%s:%d (netns %s) not ready within %.0fs%s"
                                   % (addr, port, node, timeout,
                                      "\n" + proc.output_tail(60) if proc else ""))
            time.sleep(0.01)

    def listening_ports(self, node):
        out = subprocess.run(self.argv(node, ["ss", "-Htln"]), capture_output=True,
                             timeout=30).stdout.decode()
        ports = set()
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4:
                ports.add(int(fields[3].rpartition(":")[2]))
        return ports


def raw_http(addr, port, method, target, body=b"", timeout=10.0):
    """One HTTP/1.1 request on a fresh connection (run inside a namespace). -> (status, body),
    or (None, bytes received) when the connection closed without a complete status line."""
    s = socket.create_connection((addr, port), timeout=timeout)
    try:
        s.sendall(("%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n"
                   "Connection: close\r\n\r\n" % (method, target, addr, port, len(body)))
                  .encode() + body)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    if not m:
        return None, data
    return int(m.group(1)), data.partition(b"\r\n\r\n")[2]


def served_leaf_der(addr, cafile):
    """DER of the leaf served for NAME at addr:443, verified against cafile (in a namespace)."""
    raw = socket.create_connection((addr, 443), timeout=10)
    ctx = ssl.create_default_context(cafile=cafile)
    with ctx.wrap_socket(raw, server_hostname=NAME) as tls:
        return tls.getpeercert(binary_form=True)


class PushCapture:
    """A fake server at 127.0.0.1 in the controller's namespace, in the controller's static
    server list: it always says it has version 0, so every round sends it the current sealed
    push, and it keeps each distinct body in arrival order (for the replays of case 5)."""

    def __init__(self, topo, node):
        self.sock = run_in_netns(topo.ns(node), self._listen)
        self.port = self.sock.getsockname()[1]
        self.bodies = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @staticmethod
    def _listen():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        return s

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                self._serve(c)
            except (OSError, ValueError):
                pass
            finally:
                c.close()

    def _serve(self, c):
        c.settimeout(10)
        conn = harness.Conn(c, timeout=10)
        head = conn.read_until(b"\r\n\r\n")
        if head is None:
            return
        first, headers = harness.parse_head(head)
        body = conn.read_exact(int(harness.header_get(headers, "content-length", "0")))
        if first.startswith("POST "):
            with self.lock:
                if body not in self.bodies:
                    self.bodies.append(body)
            answer = b'{"version": 0, "applied": true}\n'
        else:
            answer = b'{"version": 0, "instance": "capture"}\n'
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n%s" % (len(answer), answer))

    def captured(self):
        with self.lock:
            return list(self.bodies)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the loop
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


class ClusterInNamespaces(DockerTest):

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.fail("needs root (ip netns, veth, :80/:443 inside the namespaces)")
        Topology.sweep_stale()
        nodes = {"ctl": CTL_IP, "s1": SERVER_IPS[0], "s2": SERVER_IPS[1], "s3": SERVER_IPS[2],
                 "cli": CLIENT_IP}
        self.topo = Topology(nodes)
        # Registered first, so it runs last: after every process in the namespaces stopped.
        self.addCleanup(self.topo.down)
        atexit.register(self.topo.down)  # a SIGTERMed run (ctest timeout) still deletes them
        self.topo.up()
        self.tmp = tempfile.mkdtemp(prefix="hsp-cl-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.secret = os.path.join(self.tmp, "push-secret")
        with open(self.secret, "w") as f:
            f.write(os.urandom(24).hex() + "\n")
        os.chmod(self.secret, 0o600)

    # -- processes ----------------------------------------------------------------------------

    def cluster_env(self, extra, docker=True):
        env = self.gw_env()
        for k in GATEWAY_ENV + (() if docker else ("DOCKER_HOST",)):
            env.pop(k, None)
        env.update({"HSP_PUSH_SECRET_FILE": self.secret, "HSP_PUSH_CHECK_INTERVAL": "%gs" %
                    INTERVAL})
        env.update(extra)
        return env

    def spawn(self, node, argv, env, name):
        proc = harness.Proc(self.topo.argv(node, argv), env=env, cwd=self.tmp)
        proc.name = name
        self._stoppers.append(proc.stop)
        return proc

    def start_server(self, i):
        node, addr = "s%d" % (i + 1), SERVER_IPS[i]
        data = os.path.join(self.tmp, node)
        argv = [gateway(), "run", "--docker", "--threads", "1", "--data-dir", data,
                "--health-listen", "%s:%d" % (addr, HEALTH_PORT)]
        # A server has no Docker: DOCKER_HOST is taken out of its environment.
        env = self.cluster_env({"CADDY_DOCKER_MODE": "server",
                                "CADDY_CONTROLLER_NETWORK": CONTROLLER_NETWORK}, docker=False)
        proc = self.spawn(node, argv, env, node)
        if not proc.wait_line(lambda l: "server_listening" in l, timeout=START_TIMEOUT):
            self.fail("%s did not start:\n%s" % (node, proc.output_tail(60)))
        return proc

    def start_controller(self, static_servers):
        data = os.path.join(self.tmp, "ctl")
        base = os.path.join(self.tmp, "Caddyfile.base")
        with open(base, "w") as f:
            f.write(BASE)
        argv = [gateway(), "run", "--docker", "--config", base, "--data-dir", data]
        env = self.cluster_env({"CADDY_DOCKER_MODE": "controller",
                                "HSP_CONTROLLER_SERVERS": ",".join(static_servers)})
        proc = self.spawn("ctl", argv, env, "controller")
        if not proc.wait_line(lambda l: "controller_started" in l, timeout=START_TIMEOUT):
            self.fail("controller did not start:\n%s" % proc.output_tail(60))
        return proc

    # -- clients ------------------------------------------------------------------------------

    def curl(self, addr, cacert, timeout=5, name=NAME):
        """curl https://<name>/ from the client namespace, pinned to `addr`.
        -> (status or 0, body, stderr)."""
        return pebble.curl_https(443, name, cacert, timeout=timeout, address=addr,
                                 wrap=lambda argv: self.topo.argv("cli", argv))

    def wait_serving(self, addrs, body, cacert, timeout, t0=None, name=NAME):
        """Polls every address until it answers 200 `body`. -> {addr: seconds since t0}; fails
        the test naming the ones that did not, with their last answers."""
        t0 = time.monotonic() if t0 is None else t0
        deadline = time.monotonic() + timeout
        done, last = {}, {}
        while len(done) < len(addrs):
            for a in addrs:
                if a in done:
                    continue
                last[a] = self.curl(a, cacert, name=name)
                if last[a][0] == 200 and last[a][1] == body:
                    done[a] = time.monotonic() - t0
            if len(done) == len(addrs):
                break
            if time.monotonic() > deadline:
                self.fail("not serving %r within %.0fs: %s\n%s" % (
                    body, timeout, {a: last[a] for a in addrs if a not in done},
                    self.tails()))
            time.sleep(0.1)
        return done

    def admin(self, node, addr, method, target, body=b""):
        return run_in_netns(self.topo.ns(node), raw_http, addr, ADMIN_PORT, method, target, body)

    def server_version(self, addr):
        status, body = self.admin("ctl", addr, "GET", "/hsp/v1/version")
        self.assertEqual(status, 200, body)
        return json.loads(body)["version"]

    def tails(self, n=40):
        out = []
        for p in self.procs.values():
            out.append("--- %s ---\n%s" % (p.name, p.output_tail(n)))
        out.append("--- pebble ---\n%s" % self.peb.log_tail(20))
        return "\n".join(out)

    def wait_log(self, proc, msg, pred=lambda j: True, timeout=10.0):
        def found():
            return [j for j in log_events(proc, msg) if pred(j)]
        got = harness.wait_until(found, timeout=timeout)
        self.assertTrue(got, "no %s in the %s log within %.0fs:\n%s"
                        % (msg, proc.name, timeout, proc.output_tail(60)))
        return got

    # -- the test -----------------------------------------------------------------------------

    def test_controller_and_servers(self):
        t_start = time.monotonic()
        self.peb = pebble.Pebble(80, 443, netns=self.topo.ns("ctl"), default_ipv4=SERVER_IPS[0])
        self.addCleanup(self.peb.close)
        self.peb.start()
        root = self.peb.issuing_root()
        capture = PushCapture(self.topo, "ctl")
        self.addCleanup(capture.close)

        self.service(SERVICE, {"caddy": NAME, "caddy.respond": "v1-one",
                               "caddy.tls.ca": self.peb.directory_url,
                               "caddy.tls.ca_root": self.peb.acme_ca_root})
        self.procs = {}
        servers = []
        for i in range(3):
            servers.append(self.start_server(i))
            self.procs["s%d" % (i + 1)] = servers[-1]
        for s in servers:
            self.assertEqual(self.wait_log(s, "server_listening")[0].get("version"), 0)
        targets = ["%s:%d" % (a, ADMIN_PORT) for a in SERVER_IPS]
        t0 = time.monotonic()
        ctl = self.start_controller(targets + ["127.0.0.1:%d" % capture.port])
        self.procs["controller"] = ctl

        # -- 1. certificates and config reach every server ---------------------------------
        delays = self.wait_serving(SERVER_IPS, "v1-one", root, OBTAIN_TIMEOUT, t0)
        log("case 1: controller start -> HTTPS with the Pebble certificate: %s"
            % ", ".join("%s %.2fs" % (a, d) for a, d in sorted(delays.items())))
        obtained = [j for j in log_events(ctl, "acme_certificate_obtained")
                    if j.get("name") == NAME]
        self.assertEqual(len(obtained), 1, ctl.output_tail(60))
        self.assertFalse(log_events(ctl, "challenge_not_on_every_server"), ctl.output_tail(60))
        for s in servers:
            self.assertFalse(log_events(s, "acme_obtain_started"), s.output_tail(60))
            self.assertGreaterEqual(len(log_events(s, "push_received")), 2, s.output_tail(60))
        # The VA (in ctl) validated against s1, the address challtestsrv gives for app.test;
        # the controller itself listens on nothing but Pebble's and the capture's ports.
        def answers(s):
            return log_events(s, "acme_http01_served") + log_events(s, "acme_tls_alpn01_served")
        self.assertTrue(answers(servers[0]), self.tails())
        self.assertEqual({j.get("remote_ip") for j in answers(servers[0])}, {CTL_IP})
        self.assertFalse(answers(servers[1]) + answers(servers[2]))
        self.assertFalse({80, 443} & self.topo.listening_ports("ctl"))
        folder = os.path.join("certificates", self.peb.issuer_key, NAME)
        with open(os.path.join(self.tmp, "ctl", folder, NAME + ".crt"), "rb") as f:
            ctl_crt = f.read()
        leaf = pebble.pem_certs(ctl_crt.decode())[0]
        for i, addr in enumerate(SERVER_IPS):
            data = os.path.join(self.tmp, "s%d" % (i + 1))
            with open(os.path.join(data, folder, NAME + ".crt"), "rb") as f:
                self.assertEqual(f.read(), ctl_crt, "s%d's certificate file" % (i + 1))
            key = os.path.join(data, folder, NAME + ".key")
            self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
            self.assertEqual(run_in_netns(self.topo.ns("cli"), served_leaf_der, addr, root),
                             leaf, "the leaf s%d serves" % (i + 1))

            def no_answers(data=data):
                d = os.path.join(data, "acme", "challenge_tokens")
                return not [f for _, _, fs in os.walk(d) for f in fs]
            self.assertTrue(harness.wait_until(no_answers, timeout=5 + 3 * INTERVAL),
                            "challenge answers left in s%d's data directory" % (i + 1))

        # TLS-ALPN-01 too: a second site that turns HTTP-01 off. The answer is a certificate
        # the server makes from the pushed key authorization at the handshake.
        self.service(SERVICE_ALPN, {"caddy": NAME_ALPN, "caddy.respond": "alpn-ok",
                                    "caddy.tls.issuer": "acme",
                                    "caddy.tls.issuer.dir": self.peb.directory_url,
                                    "caddy.tls.issuer.trusted_roots": self.peb.acme_ca_root,
                                    "caddy.tls.issuer.disable_http_challenge": ""})
        delays = self.wait_serving(SERVER_IPS, "alpn-ok", root, OBTAIN_TIMEOUT, name=NAME_ALPN)
        log("case 1: TLS-ALPN-01 site served by every server after: %s"
            % ", ".join("%s %.2fs" % (a, d) for a, d in sorted(delays.items())))
        alpn = [j for j in log_events(servers[0], "acme_tls_alpn01_served")
                if j.get("name", NAME_ALPN) == NAME_ALPN]
        self.assertTrue(alpn, servers[0].output_tail(60))
        self.assertFalse(log_events(ctl, "challenge_not_on_every_server"), ctl.output_tail(60))

        def ctl_latest():
            return log_events(ctl, "controller_version")[-1].get("version")
        versions = [j.get("version") for j in log_events(ctl, "controller_version")]
        log("case 1: controller versions %s; pushes received per server: %s" % (
            versions, [len(log_events(s, "push_received")) for s in servers]))
        # What s3 will have saved when it is killed: the controller's latest version.
        self.assertTrue(harness.wait_until(
            lambda: self.server_version(SERVER_IPS[2]) == ctl_latest(), timeout=5 + 3 * INTERVAL),
            "s3 at %d, controller at %d" % (self.server_version(SERVER_IPS[2]), ctl_latest()))
        v1 = self.server_version(SERVER_IPS[2])

        # -- 2. a server dies, the labels change, it comes back -----------------------------
        s3_old = servers[2]
        self.assertEqual(s3_old.stop(signal.SIGKILL), -signal.SIGKILL)
        t0 = time.monotonic()
        self.label_add(SERVICE, "caddy.respond", "v2-two")
        delays = self.wait_serving(SERVER_IPS[:2], "v2-two", root, CHANGE_TIMEOUT, t0)
        log("case 2: label update -> served by the live servers: %s"
            % ", ".join("%s %.2fs" % (a, d) for a, d in sorted(delays.items())))
        self.wait_log(ctl, "push_failed",
                      lambda j: j.get("server") == "%s:%d" % (SERVER_IPS[2], ADMIN_PORT),
                      timeout=5 + 3 * INTERVAL)
        v2 = self.server_version(SERVER_IPS[0])
        self.assertGreater(v2, v1)
        # Frozen, the controller cannot reach the restarted server before it is checked.
        ctl.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            s3 = self.start_server(2)
            self.procs["s3"] = servers[2] = s3
            self.topo.wait_tcp("cli", SERVER_IPS[2], 443, START_TIMEOUT, s3)
            first = self.curl(SERVER_IPS[2], root)
            t_first = time.monotonic() - t0
            self.assertEqual(first[:2], (200, "v1-one"), "%r\n%s" % (first, s3.output_tail(60)))
            restored = log_events(s3, "server_state_restored")
            self.assertEqual([j.get("version") for j in restored], [v1], s3.output_tail(60))
            self.assertFalse(log_events(s3, "push_received"), s3.output_tail(60))
            log("case 2: s3 restarted -> old config served after %.2fs (version %d restored)"
                % (t_first, v1))
        finally:
            ctl.send_signal(signal.SIGCONT)
        t0 = time.monotonic()
        delays = self.wait_serving(SERVER_IPS[2:], "v2-two", root, CATCH_UP_TIMEOUT, t0)
        log("case 2: controller resumed -> s3 serves the new config after %.2fs"
            % delays[SERVER_IPS[2]])
        self.wait_log(s3, "push_received", lambda j: j.get("version") == v2)
        self.assertEqual(self.server_version(SERVER_IPS[2]), v2)
        self.wait_log(ctl, "push_recovered",
                      lambda j: j.get("server") == "%s:%d" % (SERVER_IPS[2], ADMIN_PORT))

        # -- 3. the controller stops; the servers keep serving -------------------------------
        self.assertEqual(ctl.stop(signal.SIGTERM, timeout=15), 0, ctl.output_tail(60))
        self.assertTrue(log_events(ctl, "stopped"), ctl.output_tail(20))
        t0 = time.monotonic()
        rounds = 0
        while time.monotonic() - t0 < 3 * INTERVAL or rounds < 2:
            for addr in SERVER_IPS:
                got = self.curl(addr, root)
                self.assertEqual(got[:2], (200, "v2-two"), "%s after the controller stopped: %r"
                                 % (addr, got))
            rounds += 1
        for addr in SERVER_IPS:
            rc, out, err = harness.run_cmd(self.topo.argv(
                "cli", [gateway(), "health", "%s:%d" % (addr, HEALTH_PORT)]), timeout=20)
            self.assertEqual(rc, 0, "health %s: %s%s" % (addr, out, err))
        log("case 3: controller stopped; all three served v2 for %.1fs (%d rounds) and are "
            "healthy" % (time.monotonic() - t0, rounds))

        # -- 4. wrong secret from inside, anything from outside ------------------------------
        s1 = servers[0]
        status, body = self.admin("ctl", SERVER_IPS[0], "POST", "/hsp/v1/config",
                                  b"HSP1" + os.urandom(200))
        self.assertEqual(status, 401, body)
        refused = self.wait_log(s1, "push_refused")
        self.assertTrue(refused[-1].get("peer", "").startswith(CTL_IP + ":"), refused)
        self.assertEqual(self.curl(SERVER_IPS[0], root)[:2], (200, "v2-two"))
        self.assertEqual(self.server_version(SERVER_IPS[0]), v2)
        newest = capture.captured()[-1]
        for method, target, payload in (("GET", "/hsp/v1/version", b""),
                                        ("POST", "/hsp/v1/config", newest)):
            status, data = self.admin("cli", SERVER_IPS[0], method, target, payload)
            self.assertEqual((status, data), (None, b""),
                             "%s %s from %s was answered" % (method, target, CLIENT_IP))
        harness.wait_until(lambda: len(log_events(s1, "admin_peer_refused")) >= 1, timeout=5)
        # Both refused; logged once (a refused address is logged at most once a minute).
        outside = log_events(s1, "admin_peer_refused")
        self.assertEqual(len(outside), 1, s1.output_tail(20))
        self.assertTrue(all(j.get("peer", "").startswith(CLIENT_IP + ":") for j in outside))
        self.assertEqual(outside[0].get("allowed"), [CONTROLLER_NETWORK])
        log("case 4: bad seal -> 401 %s; outside peer -> no answer %s" % (refused[-1],
                                                                            outside[-1]))

        # -- 5. replays ------------------------------------------------------------------------
        bodies = capture.captured()
        self.assertGreaterEqual(len(bodies), 2, "pushes captured: %d" % len(bodies))
        status, body = self.admin("ctl", SERVER_IPS[0], "POST", "/hsp/v1/config", bodies[0])
        self.assertEqual(status, 409, body)
        stale = self.wait_log(s1, "push_stale")
        self.assertEqual(stale[-1].get("current"), v2, stale)
        self.assertLess(stale[-1].get("version"), v2, stale)
        status, body = self.admin("ctl", SERVER_IPS[0], "POST", "/hsp/v1/config", bodies[-1])
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"version": v2, "applied": False})
        self.assertEqual(self.server_version(SERVER_IPS[0]), v2)
        self.assertEqual(self.curl(SERVER_IPS[0], root)[:2], (200, "v2-two"))
        log("case 5: replayed version %s -> 409 (%d pushes captured); current -> 200 "
            "not applied" % (stale[-1].get("version"), len(bodies)))
        log("whole test: %.1fs" % (time.monotonic() - t_start))
        if os.environ.get("HSP_CLUSTER_VERBOSE"):
            log(self.tails(400))


if __name__ == "__main__":
    harness.main()

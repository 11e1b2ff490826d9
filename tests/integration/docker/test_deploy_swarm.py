"""deploy/: the image, the stack files and the examples, on the private single-node Swarm
(../dockerd.py).

test_examples_translate: every service label set in deploy/examples/*.yml, deploy/stack.yml and
deploy/stack-multinode.yml translates (`adapt --labels`, two upstreams) into a Caddyfile that
`validate` accepts; each file's services, created with their labels (replicas 0), give
`adapt --docker` output with nothing skipped or dropped that `validate` accepts; the stack files
have the layout the README ("Deploy on Docker Swarm") describes (global gateway with host-mode
ports, read-only socket, data volume, controller/server split with one secret and one
controller subnet).

test_stack: builds the image (`docker build --network host -f deploy/Dockerfile`, the gateway
compiled inside; the base image debian:bookworm-slim is made by debootstrap from Debian's mirror
when the daemon lacks it, see base_image.py), checks it (`ldd` finds every library, no compiler
or curl, size printed), deploys deploy/stack.yml through deploy/install.sh (twice: the second
run changes nothing), and then: the gateway task runs and serves the backend's page to curl on
127.0.0.1; `docker service update --label-add/--label-rm` on the backend adds a response header,
then turns the route into a `respond`; `docker service rm` of the backend removes the route; the
gateway container's health (the image's HEALTHCHECK, `hsp-gateway health`) is `healthy`.

test_stack_multinode: the same image and steps with deploy/stack-multinode.yml on the same single
node: the controller and the server both become healthy (and say so on /healthz in their
modes), the server serves the backend's page that the controller pushed to it (sealed with the
Docker secret that install.sh created), and the label updates and the removal reach it.

Each stack test removes its stack, volumes and secret; the image goes at the end.

What the deployed copy of deploy/stack.yml changes, and why (the network rule: traffic only on
127.0.0.1; the private dockerd runs without iptables or a bridge, and a published host-mode port
would mean a listener on 0.0.0.0 and traffic to Docker's bridge addresses):
  - gateway: `ports:` removed, and the service is attached to Docker's predefined `host` network
    instead of the overlay `caddy` (its listeners are then on the host's 127.0.0.1);
  - gateway: the Docker socket bind mount's source is the private daemon's socket (its target,
    /var/run/docker.sock, and read_only stay);
  - gateway: HSP_HEALTH_LISTEN set to a free 127.0.0.1 port (the image's 127.0.0.1:2020 would be
    the host's, shared with whatever else runs there);
  - the example backend (traefik/whoami, pulled from a registry, on the overlay) is replaced by
    `backend`: busybox httpd from the local hsp-bb image on the host network, on a free
    127.0.0.1 port, labelled `caddy: http://backend.localhost:<free port>`, `caddy.bind:
    127.0.0.1`, `caddy.reverse_proxy: 127.0.0.1:<backend port>`.
Everything else (global mode, placement, update and restart policies, stop_grace_period, the
data volume, CADDY_INGRESS_NETWORKS, the `caddy` network's definition) is deployed as written.

The copy of deploy/stack-multinode.yml gets the same changes (controller and server on the
`host` network, the server without `ports:`, the controller's socket source, one free
HSP_HEALTH_LISTEN port each, the backend), and, because tasks on the host network have no
address in an overlay:
  - CADDY_CONTROLLER_NETWORK is 127.0.0.0/8 instead of the overlay's subnet, in both (the
    server's push listener answers only peers inside it; the controller connects from
    127.0.0.1);
  - server: HSP_ADMIN_LISTEN=127.0.0.1:<free port> (it would bind its overlay address);
  - controller: HSP_CONTROLLER_SERVERS=127.0.0.1:<that port> (it would find the server's task
    by the caddy_controlled_server label and its overlay address).
The overlays are still created as declared (nothing attached to them).
The image is given as HSP_IMAGE by install.sh, as for users. No registry is ever asked: install.sh
runs `docker stack deploy --resolve-image never`, and both services name their image by its ID
(sha256:...), since a Swarm task whose image is named by a tag tries a pull from the registry
first every time it starts, even when the image is present.

Environment: HSP_JOBS (compile jobs inside the build; default: the cores the build sees);
HSP_DEPLOY_IMAGE_CACHE (directory for the base image's rootfs tarball; default: next to the
CTest fixture's state file, i.e. in the build tree; none when run by hand);
HSP_DEPLOY_KEEP_IMAGE=1 keeps the image and the build's cached layers at the end (by hand, to
iterate without compiling again).

Run by hand (root): HSP_GATEWAY=.../hsp-gateway python3 test_deploy_swarm.py
"""

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import yaml  # Debian's python3-yaml (scripts/install-deps.sh, test packages)

from dockertest import DockerTest, gateway, log, wait_for  # first: puts ../ on sys.path
import base_image
import dockerd
import harness

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    ".."))
DEPLOY = os.path.join(REPO, "deploy")
IMAGE = "hsp-gateway:deploy-test"
STACK = "hsp"
SECRET = "hsp_push_secret"
BUILD_TIMEOUT = 3600  # one compile job on a busy machine; CI's 2 cores take about half
MAX_IMAGE_MB = 120
DEADLINE = 10.0  # label change -> route, seconds (the target is well under 1 s)
BODY = b"hello from the backend\n"
HOST = "backend.localhost"


def interpolate(value):
    """docker stack deploy's variable substitution on one value: `$$` -> `$`, `${VAR:-default}`
    and `${VAR-default}` -> the default (the tests set no such variable), `${VAR}`/`$VAR` ->
    empty."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return m.group(2) or ""
    return re.sub(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)", sub, value)


def service_labels(service):
    """The deploy (service) labels of a compose service, substituted, as an ordered dict."""
    labels = (service.get("deploy") or {}).get("labels") or {}
    if isinstance(labels, list):
        labels = dict(item.split("=", 1) if "=" in item else (item, "") for item in labels)
    return {k: interpolate("" if v is None else str(v)) for k, v in labels.items()}


def caddy_labels(labels):
    return {k: v for k, v in labels.items()
            if re.match(r"^caddy(_\d+)?(\.|$)", k)}


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def curl(port, host, extra=()):
    """curl -i on 127.0.0.1:port with `host` resolved there -> (status or None, headers dict
    with lower-case names, body bytes)."""
    argv = ["curl", "-sS", "-i", "--noproxy", "*", "--max-time", "5",
            "--resolve", "%s:%d:127.0.0.1" % (host, port)] + list(extra)
    argv.append("http://%s:%d/" % (host, port))
    p = subprocess.run(argv, capture_output=True, timeout=15)
    if p.returncode != 0:
        return None, {}, p.stderr
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


class DeploySwarm(DockerTest):

    # -- the stack files and examples: no image needed ----------------------------------------

    def test_examples_translate(self):
        files = sorted(glob.glob(os.path.join(DEPLOY, "examples", "*.yml")))
        self.assertGreaterEqual(len(files), 5, "deploy/examples/*.yml missing")
        files += [os.path.join(DEPLOY, "stack.yml"), os.path.join(DEPLOY, "stack-multinode.yml")]
        tmp = tempfile.mkdtemp(prefix="hsp-deploy-ex-")
        self.addCleanup(shutil.rmtree, tmp, True)
        for path in files:
            name = os.path.relpath(path, DEPLOY)
            doc = load(path)
            self.assertEqual(str(doc.get("version")), "3.8", name)
            labelled = {s: caddy_labels(service_labels(svc))
                        for s, svc in doc["services"].items()}
            labelled = {s: labels for s, labels in labelled.items() if labels}
            self.assertTrue(labelled, "%s: no service with caddy labels" % name)
            for svc, labels in labelled.items():
                self.check_label_set(tmp, "%s %s" % (name, svc), labels)
            self.check_adapt_docker(tmp, name, labelled)

    def check_label_set(self, tmp, what, labels):
        label_file = os.path.join(tmp, "labels.txt")
        with open(label_file, "w") as f:
            f.writelines("%s=%s\n" % kv for kv in labels.items())
        rc, out, err = harness.run_cmd([gateway(), "adapt", "--labels", label_file,
                                        "--upstream", "10.0.9.5", "--upstream", "10.0.9.6"])
        self.assertEqual((rc, err), (0, ""), "%s: adapt --labels:\n%s" % (what, err))
        self.validate(tmp, what, out)
        log("%s ->\n%s" % (what, out.rstrip()))

    def validate(self, tmp, what, caddyfile):
        path = os.path.join(tmp, "Caddyfile")
        with open(path, "w") as f:
            f.write(caddyfile)
        rc, out, err = harness.run_cmd([gateway(), "validate", "--config", path])
        self.assertEqual(rc, 0, "%s: validate:\n%s%s\n%s" % (what, out, err, caddyfile))

    def check_adapt_docker(self, tmp, name, labelled):
        """The file's labelled services side by side in Docker (replicas 0, nothing runs), as
        `docker stack deploy` would create them: merged sites and all."""
        for svc, labels in labelled.items():
            self.service("ex_" + svc, labels)
        rc, out, err = self.adapt()
        self.assertEqual(rc, 0, "%s: adapt --docker:\n%s" % (name, err))
        for event in ("labels_skipped", "block_dropped"):
            self.assertNotIn(event, err, "%s: adapt --docker:\n%s" % (name, err))
        self.validate(tmp, name + " (adapt --docker)", out)
        if len(labelled) > 1:
            log("%s, services merged by adapt --docker ->\n%s" % (name, out.rstrip()))
        self.d.wipe()

    def test_stack_files_layout(self):
        doc = load(os.path.join(DEPLOY, "stack.yml"))
        gw = doc["services"]["gateway"]
        self.assertEqual(gw["image"], "${HSP_IMAGE:-hsp-gateway:latest}")
        self.assertEqual(gw["deploy"]["mode"], "global")
        self.assertIn("node.role == manager", gw["deploy"]["placement"]["constraints"])
        self.assert_host_ports(gw)
        self.assert_socket(gw, True)
        self.assertIn("data:/data", gw["volumes"])
        self.assertIn("data", doc["volumes"])
        self.assertEqual(doc["networks"]["caddy"]["driver"], "overlay")
        self.assertEqual(gw["networks"], ["caddy"])

        doc = load(os.path.join(DEPLOY, "stack-multinode.yml"))
        ctl, srv = doc["services"]["controller"], doc["services"]["server"]
        subnet = doc["networks"]["caddy_controller"]["ipam"]["config"][0]["subnet"]
        self.assertEqual(ctl["deploy"]["mode"], "replicated")
        self.assertEqual(ctl["deploy"]["replicas"], 1)
        self.assertIn("node.role == manager", ctl["deploy"]["placement"]["constraints"])
        self.assert_socket(ctl, True)
        self.assertNotIn("ports", ctl)
        self.assertEqual(srv["deploy"]["mode"], "global")
        self.assertIn("caddy_controlled_server", srv["deploy"]["labels"])
        self.assert_socket(srv, False)
        self.assert_host_ports(srv)
        for svc, mode in ((ctl, "controller"), (srv, "server")):
            env = svc["environment"]
            self.assertEqual(env["CADDY_DOCKER_MODE"], mode)
            self.assertEqual(env["CADDY_CONTROLLER_NETWORK"], subnet)
            self.assertEqual(env["HSP_PUSH_SECRET_FILE"], "/run/secrets/" + SECRET)
            self.assertEqual(svc["secrets"], [SECRET])
            self.assertIn("caddy_controller", svc["networks"])
            self.assertIn("caddy", svc["networks"])
        self.assertIn(SECRET, doc["secrets"])

    def assert_host_ports(self, svc):
        ports = sorted((p["published"], p["target"], p["protocol"], p["mode"])
                       for p in svc["ports"])
        self.assertEqual(ports, [(80, 80, "tcp", "host"), (443, 443, "tcp", "host"),
                                 (443, 443, "udp", "host")])

    def assert_socket(self, svc, present):
        mounts = [v for v in svc.get("volumes", []) if isinstance(v, dict)
                  and v.get("target") == "/var/run/docker.sock"]
        if not present:
            self.assertEqual(mounts, [])
            return
        self.assertEqual(len(mounts), 1)
        self.assertEqual(mounts[0]["source"], "/var/run/docker.sock")
        self.assertTrue(mounts[0]["read_only"])

    # -- the image, and each stack file deployed on the private Swarm --------------------------

    built = False  # the image is built once, for both stack tests

    def ensure_image(self):
        if not DeploySwarm.built:
            self.ensure_base_image()
            self.build_image()
            self.check_image()
            DeploySwarm.built = True

    @classmethod
    def tearDownClass(cls):
        if cls.built and os.environ.get("HSP_DEPLOY_KEEP_IMAGE") != "1":
            cls.d.docker("image", "rm", IMAGE, check=False)
            cls.d.docker("image", "prune", "-f", check=False, timeout=300)
        super().tearDownClass()

    def test_stack(self):
        t0 = time.monotonic()
        self.addCleanup(self.cleanup_stack)
        self.ensure_image()
        gw_port, backend_port, health_port = (harness.free_port() for _ in range(3))
        stack_file = self.stack_copy(gw_port, backend_port, health_port)
        self.install(stack_file)
        secret_id = self.d.docker("secret", "inspect", "--format", "{{.ID}}", SECRET).strip()
        self.d.wait_tasks_running(STACK + "_backend", 1, timeout=60)
        task = self.wait_healthy_task("gateway")
        self.wait_served(gw_port, "gateway")

        # install.sh again: nothing changes (same secret, same gateway task).
        self.install(stack_file)
        self.assertEqual(self.d.docker("secret", "inspect", "--format", "{{.ID}}",
                                       SECRET).strip(), secret_id)
        time.sleep(2)
        again = self.d.wait_tasks_running(STACK + "_gateway", 1, timeout=30)
        self.assertEqual(again[0]["ID"], task["ID"], "re-deploy replaced the gateway task")

        self.follow_labels(gw_port, "gateway")
        self.assert_healthy(task)
        log("test_stack: %.0f s" % (time.monotonic() - t0))

    def test_stack_multinode(self):
        t0 = time.monotonic()
        self.addCleanup(self.cleanup_stack)
        self.ensure_image()
        gw_port, backend_port, ctl_health, srv_health, admin_port = (
            harness.free_port() for _ in range(5))
        self.install(self.multinode_copy(gw_port, backend_port, ctl_health, srv_health,
                                         admin_port))
        self.d.wait_tasks_running(STACK + "_backend", 1, timeout=60)
        controller = self.wait_healthy_task("controller")
        server = self.wait_healthy_task("server")
        for port, mode in ((ctl_health, "controller"), (srv_health, "server")):
            r = harness.fetch(port, target="/healthz", timeout=5)
            self.assertEqual(r.status, 200, r.body)
            state = json.loads(r.body)
            log("%s /healthz: %s" % (mode, state))
            self.assertEqual((state.get("status"), state.get("mode")), ("serving", mode))
        self.wait_served(gw_port, "server")
        self.follow_labels(gw_port, "server")
        self.assert_healthy(controller)
        self.assert_healthy(server)
        log("test_stack_multinode: %.0f s" % (time.monotonic() - t0))

    def wait_healthy_task(self, service):
        t0 = time.monotonic()
        # With a HEALTHCHECK, Swarm reports a task running only once it is healthy.
        try:
            tasks = self.d.wait_tasks_running(STACK + "_" + service, 1, timeout=120)
        except dockerd.DockerError as e:
            self.fail("%s\n%s" % (e, self.service_logs(service)))
        log("%s task running (healthy) after %.1f s" % (service, time.monotonic() - t0))
        self.assert_healthy(tasks[0])
        return tasks[0]

    def assert_healthy(self, task):
        container = self.d.inspect(task["Status"]["ContainerStatus"]["ContainerID"])[0]
        self.assertTrue(container["State"]["Running"])
        health = container["State"].get("Health") or {}
        self.assertEqual(health.get("Status"), "healthy", health)

    def wait_served(self, gw_port, service):
        def served():
            status, _, body = curl(gw_port, HOST)
            return status == 200 and body == BODY
        ok, took = wait_for(served, 30, interval=0.2)
        self.assertTrue(ok, "backend page not served through the gateway: %r\n%s"
                        % (curl(gw_port, HOST), self.service_logs(service)))
        log("backend page served through the gateway (after %.1f s)" % took)

    def follow_labels(self, gw_port, service):
        """Label updates on the backend change its route; removing it removes the route."""
        backend = STACK + "_backend"
        self.d.docker("service", "update", "--detach", "--label-add",
                      "caddy.header=X-Deploy-Test stack", backend)
        ok, took = wait_for(lambda: curl(gw_port, HOST)[1].get("x-deploy-test") == "stack",
                            DEADLINE, interval=0.1)
        log("label-add caddy.header -> live: %.2f s" % took)
        self.assertTrue(ok, "header label not applied: %r\n%s"
                        % (curl(gw_port, HOST), self.service_logs(service)))
        self.assertEqual(curl(gw_port, HOST)[2], BODY)

        # The proxy replaced by a fixed answer: --label-rm + --label-add in one update.
        self.d.docker("service", "update", "--detach", "--label-rm", "caddy.reverse_proxy",
                      "--label-add", "caddy.respond=changed 200", backend)
        ok, took = wait_for(lambda: curl(gw_port, HOST)[2] == b"changed", DEADLINE,
                            interval=0.1)
        log("label-rm reverse_proxy, label-add respond -> live: %.2f s" % took)
        self.assertTrue(ok, "respond label not applied: %r\n%s"
                        % (curl(gw_port, HOST), self.service_logs(service)))

        # Service removed -> route gone (the port closes: it was the only site on it).
        self.d.docker("service", "rm", backend)

        def gone():
            status, _, body = curl(gw_port, HOST)
            return status is None or (status in (200, 404) and body == b"")
        ok, took = wait_for(gone, DEADLINE, interval=0.1)
        log("service rm -> route gone: %.2f s (%r)" % (took, curl(gw_port, HOST)[:2]))
        self.assertTrue(ok, "route still served after service rm: %r\n%s"
                        % (curl(gw_port, HOST), self.service_logs(service)))

    # -- steps -------------------------------------------------------------------------------

    def ensure_base_image(self):
        cache = os.environ.get("HSP_DEPLOY_IMAGE_CACHE")
        state = os.environ.get("HSP_DOCKERD_STATE")
        if not cache and state:
            cache = os.path.join(os.path.dirname(os.path.abspath(state)), "deploy-image-cache")
        t0 = time.monotonic()

        def docker(*args):
            return self.d.docker(*args, timeout=600)
        base_image.ensure(docker, cache)
        log("base image ready: %.0f s" % (time.monotonic() - t0))

    def build_image(self):
        argv = [dockerd.DOCKER_CLI, "-H", self.d.host, "build", "--network", "host",
                "-f", os.path.join(DEPLOY, "Dockerfile"), "-t", IMAGE]
        if os.environ.get("HSP_JOBS"):
            argv += ["--build-arg", "HSP_JOBS=" + os.environ["HSP_JOBS"]]
        argv.append(REPO)
        env = self.d.env()
        env["DOCKER_BUILDKIT"] = "0"  # the classic builder: no BuildKit in Debian's 20.10
        out = os.path.join(self.d.dir, "deploy-build.log")
        t0 = time.monotonic()
        with open(out, "wb") as f:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f,
                                 stderr=subprocess.STDOUT, env=env)
            try:
                rc = p.wait(timeout=BUILD_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                rc = "timeout"
        took = time.monotonic() - t0
        with open(out, errors="replace") as f:
            lines = f.read().splitlines()
        steps = [line for line in lines if line.startswith("Step ")]
        log("docker build: %.0f s, %d steps, rc %s" % (took, len(steps), rc))
        self.assertEqual(rc, 0, "docker build failed:\n" + "\n".join(lines[-40:]))

    def check_image(self):
        size = int(self.d.docker("image", "inspect", "--format", "{{.Size}}", IMAGE))
        log("image %s: %.1f MB" % (IMAGE, size / 1e6))

        def run(*cmd):
            return self.d.docker("run", "--rm", "--network", "none", "--entrypoint", cmd[0],
                                 IMAGE, *cmd[1:], check=False)
        ldd = run("ldd", "/usr/local/bin/hsp-gateway")
        log("ldd in the image:\n" + ldd.rstrip())
        self.assertIn("libc.so.6", ldd)
        self.assertNotIn("not found", ldd)
        tools = run("sh", "-c", "for t in cc gcc g++ c++ cmake ninja curl wget; do "
                                "command -v $t; done; true")
        self.assertEqual(tools.strip(), "", "build tools in the runtime image")
        log("hsp-gateway version: " + self.d.docker("run", "--rm", "--network", "none", IMAGE,
                                                  "version").strip())
        config = self.d.inspect(IMAGE)[0]["Config"]
        self.assertEqual(config["Entrypoint"], ["hsp-gateway"])
        self.assertEqual(config["Cmd"], ["run", "--docker"])
        self.assertEqual(config["Healthcheck"]["Test"], ["CMD", "hsp-gateway", "health"])
        self.assertIn("HSP_DATA_DIR=/data", config["Env"])
        self.assertIn("HSP_HEALTH_LISTEN=127.0.0.1:2020", config["Env"])
        self.assertEqual(sorted(config["Volumes"]), ["/config", "/data"])
        self.assertEqual(sorted(config["ExposedPorts"]), ["443/tcp", "443/udp", "80/tcp"])
        self.assertLess(size, MAX_IMAGE_MB * 1e6, "runtime image larger than %d MB"
                        % MAX_IMAGE_MB)

    def backend_service(self, gw_port, backend_port):
        """busybox httpd on the host network, on 127.0.0.1:backend_port, with the labels of a
        site on the gateway's 127.0.0.1:gw_port."""
        page = BODY.decode().rstrip("\n")
        script = ("/bin/busybox mkdir -p /tmp/www && echo '%s' > /tmp/www/index.html && "
                  "exec /bin/busybox httpd -f -p 127.0.0.1:%d -h /tmp/www" % (page, backend_port))
        return {
            "image": self.image_id(dockerd.IMAGE),
            "command": ["/bin/sh", "-c", script],
            "networks": ["hostnet"],
            "stop_grace_period": "1s",
            "deploy": {"labels": {
                "caddy": "http://%s:%d" % (HOST, gw_port),
                "caddy.bind": "127.0.0.1",
                "caddy.reverse_proxy": "127.0.0.1:%d" % backend_port,
            }},
        }

    def on_host_network(self, doc, svc, health_port, socket):
        """The changes every gateway service gets (docstring): host network, no ports, the
        private daemon's socket if it mounts one, its own health port."""
        svc.pop("ports", None)
        svc["networks"] = ["hostnet"]
        sockets = [v for v in svc.get("volumes", [])
                   if isinstance(v, dict) and v.get("target") == "/var/run/docker.sock"]
        self.assertEqual(len(sockets), 1 if socket else 0, svc.get("volumes"))
        for mount in sockets:
            mount["source"] = self.d.sock
        svc["environment"]["HSP_HEALTH_LISTEN"] = "127.0.0.1:%d" % health_port
        doc["networks"]["hostnet"] = {"external": True, "name": "host"}

    def replace_example_backend(self, doc, gw_port, backend_port):
        self.assertIn("whoami", doc["services"])
        del doc["services"]["whoami"]
        doc["services"]["backend"] = self.backend_service(gw_port, backend_port)

    def write_copy(self, doc, name):
        path = os.path.join(self.d.dir, name)
        with open(path, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        return path

    def stack_copy(self, gw_port, backend_port, health_port):
        """deploy/stack.yml with the changes the docstring lists; -> path of the copy."""
        doc = load(os.path.join(DEPLOY, "stack.yml"))
        self.assertEqual(sorted(doc["services"]), ["gateway", "whoami"])
        self.on_host_network(doc, doc["services"]["gateway"], health_port, socket=True)
        self.replace_example_backend(doc, gw_port, backend_port)
        return self.write_copy(doc, "deploy-stack.yml")

    def multinode_copy(self, gw_port, backend_port, ctl_health, srv_health, admin_port):
        """deploy/stack-multinode.yml with the changes the docstring lists."""
        doc = load(os.path.join(DEPLOY, "stack-multinode.yml"))
        self.assertEqual(sorted(doc["services"]), ["controller", "server", "whoami"])
        ctl, srv = doc["services"]["controller"], doc["services"]["server"]
        self.on_host_network(doc, ctl, ctl_health, socket=True)
        self.on_host_network(doc, srv, srv_health, socket=False)
        for svc in (ctl, srv):
            svc["environment"]["CADDY_CONTROLLER_NETWORK"] = "127.0.0.0/8"
        srv["environment"]["HSP_ADMIN_LISTEN"] = "127.0.0.1:%d" % admin_port
        ctl["environment"]["HSP_CONTROLLER_SERVERS"] = "127.0.0.1:%d" % admin_port
        self.replace_example_backend(doc, gw_port, backend_port)
        return self.write_copy(doc, "deploy-stack-multinode.yml")

    def image_id(self, ref):
        return self.d.docker("image", "inspect", "--format", "{{.Id}}", ref).strip()

    def install(self, stack_file):
        # As a user runs it (as root, DOCKER unset): `docker` found on PATH, with the directory
        # of Debian's client first (a newer client may be installed elsewhere on a dev machine).
        env = self.d.env()
        env.pop("DOCKER", None)
        env["PATH"] = os.path.dirname(dockerd.DOCKER_CLI) + os.pathsep + env.get("PATH", "")
        rc, out, err = harness.run_cmd([os.path.join(DEPLOY, "install.sh"), "--stack",
                                        stack_file, "--name", STACK, "--image",
                                        self.image_id(IMAGE), "--resolve-image", "never"],
                                       timeout=120, env=env)
        log("install.sh: rc %d\n%s%s" % (rc, out, err))
        self.assertEqual(rc, 0, "install.sh failed")

    def service_logs(self, service):
        return self.d.docker("service", "logs", "--raw", "--tail", "40", STACK + "_" + service,
                             check=False, timeout=30)

    def cleanup_stack(self):
        """Best effort: the stack, its volumes, the secret."""
        d = self.d
        d.docker("stack", "rm", STACK, check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not d.docker("ps", "-aq", "--filter", "label=com.docker.stack.namespace=" + STACK,
                            check=False).split():
                break
            time.sleep(0.5)
        volumes = d.docker("volume", "ls", "-q", "--filter",
                           "label=com.docker.stack.namespace=" + STACK, check=False).split()
        if volumes:
            d.docker("volume", "rm", *volumes, check=False)
        d.docker("secret", "rm", SECRET, check=False)


if __name__ == "__main__":
    harness.main()

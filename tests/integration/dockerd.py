"""A private dockerd in Swarm mode for the docker integration tests (Python 3 stdlib only).

Never the machine's own daemon: everything lives under a short mkdtemp directory in /tmp
(unix socket paths are limited to 108 bytes): docker.sock, data/ (data root), exec/ (exec root),
docker.pid, dockerd.log. Needs root (CI is root) and Debian's docker.io (dockerd 20.10, API 1.41)
with its own client /usr/bin/docker (a newer /usr/local/bin/docker may exist on dev machines).

  - No iptables rules and no default bridge (--iptables=false --bridge=none). `swarm init` still
    creates the host bridge docker_gwbridge; teardown deletes it if this daemon created it.
  - Swarm listens on 127.0.0.1 only: --listen-addr 127.0.0.1:<free port> and a VXLAN
    --data-path-port chosen at run time (1024-49151, Docker's limit) so runs do not fight over
    2377/4789. The gossip port 7946 has no flag in 20.10, so only one such daemon per machine:
    the CTest docker tests share one daemon and hold a RESOURCE_LOCK.
  - A 2 MB image `hsp-bb:latest` is made by `docker import` of Debian busybox-static's
    /bin/busybox, so tasks and containers really run (nothing is ever pulled).
  - Nothing here sends traffic to a container/task/overlay address; tests read those addresses
    as text only.

CTest fixture use:
    python3 dockerd.py setup STATE_FILE     # starts the daemon, writes STATE_FILE (JSON)
    python3 dockerd.py cleanup STATE_FILE   # stops it (even a half-started one) and removes all
Tests call attach(): with HSP_DOCKERD_STATE naming an existing state file they use that daemon;
without it (a script run by hand) they start a private one and tear it down at exit.
"""

import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

DOCKER_CLI = os.environ.get("HSP_DOCKER_CLI", "/usr/bin/docker")
DOCKERD = os.environ.get("HSP_DOCKERD", "/usr/sbin/dockerd")
IMAGE = "hsp-bb:latest"
# A registry that cannot exist: replicas-0 services name it and nothing is ever pulled.
NO_IMAGE = "127.0.0.1:1/none:latest"
BUSYBOX = "/bin/busybox"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0


def log(*args):
    print("[dockerd]", *args, file=sys.stderr, flush=True)


class DockerError(RuntimeError):
    pass


def _free_tcp_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _free_udp_port():
    # Docker only accepts a data-path port in 1024-49151; stay clear of 2024 and of the ports
    # that the harness hands out to gateways (10000 up to the ephemeral range).
    for _ in range(200):
        port = random.randint(5000, 9900)
        if port == 2024:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise DockerError("no free UDP port for --data-path-port")


def _link_exists(name):
    return os.path.exists("/sys/class/net/" + name)


def _pids_mentioning(path):
    """Processes whose command line contains our private directory: dockerd, its containerd
    and the containerd shims of our containers. Matched on our unique mkdtemp path, so another
    daemon's processes are never touched."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if path in cmd:
            pids.append(int(entry))
    return pids


def _mounts_under(path):
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                mnt = line.split()[1].replace("\\040", " ")
                if mnt == path or mnt.startswith(path + "/"):
                    out.append(mnt)
    except OSError:
        pass
    return out


class Dockerd:
    def __init__(self, directory=None, state=None):
        state = state or {}
        self.dir = directory or state.get("dir")
        self.pid = state.get("pid")
        self.swarm_port = state.get("swarm_port")
        self.data_path_port = state.get("data_path_port")
        self.gwbridge_ours = state.get("gwbridge_ours", False)
        self.state_file = state.get("state_file")

    # -- paths and client -------------------------------------------------------------------

    @property
    def sock(self):
        return os.path.join(self.dir, "docker.sock")

    @property
    def host(self):
        """The DOCKER_HOST value (also a valid --docker-sockets entry)."""
        return "unix://" + self.sock

    def env(self, base=None):
        env = dict(base if base is not None else os.environ)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_CONFIG"] = os.path.join(self.dir, "cli-config")  # never ~/.docker
        return env

    def docker(self, *args, check=True, timeout=CLI_TIMEOUT, input=None):
        """Runs Debian's docker client against this daemon; returns stdout (text)."""
        argv = [DOCKER_CLI, "-H", self.host] + [str(a) for a in args]
        try:
            p = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                               env=self.env())
        except subprocess.TimeoutExpired:
            raise DockerError("timed out after %.0fs: %s" % (timeout, " ".join(argv)))
        out = p.stdout.decode("utf-8", "replace")
        if check and p.returncode != 0:
            raise DockerError("%s -> rc %d\n%s%s" % (" ".join(argv), p.returncode, out,
                                                    p.stderr.decode("utf-8", "replace")))
        return out

    def inspect(self, *ids):
        return json.loads(self.docker("inspect", *ids))

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.dir, "dockerd.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError as e:
            return "(no dockerd.log: %s)" % e

    def alive(self):
        if not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        try:  # a zombie is not alive
            with open("/proc/%d/stat" % self.pid) as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    # -- lifecycle ----------------------------------------------------------------------------

    def _preflight(self):
        problems = []
        if os.geteuid() != 0:
            problems.append("not root (dockerd needs root; CI runs as root)")
        for path in (DOCKERD, DOCKER_CLI, BUSYBOX):
            if not os.access(path, os.X_OK):
                problems.append("%s missing (scripts/install-deps.sh: docker.io, "
                                "busybox-static)" % path)
        if problems:
            raise DockerError("cannot start a private dockerd: " + "; ".join(problems))

    def start_daemon(self):
        """Starts dockerd on self.dir (a restart reuses the same data root and swarm state)."""
        for sub in ("data", "exec"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        try:
            os.unlink(self.sock)
        except FileNotFoundError:
            pass
        logf = open(os.path.join(self.dir, "dockerd.log"), "ab")
        argv = [DOCKERD, "--host", self.host, "--data-root", os.path.join(self.dir, "data"),
                "--exec-root", os.path.join(self.dir, "exec"),
                "--pidfile", os.path.join(self.dir, "docker.pid"),
                "--iptables=false", "--ip-masq=false", "--bridge=none",
                "--userland-proxy=false"]
        # Swarm would otherwise ask a registry for every tagged image a service names (to pin
        # its digest) and pull it before each task starts, even when it is local: nothing may
        # leave loopback, and every image here is local (moby's own test daemons set it too).
        env = self.env()
        env["DOCKER_SERVICE_PREFER_OFFLINE_IMAGE"] = "1"
        # Own session: the daemon outlives the CTest fixture-setup process that starts it;
        # teardown kills it by pid.
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             start_new_session=True, env=env)
        logf.close()
        self.pid = p.pid
        self._popen = p
        self._save()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise DockerError("dockerd exited with rc %s at start:\n%s"
                                  % (p.returncode, self.log_tail()))
            if os.path.exists(self.sock):
                try:
                    self.docker("version", "--format", "{{.Server.APIVersion}}", timeout=5)
                    return
                except DockerError:
                    pass
            time.sleep(0.2)
        raise DockerError("dockerd not answering on %s within %.0fs:\n%s"
                          % (self.sock, START_TIMEOUT, self.log_tail()))

    def swarm_state(self):
        return self.docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()

    def wait_swarm_active(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.swarm_state()
            if state == "active":
                # After a restart the manager needs a moment before it accepts service calls.
                try:
                    self.docker("service", "ls", "-q", timeout=10)
                    return
                except DockerError:
                    pass
            time.sleep(0.2)
        raise DockerError("swarm not active within %.0fs (state %r):\n%s"
                          % (timeout, state, self.log_tail()))

    def start(self):
        self._preflight()
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="hspd.", dir="/tmp")
        # swarm init creates docker_gwbridge asynchronously: remember whether it was there
        # before, and delete it at teardown only if it was not.
        self.gwbridge_ours = not _link_exists("docker_gwbridge")
        self.start_daemon()
        self.swarm_port = _free_tcp_port()
        self.data_path_port = _free_udp_port()
        self.docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr",
                    "127.0.0.1:%d" % self.swarm_port, "--data-path-port", self.data_path_port)
        self._save()
        self.wait_swarm_active()
        self._make_image()
        log("dockerd pid %d on %s, swarm on 127.0.0.1:%d" % (self.pid, self.sock,
                                                            self.swarm_port))
        return self

    def _make_image(self):
        root = os.path.join(self.dir, "rootfs")
        os.makedirs(os.path.join(root, "bin"), exist_ok=True)
        os.makedirs(os.path.join(root, "tmp"), exist_ok=True)
        shutil.copy(BUSYBOX, os.path.join(root, "bin", "busybox"))
        for applet in ("sh", "sleep", "cat", "true"):
            link = os.path.join(root, "bin", applet)
            if not os.path.lexists(link):
                os.symlink("busybox", link)
        tar = os.path.join(self.dir, "rootfs.tar")
        subprocess.run(["tar", "-C", root, "-cf", tar, "."], check=True, timeout=60)
        # PID 1 ignores signals it has no handler for, so a plain `sleep` would make every stop
        # (and a dockerd restart with running tasks) wait out Docker's 10 s grace period; the
        # shell exits on SIGTERM. (`docker import -c` does not accept STOPSIGNAL.)
        cmd = json.dumps(["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"])
        self.docker("import", "-c", "CMD " + cmd, tar, IMAGE)

    def stop_daemon(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """SIGTERM (dockerd stops its containers and containerd), bounded wait, then SIGKILL.
        Returns True if it stopped within the timeout."""
        if not self.pid:
            return True
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        popen = getattr(self, "_popen", None)
        while time.monotonic() < deadline:
            if popen is not None and popen.poll() is not None:
                return True
            if popen is None and not self.alive():
                return True
            time.sleep(0.1)
        log("dockerd %d did not stop within %.0fs: SIGKILL" % (self.pid, timeout))
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if popen is not None:
            popen.wait(timeout=10)
        return False

    def restart(self):
        """Stops and starts the daemon on the same data root (swarm state and services kept)."""
        self.stop_daemon()
        self.start_daemon()
        self.wait_swarm_active()

    def teardown(self):
        """Best effort, bounded, never raises: the daemon, containerd, shims, mounts, the
        docker_gwbridge link if ours, the directory."""
        if not self.dir:
            return
        errors = []
        if self.alive():
            for args in (("swarm", "leave", "--force"), ("network", "rm", "docker_gwbridge")):
                try:
                    self.docker(*args, timeout=30, check=False)
                except DockerError as e:
                    errors.append(str(e))
            self.stop_daemon()
        # Anything left that carries our directory in its command line (containerd after a
        # SIGKILLed dockerd, shims): kill by pid.
        for _ in range(3):
            pids = _pids_mentioning(self.dir)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        for mnt in sorted(_mounts_under(self.dir), key=len, reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=30)
        if self.gwbridge_ours and _link_exists("docker_gwbridge"):
            subprocess.run(["ip", "link", "del", "docker_gwbridge"], capture_output=True,
                           timeout=30)
        left = _mounts_under(self.dir)
        if left:
            errors.append("mounts left under %s: %s" % (self.dir, left))
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.state_file:
            try:
                os.unlink(self.state_file)
            except FileNotFoundError:
                pass
        for e in errors:
            log("teardown:", e)
        self.dir = None

    def _save(self):
        if not self.state_file:
            return
        state = {"dir": self.dir, "pid": self.pid, "swarm_port": self.swarm_port,
                 "data_path_port": self.data_path_port, "gwbridge_ours": self.gwbridge_ours}
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_file)

    # -- helpers for tests --------------------------------------------------------------------

    def wait_tasks_running(self, service, count, timeout=60.0):
        """Waits until `count` tasks of `service` are running; returns their inspect objects."""
        deadline = time.monotonic() + timeout
        tasks = []
        while time.monotonic() < deadline:
            ids = self.docker("service", "ps", "-q", "--filter", "desired-state=running",
                              service).split()
            tasks = self.inspect(*ids) if ids else []
            running = [t for t in tasks if t["Status"]["State"] == "running"]
            if len(running) == count:
                return running
            failed = [t["Status"].get("Err") for t in tasks if t["Status"].get("Err")]
            if failed:
                raise DockerError("tasks of %s failed: %s" % (service, failed))
            time.sleep(0.2)
        raise DockerError("service %s: %d running tasks wanted, states %s after %.0fs"
                          % (service, count, [t["Status"]["State"] for t in tasks], timeout))

    def task_addresses(self, service, network):
        """IPs (prefix stripped) of the running tasks of `service` on `network` (by name)."""
        out = []
        for t in self.wait_tasks_running(service, len(self.docker(
                "service", "ps", "-q", "--filter", "desired-state=running", service).split())):
            for att in t.get("NetworksAttachments") or []:
                if att["Network"]["Spec"]["Name"] == network:
                    out += [a.split("/")[0] for a in att.get("Addresses") or []]
        return out

    def wipe(self):
        """Removes every service, container and non-predefined network (a test's leftovers)."""
        services = self.docker("service", "ls", "-q").split()
        if services:
            self.docker("service", "rm", *services, check=False)
        containers = self.docker("ps", "-aq").split()
        if containers:
            self.docker("rm", "-f", *containers, check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            nets = [n for n in self.docker("network", "ls", "--format",
                                           "{{.Name}} {{.Driver}}").splitlines()
                    if n.split()[0] not in ("bridge", "host", "none", "ingress",
                                            "docker_gwbridge")]
            if not nets:
                return
            self.docker("network", "rm", *[n.split()[0] for n in nets], check=False)
            time.sleep(0.5)


def attach():
    """The daemon for a test: the CTest fixture's (HSP_DOCKERD_STATE) or a private one started
    now and torn down at exit. Fails loudly (DockerError) if none can run."""
    path = os.environ.get("HSP_DOCKERD_STATE")
    if path:
        if not os.path.exists(path):
            raise DockerError("HSP_DOCKERD_STATE=%s does not exist: the docker_setup fixture "
                              "failed or did not run (see its output)" % path)
        with open(path) as f:
            state = json.load(f)
        state["state_file"] = path
        d = Dockerd(state=state)
        if not d.alive():
            # A test killed while it had the daemon stopped (docker_restart): start it again on
            # the same data root.
            log("the fixture's dockerd (pid %s) is not running; restarting it" % d.pid)
            d.start_daemon()
        d.wait_swarm_active()
        d.wipe()
        return d
    d = Dockerd()
    atexit.register(d.teardown)
    # harness.py turns SIGTERM into sys.exit, which runs atexit; standalone runs get it here.
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    try:
        return d.start()
    except Exception:
        d.teardown()
        raise


def main(argv):
    if len(argv) != 3 or argv[1] not in ("setup", "cleanup"):
        print("usage: dockerd.py setup|cleanup STATE_FILE", file=sys.stderr)
        return 2
    path = os.path.abspath(argv[2])
    if argv[1] == "setup":
        if os.path.exists(path):  # a previous run that never cleaned up
            main([argv[0], "cleanup", path])
        d = Dockerd(state={"state_file": path})
        try:
            d.start()
        except Exception as e:
            log("setup failed:", e)
            d.teardown()
            return 1
        return 0
    if not os.path.exists(path):
        log("no state file %s: nothing to clean up" % path)
        return 0
    with open(path) as f:
        state = json.load(f)
    state["state_file"] = path
    Dockerd(state=state).teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Test harness for the integration, differential and end-to-end tests (Python 3 stdlib only).

Everything here runs on 127.0.0.1 with ports chosen at run time:
  - free_port(): a bindable port below the kernel's ephemeral range (so no outgoing
    connection can grab it before the gateway binds it). A race with another test picking the
    same port is still possible but unlikely; a test that loses it fails loudly at start-up.
  - Proc / Gateway: child processes with captured output, bounded waits and guaranteed
    cleanup (atexit kill, and PR_SET_PDEATHSIG so a SIGKILLed test still takes its children
    down).
  - UpstreamServer and handlers: real upstreams on threads (echo, slow, big body, SSE,
    WebSocket, reset-after-request), each counting accepted connections and recording requests.
  - Client: a raw-socket HTTP/1.1 client for exact control over what goes on the wire.

The gateway under test is $HSP_GATEWAY. If its basename is `caddy` (or HSP_GATEWAY_KIND=caddy)
it is run as Caddy (`caddy run --adapter caddyfile`, HOME/XDG dirs in a temp dir, admin off,
auto_https off, skip_install_trust); this is how the tests were first written, and how the
differential test runs the reference.
"""

import atexit
import ctypes
import hashlib
import json
import os
import base64
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

LOOPBACK = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Ports and readiness.

_handed_out = set()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A port for a gateway to listen on, chosen below the kernel's ephemeral range: a port the
    kernel hands out for bind(:0) could meanwhile be taken as the source port of some other
    test's outgoing connection, and the gateway's bind would then fail. Checked bindable; never
    the same port twice in one process; never 2024 (taken on the dev machine)."""
    lo, _ = _ephemeral_range()
    lo = max(lo, 12000)
    for _ in range(200):
        port = random.randint(10000, lo - 1)
        if port == 2024 or port in _handed_out:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            continue
        finally:
            s.close()
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found below the ephemeral range")


def closed_port():
    """A port with nothing listening (connects are refused)."""
    return free_port()


def can_connect(port, host=LOOPBACK, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port, timeout=15.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited (rc=%s) before port %d was ready:\n%s"
                               % (proc.poll(), port, proc.output_tail()))
        if can_connect(port):
            return
        time.sleep(0.05)
    raise RuntimeError("port %d not ready within %.0fs%s" % (
        port, timeout, ("\n" + proc.output_tail()) if proc else ""))


def wait_until(pred, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


# ---------------------------------------------------------------------------------------------
# Child processes.

_live_procs = []
_libc = None


def _set_pdeathsig():
    # Runs in the child between fork and exec: die with the parent thread.
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _kill_all():
    for p in list(_live_procs):
        try:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait(timeout=5)
        except Exception:
            pass


atexit.register(_kill_all)


def _on_term(signum, frame):
    _kill_all()
    sys.exit(128 + signum)


# ctest sends SIGTERM on timeout on some platforms; make sure children go with us.
signal.signal(signal.SIGTERM, _on_term)


def parse_json_lines(lines):
    """The JSON objects among `lines` (log lines); anything else is skipped."""
    out = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def read_json_lines(path):
    """The JSON objects of a log file (Caddy's access log, say); [] while it does not exist."""
    try:
        with open(path) as f:
            return parse_json_lines(f)
    except FileNotFoundError:
        return []


class Proc:
    """A child process whose stdout/stderr are read line by line on threads."""

    def __init__(self, argv, env=None, cwd=None):
        self.argv = argv
        self.lines = {"stdout": [], "stderr": []}
        self.cond = threading.Condition()
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env, cwd=cwd,
                                      preexec_fn=_set_pdeathsig)
        _live_procs.append(self)
        self.pid = self.popen.pid
        self._threads = []
        for name in ("stdout", "stderr"):
            t = threading.Thread(target=self._reader, args=(name,), daemon=True)
            t.start()
            self._threads.append(t)

    def _reader(self, name):
        stream = getattr(self.popen, name)
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines[name].append(line)
                self.cond.notify_all()
        stream.close()

    def poll(self):
        return self.popen.poll()

    def all_lines(self, stream=None):
        with self.cond:
            if stream:
                return list(self.lines[stream])
            return list(self.lines["stdout"]) + list(self.lines["stderr"])

    def json_lines(self, stream=None):
        return parse_json_lines(self.all_lines(stream))

    def wait_line(self, pred, timeout=10.0):
        """Waits for an output line (either stream) for which pred(line) is true."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                lines = self.lines["stdout"] + self.lines["stderr"]
                for line in lines:
                    if pred(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(min(remaining, 0.1))

    def output_tail(self, n=40):
        return "\n".join(self.all_lines()[-n:])

    def send_signal(self, sig):
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signals, waits at most `timeout`, then kills. Returns the exit code (None if killed)."""
        rc = None
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            rc = self.wait(timeout)
            if rc is None:
                self.popen.kill()
                self.popen.wait(timeout=5)
                rc = None
        else:
            rc = self.popen.returncode
        for t in self._threads:
            t.join(timeout=2)
        if self in _live_procs:
            _live_procs.remove(self)
        return rc


def run_cmd(argv, timeout=30, env=None):
    """Runs a command to completion (bounded); returns (rc, stdout, stderr) as text."""
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       env=env, preexec_fn=_set_pdeathsig)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# The gateway under test.

def gateway_binary():
    path = os.environ.get("HSP_GATEWAY")
    if not path:
        raise RuntimeError("set HSP_GATEWAY to the gateway binary (ctest does)")
    return path


def gateway_kind(path=None):
    kind = os.environ.get("HSP_GATEWAY_KIND")
    if kind:
        return kind
    path = path or gateway_binary()
    return "caddy" if os.path.basename(path) == "caddy" else "hsp"


def caddy_binary():
    return os.environ.get("CADDY") or shutil.which("caddy") or "/usr/bin/caddy"


def render(text, subs):
    for k, v in subs.items():
        text = text.replace("__%s__" % k, str(v))
    return text


class Gateway:
    """One gateway process (hsp-gateway or caddy) running a Caddyfile.

    `config` is the Caddyfile without a global options block; `global_options` are extra lines
    for it. Every site should say `bind 127.0.0.1`. `ports` are the ports to wait for.
    """

    def __init__(self, config, ports, global_options=(), binary=None, kind=None, threads=None,
                 name="gw", files=None, caddy_auto_https_off=True, admin="off", extra_args=()):
        self.binary = binary or gateway_binary()
        self.extra_args = list(extra_args)  # hsp-gateway only: more `run` flags
        self.kind = kind or gateway_kind(self.binary)
        # Caddy 2.6 manages no certificate at all under `auto_https off` (not even for
        # `tls internal`) and sends no HTTP->HTTPS redirect: tests of those pass False, and then
        # must set http_port/https_port themselves.
        self.caddy_auto_https_off = caddy_auto_https_off
        # `admin` global option; Caddy ignores SIGHUP, so tests that reload Caddy give it an
        # admin endpoint (e.g. a unix socket in self.tmp) and use reload_caddy().
        self.admin = admin
        self.ports = list(ports)
        self.global_options = list(global_options)
        # --threads: 2 by default (both cores, and per-thread pools/listeners exercised);
        # HSP_THREADS=N overrides, HSP_THREADS=0 passes no flag (the gateway's default).
        self.threads = threads if threads is not None else int(os.environ.get("HSP_THREADS", 2))
        self.tmp = tempfile.mkdtemp(prefix="hsp-it-%s-" % name)
        self.config_path = os.path.join(self.tmp, "Caddyfile")
        self.proc = None
        for rel, text in (files or {}).items():  # extra files next to the Caddyfile (imports)
            path = os.path.join(self.tmp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        self.write_config(config)

    def full_config(self, config):
        opts = ["admin %s" % self.admin, "skip_install_trust"]
        if self.kind == "caddy" and self.caddy_auto_https_off:
            opts.append("auto_https off")
        opts += self.global_options
        return "{\n" + "".join("\t%s\n" % o for o in opts) + "}\n\n" + config

    def write_config(self, config, raw=False):
        text = config if raw else self.full_config(config)
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    def env(self):
        env = dict(os.environ)
        home = os.path.join(self.tmp, "home")
        os.makedirs(home, exist_ok=True)
        env["HOME"] = home
        env["XDG_DATA_HOME"] = os.path.join(home, "data")
        env["XDG_CONFIG_HOME"] = os.path.join(home, "config")
        return env

    def argv(self):
        if self.kind == "caddy":
            return [self.binary, "run", "--config", self.config_path, "--adapter", "caddyfile"]
        argv = [self.binary, "run", "--config", self.config_path]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        return argv + self.extra_args

    def start(self, timeout=15.0):
        self.proc = Proc(self.argv(), env=self.env(), cwd=self.tmp)
        for port in self.ports:
            wait_port(port, timeout=timeout, proc=self.proc)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def local_ca_root(self):
        """The local CA's root certificate under the data directory env() sets (XDG_DATA_HOME)."""
        app = "caddy" if self.kind == "caddy" else "hsp-gateway"
        return os.path.join(self.tmp, "home", "data", app, "pki", "authorities", "local",
                            "root.crt")

    def reload(self, config=None, raw=False):
        if config is not None:
            self.write_config(config, raw=raw)
        self.proc.send_signal(signal.SIGHUP)

    def reload_caddy(self, config, timeout=30):
        """Caddy only: `caddy reload` through the admin endpoint named in the config (the
        `admin` argument); returns once Caddy has applied it. (rc, stdout, stderr)."""
        self.write_config(config)
        return run_cmd([self.binary, "reload", "--config", self.config_path, "--adapter",
                        "caddyfile"], timeout=timeout, env=self.env())

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        rc = self.proc.stop(sig, timeout) if self.proc else None
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc

    def access_logs(self):
        """Access-log entries: JSON lines (stdout or stderr) that carry a `request` object."""
        return [j for j in self.proc.json_lines()
                if isinstance(j.get("request"), dict) and "status" in j
                and not str(j.get("logger", "")).endswith(".error")]

    def vm_hwm_kib(self):
        return proc_status_kib(self.proc.pid, "VmHWM")

    def vm_rss_kib(self):
        return proc_status_kib(self.proc.pid, "VmRSS")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def proc_status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


# ---------------------------------------------------------------------------------------------
# Socket helpers shared by the upstream servers and the client.

class Conn:
    """A socket with a read buffer: head parsing, exact reads, chunked decoding."""

    def __init__(self, sock, timeout=30.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_until(self, delim, limit=4 << 20):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out, self.buf = self.buf[:i + len(delim)], self.buf[i + len(delim):]
                return out
            if len(self.buf) > limit:
                raise ValueError("line too long")
            if not self.fill():
                if not self.buf:
                    return None
                raise ConnectionError("EOF inside a line")

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self.fill():
                raise ConnectionError("EOF after %d of %d bytes" % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_some(self, max_n=65536):
        if not self.buf:
            if not self.fill():
                return b""
        out, self.buf = self.buf[:max_n], self.buf[max_n:]
        return out

    def read_body(self, headers, sink, is_response=False, status=200, method="GET"):
        """Reads a message body framed by `headers`, feeding chunks to sink(bytes)."""
        te = header_get(headers, "transfer-encoding")
        cl = header_get(headers, "content-length")
        if is_response and (method == "HEAD" or status in (204, 304) or 100 <= status < 200):
            return
        if te and "chunked" in te.lower():
            while True:
                line = self.read_until(b"\r\n")
                if line is None:
                    raise ConnectionError("EOF in chunked body")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers
                        t = self.read_until(b"\r\n")
                        if t in (None, b"\r\n"):
                            return
                remaining = size
                while remaining:
                    if not self.buf and not self.fill():
                        raise ConnectionError("EOF in chunk")
                    take = self.buf[:remaining]
                    self.buf = self.buf[len(take):]
                    remaining -= len(take)
                    sink(take)
                self.read_exact(2)
        elif cl is not None:
            remaining = int(cl)
            while remaining:
                if not self.buf and not self.fill():
                    raise ConnectionError("EOF in body, %d bytes missing" % remaining)
                take = self.buf[:remaining]
                self.buf = self.buf[len(take):]
                remaining -= len(take)
                sink(take)
        elif is_response:
            while True:  # close-delimited
                if self.buf:
                    sink(self.buf)
                    self.buf = b""
                try:
                    if not self.fill():
                        return
                except (ConnectionResetError, socket.timeout):
                    return

    def sendall(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def header_get(headers, name, default=None):
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return default


def header_all(headers, name):
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


def parse_head(raw):
    lines = raw.decode("latin-1").split("\r\n")
    first = lines[0]
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return first, headers


# ---------------------------------------------------------------------------------------------
# Upstream servers.

class UpstreamRequest:
    def __init__(self, conn, method, target, version, headers, conn_id, server):
        self.conn = conn
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.conn_id = conn_id
        self.server = server
        self.body_len = 0
        self.body_sha256 = None
        self.body = b""
        parsed = urllib.parse.urlsplit(target)
        self.path = parsed.path
        self.query_list = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
        self.query = dict(self.query_list)

    def header(self, name, default=None):
        return header_get(self.headers, name, default)

    def read_body(self, keep=64 << 10, on_chunk=None):
        h = hashlib.sha256()
        parts = []
        kept = [0]

        def sink(b):
            h.update(b)
            self.body_len += len(b)
            if kept[0] < keep:
                parts.append(b[:keep - kept[0]])
                kept[0] += min(len(b), keep - kept[0])
            if on_chunk:
                on_chunk(b)
        self.conn.read_body(self.headers, sink)
        self.body_sha256 = h.hexdigest()
        self.body = b"".join(parts)
        self.server.record(self)  # before answering, so a client that got the answer sees it

    def wants_close(self):
        c = (self.header("connection") or "").lower()
        return "close" in c or self.version == "HTTP/1.0"

    def send_response(self, status, headers, body=b"", reason=None):
        reason = reason or REASONS.get(status, "Status")
        out = ["HTTP/1.1 %d %s" % (status, reason)]
        has_len = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers)
        for k, v in headers:
            out.append("%s: %s" % (k, v))
        if not has_len:
            out.append("Content-Length: %d" % len(body))
        self.conn.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)

    def as_dict(self):
        return {"server": self.server.name, "conn": self.conn_id, "method": self.method,
                "target": self.target, "version": self.version,
                "headers": [[k, v] for k, v in self.headers], "body_len": self.body_len,
                "body_sha256": self.body_sha256}


REASONS = {101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content",
           301: "Moved Permanently", 302: "Found", 304: "Not Modified", 400: "Bad Request",
           403: "Forbidden", 404: "Not Found", 413: "Request Entity Too Large",
           418: "I'm a teapot", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


class UpstreamServer:
    """A threaded HTTP/1.1 server on 127.0.0.1:0 with keep-alive.

    handler(req) must read the body (req.read_body()) and answer (req.send_response ...). It
    returns "keep" to read another request on the connection, or "close"; it may take the
    socket over (WebSocket, SSE) and return "close" when done.
    """

    def __init__(self, handler, name="up", idle_timeout=None):
        self.handler = handler
        self.name = name
        self.idle_timeout = idle_timeout  # close a keep-alive conn idle this long (seconds)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.addr = "%s:%d" % (LOOPBACK, self.port)
        self.lock = threading.Lock()
        self.accepted = 0
        self.requests = []  # UpstreamRequest.as_dict() of every completed request
        self.started = 0    # request heads received (before the handler ran)
        self.conns = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                conn_id = self.accepted
                self.conns.append(s)
            threading.Thread(target=self._serve, args=(s, conn_id), daemon=True).start()

    def _serve(self, s, conn_id):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(s, timeout=60)
        try:
            first_request = True
            while not self.stopping.is_set():
                if self.idle_timeout and not first_request and not conn.buf:
                    r, _, _ = select.select([s], [], [], self.idle_timeout)
                    if not r:
                        return  # idle: close quietly, as servers with keep-alive timeouts do
                first_request = False
                head = conn.read_until(b"\r\n\r\n")
                if head is None:
                    return
                first, headers = parse_head(head)
                parts = first.split(" ")
                if len(parts) != 3:
                    return
                req = UpstreamRequest(conn, parts[0], parts[1], parts[2], headers, conn_id, self)
                with self.lock:
                    self.started += 1
                result = self.handler(req)
                self.record(req)
                if result != "keep" or req.wants_close():
                    return
        except (OSError, ConnectionError, ValueError):
            return
        finally:
            conn.close()

    def record(self, req):
        if getattr(req, "recorded", False):
            return
        req.recorded = True
        with self.lock:
            self.requests.append(req.as_dict())

    def count(self, method=None):
        with self.lock:
            return sum(1 for r in self.requests if method is None or r["method"] == method)

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


def echo_handler(delay=0.0):
    """Answers JSON describing the request. Query knobs: status=N, delay_ms=N (before the
    response head), pause_ms=N (before reading the body), body=TEXT (plain body instead),
    hdr=Name:Value (extra response field, repeatable), close=1 (Connection: close)."""

    def handle(req):
        pause = float(req.query.get("pause_ms", 0)) / 1000.0
        if pause:
            time.sleep(pause)
        req.read_body()
        d = delay + float(req.query.get("delay_ms", 0)) / 1000.0
        if d:
            time.sleep(d)
        status = int(req.query.get("status", 200))
        close = req.query.get("close") == "1"
        info = req.as_dict()
        info["body_prefix"] = req.body[:256].decode("latin-1")
        if "body" in req.query:
            body = req.query["body"].encode()
            ctype = "text/plain"
        else:
            body = json.dumps(info).encode()
            ctype = "application/json"
        headers = [("Content-Type", ctype), ("X-Upstream", req.server.name),
                   ("X-Debug-Info", "internal"), ("Cache-Control", "max-age=60"),
                   ("X-Multi", "one"), ("X-Multi", "two")]
        # hdr=Name:Value adds response fields (repeatable), e.g. hop-by-hop ones.
        headers += [tuple(v.split(":", 1)) for k, v in req.query_list if k == "hdr" and ":" in v]
        if req.method == "HEAD":
            headers.append(("Content-Length", str(len(body))))
            body = b""
        if status in (204, 304):
            body = b""
        if close:
            headers.append(("Connection", "close"))
        if status == 204:
            # No Content-Length on 204 (RFC 9110 §8.6).
            out = ["HTTP/1.1 204 No Content"] + ["%s: %s" % h for h in headers]
            req.conn.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        else:
            req.send_response(status, headers, body)
        return "close" if close else "keep"
    return handle


def slow_handler(delay):
    return echo_handler(delay=delay)


PATTERN = hashlib.sha256(b"hsp").digest() * 2048  # 64 KiB, deterministic


def pattern_bytes(n):
    """sha256 of the n-byte stream the big-body server sends."""
    h = hashlib.sha256()
    full, rest = divmod(n, len(PATTERN))
    for _ in range(full):
        h.update(PATTERN)
    h.update(PATTERN[:rest])
    return h.hexdigest()


def bigbody_handler():
    """GET /big?n=BYTES[&chunked=1] streams n generated bytes (see pattern_bytes)."""

    def handle(req):
        req.read_body()
        n = int(req.query.get("n", 1 << 20))
        chunked = req.query.get("chunked") == "1"
        head = ["HTTP/1.1 200 OK", "Content-Type: application/octet-stream"]
        head.append("Transfer-Encoding: chunked" if chunked else "Content-Length: %d" % n)
        req.conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        remaining = n
        while remaining:
            part = PATTERN[:min(remaining, len(PATTERN))]
            if chunked:
                req.conn.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
            else:
                req.conn.sendall(part)
            remaining -= len(part)
        if chunked:
            req.conn.sendall(b"0\r\n\r\n")
        return "keep"
    return handle


class SseState:
    def __init__(self):
        self.event_sent = threading.Event()
        self.closed_by_peer = threading.Event()
        self.release = threading.Event()  # set to let the handler finish the stream


def sse_handler(state, content_type="text/event-stream"):
    """Sends one event, then holds the stream open until state.release or the peer closes.
    With another content_type it is a plain slow stream (for flush_interval tests)."""

    def handle(req):
        req.read_body()
        req.conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type.encode() +
                         b"\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
        ev = b"id: 1\ndata: hello\n\n"
        req.conn.sendall(b"%x\r\n" % len(ev) + ev + b"\r\n")
        state.event_sent.set()
        sock = req.conn.sock
        while not state.release.is_set() and not req.server.stopping.is_set():
            r, _, _ = select.select([sock], [], [], 0.1)
            if r:
                try:
                    if not sock.recv(4096):
                        state.closed_by_peer.set()
                        return "close"
                except OSError:
                    state.closed_by_peer.set()
                    return "close"
        try:
            ev = b"data: bye\n\n"
            req.conn.sendall(b"%x\r\n" % len(ev) + ev + b"\r\n0\r\n\r\n")
        except OSError:
            pass
        return "close"
    return handle


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept_key(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_encode(opcode, payload, mask):
    b0 = 0x80 | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
            _xor_mask(payload, key)
        return head + key + masked
    return head + payload


def _xor_mask(payload, key):
    n = len(payload)
    k = int.from_bytes((key * ((n + 3) // 4))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def ws_read_frame(conn):
    """Returns (fin, opcode, payload) of one frame read from a Conn."""
    b0, b1 = conn.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", conn.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", conn.read_exact(8))[0]
    key = conn.read_exact(4) if b1 & 0x80 else None
    payload = conn.read_exact(n)
    if key:
        payload = _xor_mask(payload, key)
    return bool(b0 & 0x80), b0 & 0x0F, payload


def websocket_handler():
    """RFC 6455 server: handshake, then echoes text/binary frames; answers ping and close."""

    def handle(req):
        req.read_body()
        if (req.header("upgrade") or "").lower() == "x-raw-echo":
            # Any other Upgrade: a raw byte tunnel, echoed until the peer half-closes.
            req.conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-raw-echo\r\n"
                             b"Connection: Upgrade\r\n\r\n")
            if req.conn.buf:
                req.conn.sendall(req.conn.buf)
                req.conn.buf = b""
            while True:
                data = req.conn.sock.recv(65536)
                if not data:
                    req.conn.sock.shutdown(socket.SHUT_WR)
                    return "close"
                req.conn.sendall(data)
        key = req.header("sec-websocket-key")
        if (req.header("upgrade") or "").lower() != "websocket" or not key:
            req.send_response(400, [("Content-Type", "text/plain")], b"not a websocket request")
            return "keep"
        req.conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                          % ws_accept_key(key)).encode())
        while True:
            fin, op, payload = ws_read_frame(req.conn)
            if op in (1, 2, 0):
                req.conn.sendall(ws_encode(op, payload, mask=False))
            elif op == 9:
                req.conn.sendall(ws_encode(10, payload, mask=False))
            elif op == 8:
                req.conn.sendall(ws_encode(8, payload[:2], mask=False))
                return "close"
    return handle


def raw_handler(responses):
    """Answers the request at path P with the raw bytes responses[P] (then closes), so tests can
    send malformed or truncated responses."""

    def handle(req):
        req.read_body()
        req.conn.sendall(responses[req.path])
        return "close"
    return handle


def reset_handler():
    """Reads the whole request, then resets the connection (SO_LINGER 0): the request reached
    the upstream but no response came back."""

    def handle(req):
        req.read_body()
        req.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return "close"
    return handle


# ---------------------------------------------------------------------------------------------
# Client.

class Response:
    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name, default=None):
        return header_get(self.headers, name, default)

    def header_all(self, name):
        return header_all(self.headers, name)

    def json(self):
        return json.loads(self.body.decode())

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:200])


class Client:
    """HTTP/1.1 over one TCP connection (keep-alive), raw bytes on the wire."""

    def __init__(self, port, host=LOOPBACK, timeout=15.0):
        self.port = port
        self.host = host
        self.timeout = timeout
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = Conn(sock, timeout=timeout)

    def send_request(self, method, target, headers=(), body=None, host=None,
                     content_length=None, version="HTTP/1.1"):
        hdrs = list(headers)
        if not any(k.lower() == "host" for k, _ in hdrs):
            hdrs.insert(0, ("Host", host or "%s:%d" % (self.host, self.port)))
        if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                        for k, _ in hdrs):
            n = content_length if content_length is not None else len(body)
            hdrs.append(("Content-Length", str(n)))
        head = "%s %s %s\r\n" % (method, target, version)
        head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs) + "\r\n"
        self.conn.sendall(head.encode("latin-1"))
        if body is None:
            return
        if isinstance(body, (bytes, bytearray)):
            if body:
                self.conn.sendall(body)
        else:
            for part in body:  # an iterable of bytes: streamed
                self.conn.sendall(part)

    def read_response(self, method="GET", sink=None):
        while True:
            head = self.conn.read_until(b"\r\n\r\n")
            if head is None:
                raise ConnectionError("connection closed before a response")
            first, headers = parse_head(head)
            version, _, rest = first.partition(" ")
            code, _, reason = rest.partition(" ")
            status = int(code)
            if status == 100:
                continue
            break
        parts = []
        collect = sink or parts.append
        if status != 101:
            self.conn.read_body(headers, collect, is_response=True, status=status, method=method)
        return Response(version, status, reason, headers, b"".join(parts))

    def request(self, method, target, headers=(), body=None, host=None, sink=None, **kw):
        self.send_request(method, target, headers, body, host, **kw)
        return self.read_response(method, sink=sink)

    def is_closed_by_peer(self, timeout=2.0):
        """True if the peer closed the connection (EOF or reset) within timeout."""
        if self.conn.buf:
            return False
        self.conn.sock.settimeout(timeout)
        try:
            data = self.conn.sock.recv(1)
            return data == b""
        except socket.timeout:
            return False
        except OSError:
            return True
        finally:
            self.conn.sock.settimeout(self.timeout)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fetch(port, method="GET", target="/", headers=(), body=None, host=None, timeout=15.0):
    with Client(port, timeout=timeout) as c:
        hdrs = list(headers) + [("Connection", "close")]
        return c.request(method, target, hdrs, body, host)


def ws_handshake(client, target="/ws", host=None):
    key = base64.b64encode(os.urandom(16)).decode()
    resp = client.request("GET", target, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                          ("Sec-WebSocket-Key", key),
                                          ("Sec-WebSocket-Version", "13")], host=host)
    return resp, key


# ---------------------------------------------------------------------------------------------
# Test scaffolding.

class GatewayTest(unittest.TestCase):
    """Base class: tracks upstreams and gateways created in a test and stops them all."""

    def setUp(self):
        self._stoppers = []

    def tearDown(self):
        crashes = []
        for fn in reversed(self._stoppers):
            try:
                rc = fn()
                if isinstance(rc, int) and rc < 0 and rc != -signal.SIGKILL:
                    crashes.append(rc)
            except Exception as e:  # cleanup must not hide the test's own failure
                log("cleanup error:", e)
        if crashes:
            self.fail("gateway died from signal %s during the test" % [-c for c in crashes])

    def upstream(self, handler, name="up"):
        u = UpstreamServer(handler, name)
        self._stoppers.append(u.stop)
        return u

    def gateway(self, config, ports, subs=None, start=True, **kw):
        subs = dict(subs or {})
        gw = Gateway(render(config, subs), ports, **kw)
        self._stoppers.append(gw.stop)
        if start:
            gw.start()
        return gw


def main():
    unittest.main(verbosity=2)


class ChunkedDecoder:
    """Incremental chunked-transfer decoder: feed(raw) returns the payload bytes so far
    decodable; `done` once the last chunk was seen. Identity bodies: use chunked=False."""

    def __init__(self, chunked=True):
        self.chunked = chunked
        self.raw = b""
        self.remaining = 0  # payload bytes left in the current chunk (+2 for its CRLF)
        self.done = False

    def feed(self, data):
        if not self.chunked:
            return data
        self.raw += data
        out = []
        while not self.done:
            if self.remaining > 0:
                take = self.raw[:self.remaining]
                self.raw = self.raw[len(take):]
                self.remaining -= len(take)
                out.append(take)
                if self.remaining:
                    break
                self.crlf = True
            if getattr(self, "crlf", False):
                if len(self.raw) < 2:
                    break
                self.raw = self.raw[2:]
                self.crlf = False
            i = self.raw.find(b"\r\n")
            if i < 0:
                break
            size = int(self.raw[:i].split(b";")[0], 16)
            self.raw = self.raw[i + 2:]
            if size == 0:
                self.done = True
                break
            self.remaining = size
        return b"".join(out)

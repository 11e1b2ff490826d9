"""Pebble, Let's Encrypt's test ACME CA, for the ACME end-to-end tests (Python 3 stdlib only).

Debian's `pebble` and `pebble-challtestsrv` (package pebble 2.4.0), both on 127.0.0.1 only, with
ports chosen at run time:
  - challtestsrv serves DNS only (`-dns01 127.0.0.1:<port>`, its HTTP-01/HTTPS/TLS-ALPN
    responders switched off) and answers every A query with 127.0.0.1 and no AAAA: Pebble's VA
    dials IPv6 first, and a gateway bound to 127.0.0.1 would refuse `[::1]` (stack-notes §4).
  - Pebble resolves through it (`-dnsserver`): without the flag it asks the system resolver,
    which is not on loopback. Its VA validates HTTP-01 on `httpPort` and TLS-ALPN-01 on
    `tlsPort`: the gateway's http_port and https_port, which the test chooses and passes in.
  - Debian ships no test certificates for Pebble's own HTTPS (the WFE): a throwaway CA and a
    leaf for 127.0.0.1 are made with openssl in a temporary directory. `acme_ca_root` is that
    CA (what the gateway must trust to talk to Pebble). The root that signs the certificates
    Pebble issues is another one, random per Pebble start: `issuing_root()` fetches it from the
    management API (`/roots/0`), for `curl --cacert`.
  - env: PEBBLE_VA_NOSLEEP=1 (no random 0-15 s sleep before validating), PEBBLE_AUTHZREUSE=0
    (every order really validates), PEBBLE_WFE_NONCEREJECT=nonce_reject (0 unless a test asks:
    Pebble's default of 5 % makes runs nondeterministic).

Pebble keeps its state in memory: stop() then start() gives the same ports and files but a new
CA and no accounts. Every process is a harness.Proc (killed at exit, and with the test process
by PR_SET_PDEATHSIG); close() stops them and removes the directory.

Optional, for multi-node tests in network namespaces (docker/test_cluster_netns.py): `netns`
runs both processes inside that namespace (`ip netns exec`; 127.0.0.1 is then the namespace's
own loopback, reached from the test by run_in_netns()), and `default_ipv4` is the address
challtestsrv answers for every name (default 127.0.0.1), so that the VA validates there.

By hand: `python3 pebble.py HTTP_PORT TLS_PORT` prints the directory URL and the CA files and
runs until Ctrl-C.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import harness
import ports

PEBBLE = os.environ.get("HSP_PEBBLE", "/usr/bin/pebble")
CHALLTESTSRV = os.environ.get("HSP_PEBBLE_CHALLTESTSRV", "/usr/bin/pebble-challtestsrv")
START_TIMEOUT = 20.0


_CLONE_NEWNET = 0x40000000


def run_in_netns(netns, fn, *args, **kwargs):
    """fn(*args, **kwargs) on a new thread that has entered the network namespace `netns` (a
    name under /run/netns): sockets it creates live there, and stay there when other threads
    use them afterwards. Returns fn's result, or raises its exception."""
    out = {}

    def body():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open("/run/netns/" + netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, "setns(%s): %s" % (netns, os.strerror(err)))
            finally:
                os.close(fd)
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller
            out["error"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _openssl(args, cwd):
    p = subprocess.run(["openssl"] + args, cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s" % (" ".join(args),
                                                       p.stderr.decode("utf-8", "replace")))


def make_ca_and_leaf(directory, cn, prefix=""):
    """A P-256 CA and a leaf for 127.0.0.1 / ::1 / localhost signed by it, as PEM files in
    `directory`: <prefix>ca.pem, <prefix>leaf.pem, <prefix>leaf.key. Returns the three paths.
    Used for Pebble's HTTPS and for the tests' stub ACME servers."""
    ca_key, ca_pem = prefix + "ca.key", prefix + "ca.pem"
    leaf_key, leaf_csr, leaf_pem = prefix + "leaf.key", prefix + "leaf.csr", prefix + "leaf.pem"
    ext = prefix + "leaf.ext"
    _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-keyout", ca_key, "-out", ca_pem, "-days", "30", "-subj", "/CN=" + cn,
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)
    _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", leaf_key, "-out", leaf_csr, "-subj", "/CN=localhost"], directory)
    with open(os.path.join(directory, ext), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
                "extendedKeyUsage=serverAuth\n")
    _openssl(["x509", "-req", "-in", leaf_csr, "-CA", ca_pem, "-CAkey", ca_key,
              "-CAcreateserial", "-out", leaf_pem, "-days", "30", "-extfile", ext], directory)
    return tuple(os.path.join(directory, n) for n in (ca_pem, leaf_pem, leaf_key))


class Pebble:
    """Pebble + challtestsrv on 127.0.0.1. `http_port` / `tls_port`: where Pebble's VA
    connects to validate HTTP-01 / TLS-ALPN-01 (the gateway's ports)."""

    def __init__(self, http_port, tls_port, nonce_reject=0, extra_env=None, name="pebble",
                 netns=None, default_ipv4=harness.LOOPBACK):
        self.http_port = http_port
        self.tls_port = tls_port
        self.netns = netns
        self.default_ipv4 = default_ipv4
        self.nonce_reject = nonce_reject
        self.extra_env = dict(extra_env or {})
        self.tmp = tempfile.mkdtemp(prefix="hsp-%s-" % name)
        self.acme_ca_root, cert, key = make_ca_and_leaf(self.tmp, "hsp test pebble WFE CA",
                                                        prefix="wfe-")
        self.port = harness.free_port()
        self.mgmt_port = harness.free_port()
        self.dns_port = ports.tcp_and_udp_port()
        self.chall_mgmt_port = harness.free_port()
        self.config_path = os.path.join(self.tmp, "pebble-config.json")
        with open(self.config_path, "w") as f:
            json.dump({"pebble": {
                "listenAddress": "127.0.0.1:%d" % self.port,
                "managementListenAddress": "127.0.0.1:%d" % self.mgmt_port,
                "certificate": cert, "privateKey": key,
                "httpPort": http_port, "tlsPort": tls_port,
                "ocspResponderURL": "", "externalAccountBindingRequired": False}}, f)
        self.pebble = None
        self.chall = None
        self.old_logs = []  # output of earlier Pebble runs (before a stop())
        self._root = None
        self.starts = 0

    @property
    def directory_url(self):
        return "https://127.0.0.1:%d/dir" % self.port

    @property
    def issuer_key(self):
        """The storage folder name the gateway uses for this CA (acme/storage.h)."""
        return "127.0.0.1-%d-dir" % self.port

    def env(self):
        env = dict(os.environ)
        env["PEBBLE_VA_NOSLEEP"] = "1"
        env["PEBBLE_WFE_NONCEREJECT"] = str(self.nonce_reject)
        env["PEBBLE_AUTHZREUSE"] = "0"
        env.update(self.extra_env)
        return env

    def _argv(self, argv):
        return (["ip", "netns", "exec", self.netns] + argv) if self.netns else argv

    def _wait_port(self, port, proc):
        if not self.netns:
            harness.wait_port(port, timeout=START_TIMEOUT, proc=proc)
            return
        deadline = time.monotonic() + START_TIMEOUT
        while not run_in_netns(self.netns, harness.can_connect, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("port %d in netns %s not ready (rc=%s):\n%s"
                                   % (port, self.netns, proc.poll(), proc.output_tail()))
            time.sleep(0.05)

    def start(self):
        if self.chall is None or self.chall.poll() is not None:
            self.chall = harness.Proc(self._argv(
                [CHALLTESTSRV, "-dns01", "127.0.0.1:%d" % self.dns_port, "-http01", "",
                 "-https01", "", "-tlsalpn01", "", "-management",
                 "127.0.0.1:%d" % self.chall_mgmt_port, "-defaultIPv4", self.default_ipv4,
                 "-defaultIPv6", ""]), env=self.env(), cwd=self.tmp)
            self._wait_port(self.chall_mgmt_port, self.chall)
        self.pebble = harness.Proc(self._argv(
            [PEBBLE, "-config", self.config_path, "-dnsserver", "127.0.0.1:%d" % self.dns_port]),
            env=self.env(), cwd=self.tmp)
        self._wait_port(self.port, self.pebble)
        self._wait_port(self.mgmt_port, self.pebble)
        self._root = None
        self.starts += 1
        return self

    def stop(self):
        """Stops Pebble only (challtestsrv keeps running); start() brings it back on the same
        ports with the same files (and a new issuing CA: Pebble keeps no state)."""
        if self.pebble is not None:
            self.pebble.stop(signal.SIGTERM, timeout=10)
            self.old_logs += self.pebble.all_lines()
            self.pebble = None

    def close(self):
        self.stop()
        if self.chall is not None:
            self.chall.stop(signal.SIGTERM, timeout=10)
            self.chall = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log_lines(self):
        return self.old_logs + (self.pebble.all_lines() if self.pebble else [])

    def log_tail(self, n=40):
        return "\n".join(self.log_lines()[-n:])

    def _mgmt_get(self, path):
        ctx = ssl.create_default_context(cafile=self.acme_ca_root)
        url = "https://127.0.0.1:%d%s" % (self.mgmt_port, path)
        # No proxy, whatever the environment says: loopback only.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=ctx))

        def get():
            with opener.open(url, timeout=10) as r:
                return r.read().decode()
        return run_in_netns(self.netns, get) if self.netns else get()

    def issuing_root(self):
        """Path of the PEM root that signs this Pebble run's certificates (for curl --cacert).
        Fetched once per start."""
        if self._root is None:
            pem = self._mgmt_get("/roots/0")
            path = os.path.join(self.tmp, "issuing-root-%d.pem" % self.starts)
            with open(path, "w") as f:
                f.write(pem)
            self._root = path
        return self._root

    def intermediate_pem(self):
        return self._mgmt_get("/intermediates/0")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# Clients of the gateway's ACME-managed sites (shared by test_acme.py and the docker test).
# Every connection goes to 127.0.0.1; the site's name is only SNI and Host (curl: --resolve).

def curl_https(port, name, cacert, path="/", timeout=5, address="127.0.0.1", wrap=None):
    """curl --cacert CACERT https://NAME:PORT/PATH pinned to `address` (127.0.0.1, or one in a
    namespace the test made, with `wrap` turning the argv into one run there), no proxy.
    -> (http status or 0 when the transfer failed, body, stderr)."""
    argv = ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout), "--cacert", cacert,
            "--resolve", "%s:%d:%s" % (name, port, address), "-w", "\n%{http_code}",
            "https://%s:%d%s" % (name, port, path)]
    if wrap:
        argv = wrap(argv)
    try:
        rc, out, err = harness.run_cmd(argv, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        return 0, "", "curl did not finish"
    body, _, code = out.rpartition("\n")
    try:
        status = int(code)
    except ValueError:
        status = 0
    return (status if rc == 0 else 0), body, err.strip()


def wait_https(port, name, cacert, body, timeout, proc=None):
    """Polls curl_https until it answers 200 with `body` (the certificate is obtained in the
    background; until then the handshake fails). -> (ok, last (status, body, stderr))."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = curl_https(port, name, cacert)
        if last[0] == 200 and last[1] == body:
            return True, last
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            return False, last
        time.sleep(0.25)


class TlsClient(harness.Client):
    """harness.Client over a verified TLS connection to 127.0.0.1:port with SNI `name`
    (keep-alive: several requests on one connection)."""

    def __init__(self, port, name, cafile, timeout=15.0):
        self.port = port
        self.host = name
        self.timeout = timeout
        raw = socket.create_connection((harness.LOOPBACK, port), timeout=timeout)
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols(["http/1.1"])
        try:
            self.tls = ctx.wrap_socket(raw, server_hostname=name)
        except Exception:
            raw.close()
            raise
        self.conn = harness.Conn(self.tls, timeout=timeout)

    def peer(self):
        """The verified leaf as ssl.getpeercert() reports it (serialNumber, issuer, ...)."""
        return self.tls.getpeercert()

    def peer_der(self):
        return self.tls.getpeercert(binary_form=True)


def served_leaf(port, name, cafile):
    """(getpeercert() dict, DER) of the leaf served for `name`, verified against `cafile`."""
    with TlsClient(port, name, cafile) as c:
        return c.peer(), c.peer_der()


def rdn(cert_dict_part):
    """getpeercert()'s issuer/subject tuple -> {attribute: value}."""
    return {k: v for rdn_ in cert_dict_part for k, v in rdn_}


def pem_certs(text):
    """The DER of every certificate in a PEM bundle, in order."""
    out = []
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    while begin in text:
        start = text.index(begin)
        stop = text.index(end, start) + len(end)
        out.append(ssl.PEM_cert_to_DER_cert(text[start:stop]))
        text = text[stop:]
    return out


def subject_of_pem(pem):
    """The subject of a PEM certificate as `openssl x509 -subject -nameopt RFC2253` prints it."""
    p = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253"],
                       input=pem.encode(), capture_output=True, timeout=30)
    return p.stdout.decode().strip().partition("=")[2]


def main():
    if len(sys.argv) != 3:
        print("usage: pebble.py HTTP_PORT TLS_PORT", file=sys.stderr)
        return 2
    p = Pebble(int(sys.argv[1]), int(sys.argv[2])).start()
    try:
        print("directory:     %s" % p.directory_url)
        print("acme_ca_root:  %s" % p.acme_ca_root)
        print("issuing root:  %s" % p.issuing_root())
        sys.stdout.flush()
        while p.pebble.poll() is None:
            time.sleep(0.5)
        print(p.log_tail())
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        p.close()


if __name__ == "__main__":
    sys.exit(main())

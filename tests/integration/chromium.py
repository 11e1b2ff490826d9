"""Headless Chromium for HTTP/3 tests, kept off the network (Python 3 stdlib only).

    import chromium
    pki = chromium.make_test_pki(tmpdir, "h3.test")      # root CA + leaf, by openssl
    # ... start a server on 127.0.0.1:PORT (TCP and UDP) with pki["chain"] and pki["key"] ...
    r = chromium.load_page("https://h3.test:%d/" % PORT,
                           host_map={"h3.test": "127.0.0.1"},
                           force_quic=["h3.test:%d" % PORT],
                           spki_hashes=[chromium.spki_hash(pki["cert"])])
    assert r["protocol"] == "h3" and r["status"] == 200, chromium.describe(r)

load_page() starts Debian's Chromium (the binary behind the /usr/bin/chromium wrapper) in
(new) headless mode, drives it over the DevTools protocol on a pipe (--remote-debugging-pipe:
fds 3 and 4, NUL-separated JSON; no port is opened), navigates one tab to each URL in turn and
returns, per URL, a dict:
    url, error      (net error text such as "net::ERR_QUIC_PROTOCOL_ERROR", else None),
    status, protocol, remote   (the main document's response, from Network.responseReceived:
                                protocol is "h3", "h2" or "http/1.1"; remote is "ip:port"),
    nextHopProtocol, responseStatus   (performance.getEntries()[0], i.e. what the page itself
                                       sees; the tests assert on these),
    title, body     (document.title, document.body.innerText),
    report          (JSON parsed from the page's #hsp-report element, if any: see REPORT_PAGE),
    eval            (the value of the caller's `evaluate` expression, if given),
    elapsed         (seconds for this load).
load_pages() loads several URLs in the same browser (same profile, so the second load may use
an Alt-Svc learnt from the first). Failures of the harness itself (Chromium missing, crashed,
timed out) raise ChromiumError with the tail of Chromium's log; a page that fails to load is a
result with `error` set, so tests can assert on it.

Certificates (found out with Chromium 156 from Debian 12 and Caddy 2.6.2):
  - Chromium trusts nothing here: --ignore-certificate-errors-spki-list=<base64 sha256 of a
    DER SubjectPublicKeyInfo> (spki_hash()) makes it accept a chain whose verified part holds
    one of the listed keys, for TCP and QUIC alike. It needs --user-data-dir (always set here).
  - The leaf's own SPKI always works: a CA-signed leaf, or a self-signed leaf.
  - The root's SPKI works only if the server sends the root in its chain (leaf + root, as
    make_test_pki()'s "chain" file). With the leaf alone the root key never appears in the
    chain Chromium builds: over TCP the load fails with net::ERR_CERT_AUTHORITY_INVALID, and
    over forced QUIC with net::ERR_QUIC_PROTOCOL_ERROR (the certificate error is not reported
    as such). Passing both hashes (leaf and root) is the safe choice and what tests do.
  - The name must still match the URL's host (SAN DNS:h3.test for https://h3.test:PORT/).

QUIC:
  - --origin-to-force-quic-on=host:port (force_quic) makes the very first request go over QUIC,
    with no TCP connection and no fallback (a server without h3 fails with
    net::ERR_QUIC_PROTOCOL_ERROR or a timeout).
  - Without it the first load is h2 over TCP and Chromium learns the server's Alt-Svc. But over
    QUIC Chromium accepts a certificate that does not chain to a public root only for hosts in
    --origin-to-force-quic-on: the Alt-Svc attempt fails ("TLS handshake failure ...
    CERTIFICATE_VERIFY_FAILED", the alternative is marked broken) and every load stays h2,
    SPKI list or not. allow_unknown_root_hosts=["h3.test"] lists the host with port 1 (never
    requested), which lifts that check without forcing QUIC on the real port: then the first
    load is h2 and a later one (same browser, load_pages, a short settle) is h3 via Alt-Svc.
  - Responses must not be cacheable (Cache-Control: no-store) when one browser loads a URL
    twice: a cached page reports the protocol of the first load.

Network isolation. The NETWORK RULE is that Chromium only ever talks to loopback:
  - --host-resolver-rules="MAP h3.test 127.0.0.1, MAP * ~NOTFOUND": the test names resolve to
    loopback (host_map; anything else is refused with ValueError) and every other name fails
    without any DNS query. `*` matches IP literals too, so URLs must use a mapped name, never
    https://127.0.0.1:PORT/ (that fails with ERR_NAME_NOT_RESOLVED).
  - Background services off by flags (disable_network_flags()) and by profile preferences
    written into the fresh --user-data-dir (PREFERENCES, LOCAL_STATE). Without them Chromium
    asks for update.googleapis.com, clients2.google.com and redirector.gvt1.com at start (the
    resolver rules make those fail), and, worse, after any main-frame
    ERR_NAME_NOT_RESOLVED its DNS probe (NetErrorTabHelper, pref alternate_error_pages.enabled)
    sends real DNS queries for google.com to 8.8.8.8, 8.8.4.4 and the system resolver, which
    --host-resolver-rules do not cover. The preference turns that off.
  - What remains, seen in strace and Chromium's NetLog (with every flag and preference here):
    an update check (update_client, about 2 s after start, despite --disable-component-update;
    sent to https://127.0.0.1:9/ by --component-updater=url-source) and, when the machine looks
    online, https://accounts.google.com/ListAccounts (IdentityManager; no flag or preference
    stops it): both fail in the resolver rules, before any socket. Chromium's IPv6
    reachability check connect()s a UDP socket to [2001:4860:4860::8888]:443 and reads back the
    local address: no packet is sent (a UDP connect only picks a route); audit_strace() lists it
    apart from traffic. Checked in a network namespace whose default routes lead to a veth
    with a packet sniffer on its far end: during a full test run the sniffer saw only the
    kernel's own IPv6 router solicitations.
  - The real (wrapped) binary is run, not the /usr/bin/chromium shell wrapper: the wrapper
    sources /etc/chromium.d, which exports Google API keys, adds --enable-remote-extensions and
    thereby drops its own --disable-background-networking.
  - Everything is per run: --user-data-dir, HOME, XDG_*, TMPDIR in one temp dir, removed after;
    Chromium runs in its own session (process group), and the whole group is SIGKILLed when
    the run ends, whatever happened; PR_SET_PDEATHSIG takes the browser down with the test.
  - Optional proof: strace_log=PATH runs Chromium under `strace -f` (connect, sendto, sendmsg,
    sendmmsg, close) and audit_strace(PATH) lists every non-loopback destination; netlog=PATH
    writes
    Chromium's own NetLog.

host_map values are an IP ("MAP h3.test 127.0.0.1": the URL's port is kept) or (ip, port)
("MAP h3.test 127.0.0.1:PORT": the port is rewritten too, so https://h3.test/ with force_quic
["h3.test:443"] reaches a server on PORT; both checked with Caddy over h3).

Chromium's binary is $HSP_CHROMIUM, else /usr/lib/chromium/chromium, else /usr/bin/chromium.
Running as root needs --no-sandbox (added when euid is 0). One browser start plus one load over
QUIC takes about 1 s on the 2-core dev machine.
"""

import base64
import ctypes
import hashlib
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# A page for servers under test to serve: it reports what the browser saw, in the DOM, so the
# result is readable by load_page() (report) or by a plain --dump-dom as well.
REPORT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>hsp-report</title></head>
<body><p id="hsp-hello">hello from the server under test</p>
<pre id="hsp-report"></pre>
<script>
(function () {
  var e = performance.getEntriesByType("navigation")[0] || performance.getEntries()[0] || {};
  document.getElementById("hsp-report").textContent = JSON.stringify({
    nextHopProtocol: e.nextHopProtocol, responseStatus: e.responseStatus,
    url: location.href});
})();
</script></body></html>
"""

# Profile preferences (user-data-dir/Default/Preferences). alternate_error_pages.enabled=false
# is the one that matters: it stops the DNS probe that queries public DNS servers after a
# name-resolution error. The others switch off prediction (preconnect/prefetch) and services.
PREFERENCES = {
    "alternate_error_pages": {"enabled": False},
    "net": {"network_prediction_options": 2},  # 2 = never predict (no preconnect, no prefetch)
    "dns_prefetching": {"enabled": False},
    "safebrowsing": {"enabled": False},
    "search": {"suggest_enabled": False},
    "translate": {"enabled": False},
    "signin": {"allowed": False},
    "credentials_enable_service": False,
    "browser": {"check_default_browser": False},
    "profile": {"exit_type": "Normal", "exited_cleanly": True},
}
# Browser-wide preferences (user-data-dir/Local State): no secure-DNS (DoH) upgrade attempts,
# no metrics.
LOCAL_STATE = {
    "dns_over_https": {"mode": "off"},
    "user_experience_metrics": {"reporting_enabled": False},
}

# Features that fetch things on their own; unknown names are ignored by Chromium, so the list
# may outlive the features.
DISABLED_FEATURES = [
    "AutofillServerCommunication", "CertificateTransparencyComponentUpdater", "DnsOverHttps",
    "MediaRouter", "OptimizationHints", "OptimizationGuideModelDownloading",
    "NetworkTimeServiceQuerying", "Translate", "InterestFeedContentSuggestions",
    "PrivacySandboxSettings4", "DialMediaRouteProvider",
]


class ChromiumError(RuntimeError):
    """The harness could not get an answer from Chromium (not: the page failed to load)."""


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def chromium_binary():
    path = os.environ.get("HSP_CHROMIUM")
    if path:
        return path
    for path in ("/usr/lib/chromium/chromium", "/usr/bin/chromium"):
        if os.access(path, os.X_OK):
            return path
    raise ChromiumError("Chromium not found (apt-get install chromium, via "
                        "scripts/install-deps.sh), or set HSP_CHROMIUM")


# ---------------------------------------------------------------------------------------------
# Certificates.

def _openssl(args, timeout=30):
    p = subprocess.run(["openssl"] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise ChromiumError("openssl %s failed (rc=%d): %s" % (
            " ".join(args), p.returncode, p.stderr.decode("utf-8", "replace")))
    return p.stdout


def spki_hash(cert_pem_path):
    """base64(sha256(DER SubjectPublicKeyInfo)) of the (first) certificate in a PEM file: the
    form --ignore-certificate-errors-spki-list takes."""
    pub = _openssl(["x509", "-in", cert_pem_path, "-noout", "-pubkey"])
    with tempfile.NamedTemporaryFile(suffix=".pem") as f:
        f.write(pub)
        f.flush()
        der = _openssl(["pkey", "-pubin", "-in", f.name, "-outform", "DER"])
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def make_test_pki(directory, hostname="h3.test", days=2):
    """A throw-away root CA and a leaf for `hostname` (ECDSA P-256), signed by it, in
    `directory`. Returns paths: ca (root cert), ca_key, cert (leaf only), key (leaf key), chain
    (leaf + root: what a server should send so that the root's SPKI is usable), and spki (the
    hashes of leaf and root, for load_page)."""
    os.makedirs(directory, exist_ok=True)
    p = {k: os.path.join(directory, v) for k, v in (
        ("ca", "ca.pem"), ("ca_key", "ca.key"), ("cert", "leaf.pem"), ("key", "leaf.key"),
        ("chain", "chain.pem"), ("csr", "leaf.csr"), ("ext", "leaf.ext"))}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(["req", "-x509"] + ec + [
        "-days", str(days), "-subj", "/CN=hsp test root", "-keyout", p["ca_key"],
        "-out", p["ca"], "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    _openssl(["req"] + ec + ["-subj", "/CN=" + hostname, "-keyout", p["key"],
                             "-out", p["csr"]])
    with open(p["ext"], "w") as f:
        f.write("subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n" % hostname)
    _openssl(["x509", "-req", "-in", p["csr"], "-CA", p["ca"], "-CAkey", p["ca_key"],
              "-CAcreateserial", "-days", str(days), "-extfile", p["ext"], "-out", p["cert"]])
    with open(p["chain"], "w") as out:
        for name in ("cert", "ca"):
            with open(p[name]) as f:
                out.write(f.read())
    p["spki"] = [spki_hash(p["cert"]), spki_hash(p["ca"])]
    return p


# ---------------------------------------------------------------------------------------------
# Flags.

def _is_loopback(ip):
    """True for an IP literal in 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104; names are not."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def host_resolver_rules(host_map):
    """host_map: {name: ip} or {name: (ip, port)}; the IPs must be loopback IP literals (a
    name there would be resolved by the system, outside these rules). With a port the
    rule rewrites the port as well (MAP name ip:port), so a URL may then name another port."""
    rules = []
    for name, target in host_map.items():
        if isinstance(target, (tuple, list)):
            ip, port = target
            dest = ("[%s]:%d" if ":" in ip else "%s:%d") % (ip, int(port))
        else:
            ip = dest = target
        if not _is_loopback(ip):
            raise ValueError("host_map: %s -> %s is not a loopback address" % (name, ip))
        if not re.fullmatch(r"[A-Za-z0-9.-]+", name):
            raise ValueError("host_map: bad name %r" % name)
        rules.append("MAP %s %s" % (name, dest))
    rules.append("MAP * ~NOTFOUND")  # last: every other name (and IP literal) fails, no DNS
    return ", ".join(rules)


def disable_network_flags():
    """Flags that keep Chromium's own services (updates, sync, metrics, safe browsing, ...)
    from fetching anything. The resolver rules would make such fetches fail anyway; these make
    them not happen."""
    return [
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--safebrowsing-disable-auto-update",
        "--disable-breakpad",
        "--disable-crash-reporter",
        "--metrics-recording-only",
        "--no-pings",
        "--dns-prefetch-disable",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-service-autorun",
        "--disable-field-trial-config",
        # --disable-component-update leaves an update check (update_client, ~2 s after start)
        # on https://update.googleapis.com/service/update2/json; send it to a loopback URL
        # (that the resolver rules refuse anyway) so even a broken rule could not let it out.
        "--component-updater=url-source=https://127.0.0.1:9/,disable-pings",
        "--disable-features=" + ",".join(DISABLED_FEATURES),
    ]


def chromium_argv(user_data_dir, host_map, force_quic=(), spki_hashes=(), extra_flags=(),
                  netlog=None, binary=None, allow_unknown_root_hosts=()):
    argv = [binary or chromium_binary(),
            "--headless",  # the new headless mode: the full browser without a display
            "--remote-debugging-pipe",
            "--user-data-dir=" + user_data_dir,
            "--host-resolver-rules=" + host_resolver_rules(host_map),
            "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio",
            "--password-store=basic", "--use-mock-keychain"]
    if os.geteuid() == 0:
        argv.append("--no-sandbox")  # the setuid/namespace sandbox refuses to run as root
    argv += disable_network_flags()
    if spki_hashes:
        argv.append("--ignore-certificate-errors-spki-list=" + ",".join(spki_hashes))
    # Chromium accepts a QUIC certificate that does not chain to a public root only for hosts
    # named in --origin-to-force-quic-on (by host, whatever the port). Forcing QUIC on port 1,
    # where nothing is ever requested, puts a host on that list without forcing its real port.
    quic = list(force_quic) + ["%s:1" % h for h in allow_unknown_root_hosts]
    if quic:
        argv.append("--origin-to-force-quic-on=" + ",".join(quic))
    if netlog:
        argv += ["--log-net-log=" + netlog, "--net-log-capture-mode=Everything"]
    argv += list(extra_flags)
    argv.append("about:blank")
    return argv


# ---------------------------------------------------------------------------------------------
# The browser process and a minimal DevTools-protocol client on the pipe.

# Loaded in the parent: dlopen() between fork and exec can deadlock on a loader lock held by
# another thread of the parent.
try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _libc = None


def _child_setup(cmd_r, resp_w):
    """Between fork and exec: the DevTools pipe on fds 3 (commands in) and 4 (events out), and
    death with the parent (PR_SET_PDEATHSIG)."""
    a, b = os.dup(cmd_r), os.dup(resp_w)  # out of the way in case they are 3 or 4 themselves
    os.dup2(a, 3)
    os.dup2(b, 4)
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Browser:
    """One headless Chromium with its own temp dir; use as a context manager."""

    def __init__(self, host_map, force_quic=(), spki_hashes=(), extra_flags=(), timeout=60,
                 strace_log=None, netlog=None, keep_dir=False, allow_unknown_root_hosts=()):
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.keep_dir = keep_dir
        self.dir = tempfile.mkdtemp(prefix="hsp-chromium-")
        self.log_path = os.path.join(self.dir, "chromium.log")
        ud = os.path.join(self.dir, "profile")
        os.makedirs(os.path.join(ud, "Default"))
        with open(os.path.join(ud, "Default", "Preferences"), "w") as f:
            json.dump(PREFERENCES, f)
        with open(os.path.join(ud, "Local State"), "w") as f:
            json.dump(LOCAL_STATE, f)
        home = os.path.join(self.dir, "home")
        tmp = os.path.join(self.dir, "tmp")
        os.makedirs(home)
        os.makedirs(tmp)
        env = {k: v for k, v in os.environ.items()
               if k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS",
                            "GOOGLE_API_KEY", "GOOGLE_DEFAULT_CLIENT_ID",
                            "GOOGLE_DEFAULT_CLIENT_SECRET", "http_proxy", "https_proxy",
                            "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy")}
        env.update(HOME=home, TMPDIR=tmp, XDG_CONFIG_HOME=os.path.join(home, ".config"),
                   XDG_CACHE_HOME=os.path.join(home, ".cache"),
                   XDG_DATA_HOME=os.path.join(home, ".local", "share"),
                   XDG_RUNTIME_DIR=tmp)
        self.argv = chromium_argv(ud, host_map, force_quic, spki_hashes, extra_flags, netlog,
                                  allow_unknown_root_hosts=allow_unknown_root_hosts)
        argv = self.argv
        if strace_log:
            argv = ["strace", "-f", "-qq", "-e",
                    "trace=connect,sendto,sendmsg,sendmmsg,close",
                    "-o", strace_log] + argv
        # The pipe goes to the browser as fds 3 and 4 through _child_setup's dup2 (which clears
        # close-on-exec). close_fds stays off: pass_fds=(3, 4) would need 3 and 4 open in this
        # process at fork time, and another thread of a test may close them at any moment
        # (EBADF, seen). Every other fd Python opened is close-on-exec and ends at exec.
        cmd_r, self._cmd_w = os.pipe()
        self._resp_r, resp_w = os.pipe()
        self._buf = b""
        self._next_id = 0
        self.events = []
        self.proc = None
        try:
            with open(self.log_path, "wb") as logf:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    env=env, cwd=self.dir, start_new_session=True, close_fds=False,
                    preexec_fn=lambda: _child_setup(cmd_r, resp_w))
        except BaseException:
            for fd in (cmd_r, resp_w, self._cmd_w, self._resp_r):
                os.close(fd)
            self._cleanup_dir()
            raise
        finally:
            if self.proc is not None:
                os.close(cmd_r)
                os.close(resp_w)

    # -- plumbing

    def log_tail(self, n=25):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        # D-Bus complaints are always there (no session bus) and say nothing.
        lines = [ln for ln in lines if "dbus" not in ln.lower()]
        return "\n".join(lines[-n:])

    def _fail(self, what):
        raise ChromiumError("%s (chromium rc=%s)\n%s" % (what, self.proc.poll(), self.log_tail()))

    def _read_message(self, deadline):
        while True:
            i = self._buf.find(b"\0")
            if i >= 0:
                msg, self._buf = self._buf[:i], self._buf[i + 1:]
                return json.loads(msg)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail("timed out waiting for Chromium")
            r, _, _ = select.select([self._resp_r], [], [], min(remaining, 0.5))
            if not r:
                if self.proc.poll() is not None:
                    self._fail("Chromium exited")
                continue
            data = os.read(self._resp_r, 1 << 20)
            if not data:
                self._fail("Chromium closed the DevTools pipe")
            self._buf += data

    def send(self, method, params=None, session=None):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:
                n = os.write(self._cmd_w, data)
                data = data[n:]
        except OSError as e:
            self._fail("writing to the DevTools pipe: %s" % e)
        return self._next_id

    def call(self, method, params=None, session=None, deadline=None):
        """Sends a command and returns its result; events that arrive meanwhile are kept."""
        mid = self.send(method, params, session)
        deadline = deadline or self.deadline
        while True:
            msg = self._read_message(deadline)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise ChromiumError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, pred, deadline):
        """The first kept or new event for which pred(event) is true, or None at deadline."""
        i = 0
        while True:
            while i < len(self.events):
                ev = self.events[i]
                i += 1
                if pred(ev):
                    return ev
            if time.monotonic() >= deadline:
                return None
            try:
                msg = self._read_message(min(deadline, self.deadline))
            except ChromiumError:
                if time.monotonic() >= deadline and self.proc.poll() is None:
                    return None
                raise
            if "method" in msg:
                self.events.append(msg)

    # -- pages

    def load(self, url, evaluate=None, settle=0.0):
        """Opens `url` in a new tab, waits for its load event, returns the result dict."""
        t0 = time.monotonic()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=session)
        self.call("Network.enable", session=session)
        self.events = [e for e in self.events if e.get("sessionId") != session]
        nav = self.call("Page.navigate", {"url": url}, session=session)
        out = {"url": url, "error": nav.get("errorText") or None, "status": None,
               "protocol": None, "remote": None, "nextHopProtocol": None,
               "responseStatus": None, "title": None, "body": None, "report": None,
               "eval": None}
        loader = nav.get("loaderId")
        if not out["error"]:
            ev = self.wait_event(lambda e: e.get("sessionId") == session and e.get("method") in (
                "Page.loadEventFired", "Network.loadingFailed") and (
                e["method"] == "Page.loadEventFired"
                or e["params"].get("requestId") == loader), self.deadline)
            if ev is None:
                self._fail("no load event for %s" % url)
            if ev["method"] == "Network.loadingFailed":
                out["error"] = ev["params"].get("errorText")
        if settle:
            time.sleep(settle)
        for e in self.events:
            if (e.get("sessionId") == session and e.get("method") == "Network.responseReceived"
                    and e["params"].get("requestId") == loader):
                resp = e["params"]["response"]
                out["status"] = resp.get("status")
                out["protocol"] = resp.get("protocol")
                if resp.get("remoteIPAddress"):
                    out["remote"] = "%s:%s" % (resp["remoteIPAddress"], resp.get("remotePort"))
        expr = """JSON.stringify((function () {
            var e = performance.getEntriesByType("navigation")[0] || performance.getEntries()[0]
                || {};
            var rep = document.getElementById("hsp-report");
            return {nextHopProtocol: e.nextHopProtocol === undefined ? null : e.nextHopProtocol,
                    responseStatus: e.responseStatus === undefined ? null : e.responseStatus,
                    title: document.title,
                    body: document.body ? document.body.innerText : null,
                    report: rep ? rep.textContent : null,
                    eval: %s};
        })())""" % (evaluate or "null")
        res = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                        session=session)
        if "exceptionDetails" in res:
            raise ChromiumError("evaluating in %s: %s" % (url, res["exceptionDetails"]))
        page = json.loads(res["result"]["value"])
        for k in ("nextHopProtocol", "responseStatus", "title", "body", "eval"):
            out[k] = page.get(k)
        if page.get("report"):
            try:
                out["report"] = json.loads(page["report"])
            except ValueError:
                out["report"] = page["report"]
        try:
            self.call("Target.closeTarget", {"targetId": target})
        except ChromiumError:
            pass
        out["elapsed"] = round(time.monotonic() - t0, 3)
        return out

    # -- shutdown

    def close(self):
        """Browser.close, a short grace, then SIGKILL to the whole process group (Chromium's
        zygote, renderers, GPU and network processes are all in it)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.send("Browser.close")
                self.proc.wait(timeout=3)
            except (ChromiumError, subprocess.TimeoutExpired, OSError):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for fd in (self._cmd_w, self._resp_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc = None
        self._cleanup_dir()

    def _cleanup_dir(self):
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_pages(urls, host_map, force_quic=(), spki_hashes=(), timeout=60, extra_flags=(),
               evaluate=None, strace_log=None, netlog=None, settle=0.0,
               allow_unknown_root_hosts=()):
    """Loads each URL in turn, one tab each, in one browser; a list of result dicts. `timeout`
    bounds the whole run (start-up and every load; shutdown is bounded separately). `settle`
    seconds are waited after each load event (e.g. for a QUIC session learnt from Alt-Svc to
    come up before the next load). allow_unknown_root_hosts: hosts whose QUIC certificates may
    chain to the test root without forcing QUIC on them (for the Alt-Svc path)."""
    with Browser(host_map, force_quic, spki_hashes, extra_flags, timeout, strace_log,
                 netlog, allow_unknown_root_hosts=allow_unknown_root_hosts) as b:
        b.call("Browser.getVersion")  # the pipe works and the browser is up
        return [b.load(u, evaluate=evaluate, settle=settle) for u in urls]


def load_page(url, host_map, force_quic=(), spki_hashes=(), timeout=60, extra_flags=(),
              evaluate=None, strace_log=None, netlog=None):
    """One URL in a fresh browser: the result dict (see the module docstring)."""
    return load_pages([url], host_map, force_quic, spki_hashes, timeout, extra_flags, evaluate,
                      strace_log, netlog)[0]


def describe(result):
    """One line for assertion messages."""
    keys = ("url", "error", "status", "protocol", "nextHopProtocol", "responseStatus", "remote",
            "elapsed")
    return " ".join("%s=%s" % (k, result.get(k)) for k in keys)


# ---------------------------------------------------------------------------------------------
# Proof that Chromium stayed on loopback.

_ADDR_RE = re.compile(
    r'sa_family=(AF_INET6?),\s*sin6?_port=htons\((\d+)\),.*?'
    r'(?:inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6,\s*"([^"]+)")')


def audit_strace(strace_log):
    """Every IP destination in a log of `strace -f -e trace=connect,sendto,sendmsg,sendmmsg,close`
    (what Browser writes for strace_log), as {"loopback": [...], "probe_only": [...],
    "foreign": [...]} of (syscall, addr, port, result). probe_only: a connect() to Chromium's
    IPv6 probe address with no send on that socket before it is closed (a UDP route check; no
    packet leaves). foreign: anything else non-loopback, i.e. traffic or an attempt at it."""
    with open(strace_log, errors="replace") as f:
        lines = f.read().splitlines()
    # Join "<unfinished ...>" / "<... resumed>" pairs well enough: the destination is in the
    # first half, the result in the second.
    out = {"loopback": [], "probe_only": [], "foreign": []}
    # fd of a non-loopback connect -> entry. Keyed by fd alone: strace -f shows thread ids and
    # threads share their process's fds; a same-numbered fd in another process can only make
    # the audit stricter (a send there would count as foreign).
    pending = {}
    for line in lines:
        m = re.match(r"(\d+)\s+(connect|sendto|sendmsg|sendmmsg|close)\((\d+)(.*)", line)
        if not m:
            continue
        call, fd, rest = m.group(2), m.group(3), m.group(4)
        if call == "close":
            if fd in pending:
                out["probe_only" if _is_probe(pending[fd]) else "foreign"].append(pending[fd])
                del pending[fd]
            continue
        a = _ADDR_RE.search(rest)
        if not a:
            # A send with no address goes where the socket is connected.
            if call != "connect" and fd in pending:
                out["foreign"].append(pending.pop(fd))
            continue
        addr = a.group(3) or a.group(4)
        res = "unfinished" if rest.endswith("<unfinished ...>") else rest.rsplit("= ", 1)[-1]
        entry = (call, addr, int(a.group(2)), res)
        if _is_loopback(addr):
            out["loopback"].append(entry)
        elif call == "connect":
            pending[fd] = entry
        else:
            out["foreign"].append(entry)
    for entry in pending.values():
        out["probe_only" if _is_probe(entry) else "foreign"].append(entry)
    return out


def _is_probe(entry):
    """A non-loopback connect() never followed by a send on its socket is a UDP route probe or
    a TCP connect attempt; strace does not say which. Only Chromium's IPv6 reachability check
    (Google DNS's IPv6 address, port 443 or 53, a UDP socket in Chromium's code) is let
    through; anything else counts as foreign."""
    return entry[1].startswith("2001:4860:4860::") and entry[2] in (53, 443)


if __name__ == "__main__":
    # Manual use: python3 chromium.py URL NAME=IP [--quic host:port] [--spki HASH]...
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("map", nargs="+", help="name=loopback-ip")
    ap.add_argument("--quic", action="append", default=[])
    ap.add_argument("--spki", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--strace")
    args = ap.parse_args()
    hm = dict(m.split("=", 1) for m in args.map)
    print(json.dumps(load_page(args.url, hm, args.quic, args.spki, args.timeout,
                               strace_log=args.strace), indent=1))
    if args.strace:
        print(json.dumps(audit_strace(args.strace), indent=1))

#!/usr/bin/env bash
# bench/peers.sh: hsp-gateway side by side with nginx, HAProxy, Caddy and h2o, each a one-core
# reverse proxy in front of the same nginx backend, loaded by hsp-bench (the bundled load tool).
# Prints figures as markdown tables; it is a benchmark, not a test: nothing is asserted.
#
#   bash bench/peers.sh                          # RUNS=2, DUR=10 s per load: ~10-15 minutes
#   QUICK=1 bash bench/peers.sh                  # 1 s loads, one run, no waiting: ~1 minute
#   PROXIES="hsp-gateway nginx" RUNS=1 bash bench/peers.sh
#   PROFILE=1 bash bench/peers.sh                # then perf: where hsp-gateway's CPU goes
#
# Per proxy: HTTP/1.1 in cleartext (closed loop, -c$CONNS), HTTP/2 over TLS 1.3 (closed loop,
# -c$CONNS -m$STREAMS), HTTP/3 when the proxy listens on UDP (Caddy and hsp-gateway), then HTTP/1.1 in open loop at half the proxy's closed-loop rate, with the direct
# backend loaded at the same rate right after, for the added-latency target.
#
# Layout on a 2-core machine: the proxy is pinned to CPU $PROXY_CPU; the backend and hsp-bench
# share CPU $LOAD_CPU. Requests/s is then partly bounded by the load core, so the figure that
# compares proxies is CPU time per request: utime+stime of every process and thread of the proxy
# (from /proc/PID/stat) over the whole hsp-bench invocation, warm-up included, divided by the
# requests the backend served in that same window (nginx stub_status). Counting at the backend
# keeps numerator and denominator on the same window without guessing where hsp-bench's warm-up
# ends; connection set-up (50 handshakes) is then included, which is well under 0.1 % here.
#
# Everything listens on 127.0.0.1 only, on ports the kernel hands out at run time (a proxy that
# binds anything else is stopped); certificates are made with openssl in the run's directory (no
# trust store is touched: Caddy runs with skip_install_trust and HOME/XDG dirs in the run's
# directory); every load is bounded (hsp-bench -d, and `timeout` around it); every process the
# script starts is stopped on exit and on Ctrl-C, and only those.
#
# Knobs (environment): RUNS DUR WARM CONNS STREAMS PROXIES PROXY_CPU LOAD_CPU HSP_GATEWAY
#   HSP_BENCH OUT QUICK QUIET_MAX QUIET_WAIT FOREIGN_MAX MAX_TRIES PROFILE PERF_SECS
#   PERF_CALLGRAPH
# Needs Debian's nginx, haproxy, caddy, h2o, openssl, curl, iproute2 (ss), util-linux (taskset),
# coreutils (timeout), python3, and hsp-bench + hsp-gateway built from this tree;
# `HSP_WITH_BENCH=1 scripts/install-deps.sh` installs the packages; perf only for PROFILE=1.
set -u
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$here/lib/common.sh"
PROG=peers
common_knobs "$repo"
if [ "$QUICK" = 1 ]; then
  RUNS=${RUNS:-1} DUR=${DUR:-1} WARM=${WARM:-1}
fi
RUNS=${RUNS:-2}
DUR=${DUR:-10}            # seconds of measured load (hsp-bench -d)
WARM=${WARM:-2}           # seconds of warm-up before it, same connections (hsp-bench -w)
CONNS=${CONNS:-50}
STREAMS=${STREAMS:-10}    # concurrent streams per connection for h2 and h3
PROXIES=${PROXIES:-"nginx haproxy caddy h2o hsp-gateway"}
PROFILE=${PROFILE:-0}
PERF_SECS=${PERF_SECS:-5}
PERF_CALLGRAPH=${PERF_CALLGRAPH:-dwarf,16384}
PROXY_SETTLE=0.5  # after a proxy listens: Caddy's h3 listener, h2o's worker, before idle RSS

# ------------------------------------------------------------------------------ prerequisites
tools=(nginx haproxy caddy h2o openssl curl taskset ss timeout python3)
[ "$PROFILE" = 1 ] && tools+=(perf)  # Debian's linux-perf
require_tools "${tools[@]}"
require_bins "build it (cmake -S . -B build -G Ninja && ninja -C build hsp-gateway hsp-bench) \
or set HSP_GATEWAY / HSP_BENCH" "$HSP_GATEWAY" "$HSP_BENCH"
require_two_cpus
for n in $PROXIES; do
  case $n in nginx | haproxy | caddy | h2o | hsp-gateway) ;;
    *) echo "peers: unknown proxy '$n' (nginx haproxy caddy h2o hsp-gateway)" >&2; exit 2 ;;
  esac
done

out_dirs
set_cleanup_traps

# ------------------------------------------------------------------------------ configurations
# The shared pieces (nginx prelude, backend, nginx as proxy, Caddyfile sites) are in
# bench/lib/common.sh; this script adds TLS to them.
make_certs() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >>"$LOG" 2>&1 || return 1
  cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/cert+key.pem"  # HAProxy's `crt`
}
NGINX_HTTP_EXTRA=("ssl_protocols TLSv1.2 TLSv1.3;" "ssl_certificate $WORK/cert.pem;"
  "ssl_certificate_key $WORK/key.pem;")

TLS13_SUITES=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
write_proxy_conf() { # $1 = proxy: cleartext h1 on $PX_H1, TLS (h2, h3 if any) on $PX_TLS
  local d=$WORK/$1
  mkdir -p "$d"
  case $1 in
    hsp-gateway | caddy)
      # One Caddyfile for both: hsp-gateway is a drop-in for Caddy. http_port is set too so
      # that nothing would ever try port 80. Upstream keep-alive: up to 500 h2 streams are in
      # flight, each on its own HTTP/1.1 upstream connection; Caddy's default idle pool (32 per
      # host) would close and re-dial most of them, the other peers keep them all.
      {
        caddy_globals "$SPARE_PORT" "$PX_TLS"
        caddy_site "http://127.0.0.1:$PX_H1"
        caddy_site "https://127.0.0.1:$PX_TLS" "tls $WORK/cert.pem $WORK/key.pem"
      } > "$d/Caddyfile"
      ;;
    nginx)
      write_nginx_proxy_conf "$d" "$PX_H1" "listen 127.0.0.1:$PX_TLS ssl http2 backlog=4096;"
      ;;
    haproxy)
      # http-reuse always: upstream connections are shared between client connections, as the
      # others do with their pools. The TLS 1.3 suites are listed so that HAProxy honours the
      # client's preference (AES-128-GCM) like the others instead of AES-256-GCM.
      cat > "$d/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2
  ssl-default-bind-ciphersuites $TLS13_SUITES
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend in
  bind 127.0.0.1:$PX_H1
  bind 127.0.0.1:$PX_TLS ssl crt $WORK/cert+key.pem alpn h2,http/1.1
  default_backend upstream
backend upstream
  server backend 127.0.0.1:$BACKEND_H1
EOF
      ;;
    h2o)
      # h2o keeps upstream connections alive for proxy.timeout.keepalive (its pool has no size
      # limit). As root it would switch to `nobody`, which cannot read the run's files.
      cat > "$d/h2o.conf" <<EOF
$([ "$(id -u)" = 0 ] && echo "user: root")
num-threads: 1
max-connections: 20000
pid-file: $d/h2o.pid
error-log: $d/error.log
proxy.timeout.keepalive: 60000
listen:
  host: 127.0.0.1
  port: $PX_H1
listen:
  host: 127.0.0.1
  port: $PX_TLS
  ssl:
    certificate-file: $WORK/cert.pem
    key-file: $WORK/key.pem
    minimum-version: TLSv1.2
    ocsp-update-interval: 0
hosts:
  "default":
    paths:
      "/":
        proxy.reverse.url: http://127.0.0.1:$BACKEND_H1/
EOF
      ;;
  esac
}

udp_listening() { # port pid: does the tree listen on UDP 127.0.0.1:port (h3)?
  local pids
  pids=$(descendants "$2" | paste -sd'|' -)
  ss -Hlunp "sport = :$1" 2>/dev/null | grep -qE "pid=($pids),"
}

start_proxy() { # $1 = name; sets PROXY_PID, IDLE_RSS_KB, PROXY_H3
  local n=$1 d=$WORK/$1
  write_proxy_conf "$n"
  mkdir -p "$d/home/data" "$d/home/config"
  case $n in
    hsp-gateway)
      HOME="$d/home" XDG_DATA_HOME="$d/home/data" XDG_CONFIG_HOME="$d/home/config" \
        start_on_cpu "$PROXY_CPU" "$n" "$HSP_GATEWAY" run --config "$d/Caddyfile" --threads 1
      ;;
    caddy)
      # GOMAXPROCS=1: one thread runs Go code at a time, Caddy's nearest to "one worker".
      HOME="$d/home" XDG_DATA_HOME="$d/home/data" XDG_CONFIG_HOME="$d/home/config" GOMAXPROCS=1 \
        start_on_cpu "$PROXY_CPU" "$n" caddy run --config "$d/Caddyfile" --adapter caddyfile
      ;;
    haproxy) start_on_cpu "$PROXY_CPU" "$n" haproxy -db -f "$d/haproxy.cfg" ;;
    nginx) start_on_cpu "$PROXY_CPU" "$n" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" ;;
    h2o) start_on_cpu "$PROXY_CPU" "$n" h2o -c "$d/h2o.conf" ;;
  esac
  PROXY_PID=$STARTED
  proxy_up "$n" "$PX_H1" "$PX_TLS" || return 1
  IDLE_RSS_KB=$(status_kb VmRSS "$PROXY_PID")
  PROXY_H3=0
  udp_listening "$PX_TLS" "$PROXY_PID" && PROXY_H3=1
  local c1 c2
  c1=$(curl -s --max-time 5 -o "$WORK/body1" -w '%{http_version} %{http_code}' \
    "http://127.0.0.1:$PX_H1/")
  c2=$(curl -s --cacert "$WORK/cert.pem" --http2 --max-time 5 -o "$WORK/body2" \
    -w '%{http_version} %{http_code}' "https://127.0.0.1:$PX_TLS/")
  note "$(proxy_facts "$n") idle RSS ${IDLE_RSS_KB} kB h3 $PROXY_H3" \
    "checks: h1 HTTP/$c1 '$(cat "$WORK/body1" 2>/dev/null)', h2 HTTP/$c2"
  if [ "$c1" != "1.1 200" ] || [ "$c2" != "2 200" ]; then
    say "!! $n answered '$c1' (h1) and '$c2' (h2) instead of '1.1 200' and '2 200'"
    stop_pid "$PROXY_PID"
    return 1
  fi
}

# ------------------------------------------------------------------------------ one load
bench() { # proto url [extra hsp-bench args]: one bounded load from CPU $LOAD_CPU -> $BENCH_OUT
  local proto=${1%-open} url=$2  # h1-open: h1 with --rate among the extra arguments
  shift 2
  local streams=()
  [ "$proto" != h1 ] && streams=(-m "$STREAMS")
  run_bench "$url" --proto "$proto" "${streams[@]}" --cacert "$WORK/cert.pem" "$@"
}

measure() { # run who proto url [extra]: up to MAX_TRIES loads, keeps the least disturbed one
  local run=$1
  shift
  measure_best "$@"
  python3 - "$WORK/best.json" "$run" "$MEASURE_TRIES" "$IDLE_RSS_KB" >> "$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["run"] = int(sys.argv[2])
r["tries"] = int(sys.argv[3])
if not r["who"].startswith("direct"):
    r["idle_rss_kb"] = int(sys.argv[4])
print(json.dumps(r))
PY
  LAST_RPS=$(python3 -c 'import json,sys
b = json.load(open(sys.argv[1]))["bench"] or {}
print(int(b.get("rps") or 0))' "$WORK/best.json")
  local lat
  lat=$(python3 -c 'import json,sys
b = json.load(open(sys.argv[1]))
l = (b["bench"] or {}).get("latency_us") or {}
r = lambda v: "-" if v is None else "%.0f" % v
e = {k: v for k, v in ((b["bench"] or {}).get("errors") or {}).items() if v}
print("%s req/s, p50 %s us, p99 %s us, status %s, errors %s, CPU %s us/req, others %s%%" % (
    r((b["bench"] or {}).get("rps")), r(l.get("p50")), r(l.get("p99")),
    (b["bench"] or {}).get("status"), e or "none", b.get("cpu_us_per_req", "-"),
    b["foreign_pct"]))' \
    "$WORK/best.json")
  say "run $run $1 $2${4:+ $4 $5}: $lat"
}

not_measured() { # run who proto why: a row that says why there is no figure
  printf '{"run": %d, "who": "%s", "proto": "%s", "na": "%s"}\n' "$1" "$2" "$3" "$4" >> "$RESULTS"
}

# ------------------------------------------------------------------------------ runs
read -r BACKEND_H1 BACKEND_TLS STATUS_PORT PX_H1 PX_TLS SPARE_PORT <<< "$(free_ports 6)"
make_certs || { say "peers: openssl could not make the certificate"; exit 1; }
write_backend_conf "listen 127.0.0.1:$BACKEND_TLS ssl http2 backlog=4096;"
if ! start_backend "$BACKEND_TLS"; then
  say "peers: backend nginx did not start"
  tail "$WORK/backend/"*.log >&2
  exit 1
fi
note "backend pid $BACKEND_PID on 127.0.0.1:$BACKEND_H1 (h1) and :$BACKEND_TLS (h2);" \
  "proxies on 127.0.0.1:$PX_H1 (h1) and :$PX_TLS (TLS)"
VERSIONS="$("$HSP_GATEWAY" version 2>&1 | head -1) | $(nginx -v 2>&1) |
  $(haproxy -v | head -1 | cut -d' ' -f1-3) | caddy $(caddy version 2>&1) |
  $(h2o --version | head -1) | $(openssl version)"
VERSIONS=$(echo "$VERSIONS" | tr -s '\n ' ' ')
note "versions: $VERSIONS"
say "peers: raw output in $OUT; $RUNS run(s), loads of ${WARM}s warm-up + ${DUR}s," \
  "-c$CONNS (-m$STREAMS for h2/h3), proxy on CPU $PROXY_CPU, backend + hsp-bench on CPU $LOAD_CPU"

read -r -a order <<< "$PROXIES"
for run in $(seq "$RUNS"); do
  PROXY_PID="" IDLE_RSS_KB=0 PROXY_H3=0
  measure "$run" direct h1 "http://127.0.0.1:$BACKEND_H1/"
  measure "$run" direct h2 "https://127.0.0.1:$BACKEND_TLS/"
  not_measured "$run" direct h3 "nginx 1.22 has no h3"
  # Rotate the order each run so that no proxy always goes first.
  k=$(((run - 1) % ${#order[@]}))
  rot=("${order[@]:$k}" "${order[@]:0:$k}")
  for n in "${rot[@]}"; do
    PROXY_PID="" IDLE_RSS_KB=0 PROXY_H3=0
    if ! start_proxy "$n"; then
      not_measured "$run" "$n" all "failed to start"
      continue
    fi
    measure "$run" "$n" h1 "http://127.0.0.1:$PX_H1/"
    max_rps=$LAST_RPS
    measure "$run" "$n" h2 "https://127.0.0.1:$PX_TLS/"
    if [ "$PROXY_H3" = 1 ]; then
      measure "$run" "$n" h3 "https://127.0.0.1:$PX_TLS/"
    elif [ "$n" = hsp-gateway ]; then
      not_measured "$run" "$n" h3 "not listening on UDP $PX_TLS (h3 failed to start)"
    else
      not_measured "$run" "$n" h3 "n/a (no h3 in this build)"
    fi
    # The latency target: open loop at half the closed-loop maximum, then the backend alone at
    # the same rate (the proxy is stopped first, so that it takes no CPU from the load core).
    rate=$((max_rps / 2))
    if [ "$rate" -gt 0 ]; then
      measure "$run" "$n" h1-open "http://127.0.0.1:$PX_H1/" --rate "$rate"
      tail -5 "$WORK/$n/out.log" "$WORK/$n/error.log" >> "$LOG" 2>/dev/null
      stop_pid "$PROXY_PID"
      PROXY_PID=""
      measure "$run" "direct@$n" h1-open "http://127.0.0.1:$BACKEND_H1/" --rate "$rate"
    else
      not_measured "$run" "$n" h1-open "no closed-loop rate to halve"
      stop_pid "$PROXY_PID"
    fi
  done
done

# ------------------------------------------------------------------------------ tables
python3 - "$RESULTS" "$OUT/summary.md" "$VERSIONS" "$CONNS" "$STREAMS" "$WARM" "$DUR" \
  "$PROXY_CPU" "$LOAD_CPU" <<'PY'
import json, sys
path, out_path, versions, conns, streams, warm, dur, pcpu, lcpu = sys.argv[1:]
recs = [json.loads(l) for l in open(path) if l.strip()]
L = []
P = lambda s="": L.append(s)


def b(r, *keys):
    v = r.get("bench") or {}
    for k in keys:
        v = (v or {}).get(k) if isinstance(v, dict) else None
    return v


def f(x, fmt="%.0f"):
    return "–" if x is None else fmt % x


def ms(us):
    return "–" if us is None else "%.2f" % (us / 1000.0)


def served_ok(r):
    st = b(r, "status") or {}
    other = sum(v for k, v in st.items() if str(k) != "200")
    errs = sum((b(r, "errors") or {}).values())
    return other, errs


P("# hsp-gateway beside nginx, HAProxy, Caddy and h2o")
P()
P("Versions: %s." % versions.strip())
P()
P("Layout: each proxy alone on CPU %s (one worker/thread); backend nginx (one worker, `return "
  "200`, 13-byte body) and hsp-bench on CPU %s; everything on 127.0.0.1. Loads: hsp-bench "
  "-c%s, %s s warm-up + %s s measured; h2 and h3 with -m%s over TLS 1.3. CPU µs/request = the "
  "proxy's utime+stime (all processes and threads) over the load ÷ requests the backend served "
  "in it. Peak RSS = VmHWM summed over the proxy's processes after that load (cumulative over "
  "the proxy's loads); idle RSS = VmRSS summed, after start, before any request. Ratios are to "
  "the same run's nginx (CPU for h2 also to HAProxy); below 1 is better for CPU, above 1 for "
  "req/s." % (pcpu, lcpu, conns, warm, dur, streams))
runs = sorted({r["run"] for r in recs})
targets = []
for run in runs:
    rr = [r for r in recs if r["run"] == run]
    get = lambda who, proto: next((r for r in rr if r["who"] == who and r["proto"] == proto),
                                  None)
    who_order = ["direct"] + [w for w in ["nginx", "haproxy", "caddy", "h2o", "hsp-gateway"]
                              if any(r["who"] == w for r in rr)]
    P()
    P("## Run %d" % run)
    P()
    P("Closed loop (as many requests as the connections allow).")
    P()
    P("| proxy | proto | req/s | req/s ×nginx | p50 ms | p99 ms | +p50 / +p99 ms vs direct "
      "| CPU µs/req (user + sys) | CPU ×nginx | CPU ×HAProxy | idle RSS MiB | peak RSS MiB "
      "| non-200 / errors | others % |")
    P("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for who in who_order:
        failed = get(who, "all")
        if failed:
            P("| %s | all | %s | | | | | | | | | | | |" % (who, failed["na"]))
            continue
        for proto in ("h1", "h2", "h3"):
            r = get(who, proto)
            if r is None:
                continue
            if "na" in r:
                P("| %s | %s | %s | | | | | | | | | | | |" % (who, proto, r["na"]))
                continue
            if (r.get("bench") or {}).get("rps") is None:
                P("| %s | %s | load failed (hsp-bench exit %s: %s) | | | | | | | | | | | |" % (
                    who, proto, r.get("rc"), " ".join(r.get("stderr", "").split())[-120:]))
                continue
            d = get("direct", proto)
            ng = get("nginx", proto)
            ha = get("haproxy", proto)
            rps, p50, p99 = b(r, "rps"), b(r, "latency_us", "p50"), b(r, "latency_us", "p99")
            add = "–"
            if (who != "direct" and d and b(d, "latency_us", "p50") is not None and
                    p50 is not None):
                add = "%+.2f / %+.2f" % ((p50 - b(d, "latency_us", "p50")) / 1000.0,
                                         (p99 - b(d, "latency_us", "p99")) / 1000.0)
            cpu = r.get("cpu_us_per_req")
            ratio = lambda o: ("%.2f" % (cpu / o["cpu_us_per_req"])
                               if cpu and o and o.get("cpu_us_per_req") else "–")
            rps_ratio = ("%.2f" % (rps / b(ng, "rps")) if rps and ng and "na" not in ng and
                         b(ng, "rps") else "–")
            other, errs = served_ok(r)
            P("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d / %d | %s |" % (
                who, proto, f(rps), rps_ratio if who != "direct" else "–", ms(p50), ms(p99), add,
                "%.1f (%.1f + %.1f)" % (cpu, r["user_us_per_req"], r["sys_us_per_req"])
                if cpu else "–",
                ratio(ng) if who != "direct" else "–",
                ratio(ha) if who != "direct" and proto == "h2" else "–",
                "%.1f" % (r["idle_rss_kb"] / 1024.0) if "idle_rss_kb" in r else "–",
                "%.1f" % (r["peak_rss_kb"] / 1024.0) if r.get("peak_rss_kb") else "–",
                other, errs, r["foreign_pct"]))
    P()
    P("Open loop, HTTP/1.1, at half of each proxy's closed-loop h1 rate (latency from the "
      "intended send time), then the backend alone at the same rate.")
    P()
    P("| proxy | rate req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | direct p99 ms "
      "| added p99 µs | CPU µs/req | non-200 / errors | others % (proxy / direct run) |")
    P("|---|---|---|---|---|---|---|---|---|---|---|")
    for who in who_order[1:]:
        r = get(who, "h1-open")
        if r is None:
            continue
        if "na" in r:
            P("| %s | %s | | | | | | | | | |" % (who, r["na"]))
            continue
        if (r.get("bench") or {}).get("rps") is None:
            P("| %s | load failed (hsp-bench exit %s) | | | | | | | | | |" % (who, r.get("rc")))
            continue
        d = get("direct@" + who, "h1-open")
        p99 = b(r, "latency_us", "p99")
        dp99 = b(d, "latency_us", "p99") if d else None
        added = p99 - dp99 if p99 is not None and dp99 is not None else None
        other, errs = served_ok(r)
        if d:
            o2, e2 = served_ok(d)
            other, errs = other + o2, errs + e2
        P("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d / %d | %s / %s |" % (
            who, f(b(r, "rate")), f(b(r, "rps")), ms(b(r, "latency_us", "p50")), ms(p99),
            ms(b(r, "latency_us", "p999")), ms(dp99), f(added, "%+.0f"),
            f(r.get("cpu_us_per_req"), "%.1f"), other, errs, r["foreign_pct"],
            d["foreign_pct"] if d else "–"))
    # Targets for hsp-gateway, this run.
    hs = {p: get("hsp-gateway", p) for p in ("h1", "h2", "h3", "h1-open")}
    cpu = lambda r: r.get("cpu_us_per_req") if r and "na" not in r else None
    P()
    P("Targets (hsp-gateway, run %d):" % run)
    P()

    def verdict(name, value, ok, fmt):
        if value is None:
            P("- %s: no figure (a load in the comparison is missing)" % name)
        else:
            P("- %s: %s — %s" % (name, fmt % value, "met" if ok(value) else "not met"))

    def cpu_ratio(proto, peer):
        a, o = cpu(hs[proto]), cpu(get(peer, proto))
        return a / o if a and o else None

    verdict("h1 CPU/request ≤ 0.8× nginx's", cpu_ratio("h1", "nginx"), lambda v: v <= 0.8,
            "%.2f×")
    verdict("h2 CPU/request ≤ 0.8× HAProxy's", cpu_ratio("h2", "haproxy"), lambda v: v <= 0.8,
            "%.2f×")
    for proto in ("h1", "h2"):
        rc = cpu_ratio(proto, "caddy")
        verdict("%s CPU/request ≥ 4× better than Caddy's" % proto, 1 / rc if rc else None,
                lambda v: v >= 4, "%.2f× better")
    # Issue 7: h3 requests per CPU-second at least 2x Caddy's, i.e. CPU/request at most half.
    rc = cpu_ratio("h3", "caddy")
    verdict("h3 requests per CPU-second ≥ 2× Caddy's", 1 / rc if rc else None,
            lambda v: v >= 2, "%.2f×")
    ro = hs["h1-open"]
    added = None
    if ro and "na" not in ro:
        d = get("direct@hsp-gateway", "h1-open")
        if d and b(ro, "latency_us", "p99") is not None and b(d, "latency_us", "p99") is not None:
            added = b(ro, "latency_us", "p99") - b(d, "latency_us", "p99")
    verdict("added p99 ≤ 100 µs at half the max rate (open loop, h1)", added,
            lambda v: v <= 100, "%+.0f µs")
    idle = hs["h1"].get("idle_rss_kb") if hs["h1"] and "na" not in hs["h1"] else None
    verdict("idle RSS ≤ 8 MiB", idle / 1024.0 if idle else None, lambda v: v <= 8, "%.1f MiB")
P()
P("others %: CPU used during the load by processes outside this benchmark, in % of one core "
  "(a load above FOREIGN_MAX is redone, the least disturbed attempt is kept); raw.txt and "
  "results.jsonl hold every figure.")
text = "\n".join(L) + "\n"
open(out_path, "w").write(text)
print(text)
PY

# ------------------------------------------------------------------------------ profile
under_load() { # proto url file command...: runs command during a bounded load on the proxy
  local proto=$1 url=$2 f=$3 lp
  shift 3
  ( DUR=$((PERF_SECS + 4)) WARM=1 bench "$proto" "$url" > /dev/null 2>&1 ) &
  lp=$!
  own "$lp"
  sleep 3
  "$@"
  wait "$lp"
  disown_pid "$lp"
  cp "$BENCH_OUT" "$f.bench.json" 2>/dev/null
}
profile() {
  local proto url
  for proto in h1 h2; do
    url="http://127.0.0.1:$PX_H1/"
    [ "$proto" = h2 ] && url="https://127.0.0.1:$PX_TLS/"
    start_proxy hsp-gateway || return
    # DWARF unwinding: the RelWithDebInfo build keeps no frame pointers.
    under_load "$proto" "$url" "$OUT/perf-$proto" perf record -F 999 \
      --call-graph "$PERF_CALLGRAPH" -o "$OUT/perf-$proto.data" -p "$PROXY_PID" \
      -- sleep "$PERF_SECS" > "$OUT/perf-$proto-record.out" 2>&1
    stop_pid "$PROXY_PID"
    perf report -i "$OUT/perf-$proto.data" --no-children --sort dso,symbol --stdio -g none \
      --percent-limit 0.5 2>/dev/null | sed -E 's/[[:space:]]+$//' > "$OUT/perf-$proto-self.txt"
    perf report -i "$OUT/perf-$proto.data" --children --sort symbol --stdio -g none \
      --percent-limit 2 2>/dev/null | sed -E 's/[[:space:]]+$//' > "$OUT/perf-$proto-inclusive.txt"
    echo
    echo "hsp-gateway under $proto load, $PERF_SECS s of perf record, self time (top 20;" \
      "full: perf-$proto-self.txt, inclusive: perf-$proto-inclusive.txt):"
    echo
    echo '```'
    grep -v '^#' "$OUT/perf-$proto-self.txt" | awk 'NF' | head -20 | cut -c1-160 | sed 's/ *$//'
    echo '```'
  done
}
if [ "$PROFILE" = 1 ]; then
  say "peers: profiling hsp-gateway (perf record under h1, then h2 load)"
  profile > "$OUT/profile.md"  # not through a pipe: a subshell would hide its pids from cleanup
  cat "$OUT/profile.md"
  cat "$OUT/profile.md" >> "$OUT/summary.md"
fi
say "peers: summary in $OUT/summary.md"

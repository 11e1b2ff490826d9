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
# -c$CONNS -m$STREAMS), HTTP/3 when the proxy listens on UDP (Caddy; hsp-gateway has no h3 until
# issue 7), then HTTP/1.1 in open loop at half the proxy's closed-loop rate, with the direct
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
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  RUNS=${RUNS:-1} DUR=${DUR:-1} WARM=${WARM:-1} MAX_TRIES=${MAX_TRIES:-1} QUIET_WAIT=${QUIET_WAIT:-0}
fi
RUNS=${RUNS:-2}
DUR=${DUR:-10}            # seconds of measured load (hsp-bench -d)
WARM=${WARM:-2}           # seconds of warm-up before it, same connections (hsp-bench -w)
CONNS=${CONNS:-50}
STREAMS=${STREAMS:-10}    # concurrent streams per connection for h2 and h3
PROXIES=${PROXIES:-"nginx haproxy caddy h2o hsp-gateway"}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
HSP_GATEWAY=${HSP_GATEWAY:-$repo/build/gateway/hsp-gateway}
HSP_BENCH=${HSP_BENCH:-$repo/build/bench/hsp-bench}
QUIET_MAX=${QUIET_MAX:-15}      # start a load once the machine is below this % of one core...
QUIET_WAIT=${QUIET_WAIT:-60}    # ...or after this many seconds of waiting (0: do not wait)
FOREIGN_MAX=${FOREIGN_MAX:-15}  # a load during which others used more (% of one core) is redone
MAX_TRIES=${MAX_TRIES:-3}       # at most this many times; the least disturbed one is kept
PROFILE=${PROFILE:-0}
PERF_SECS=${PERF_SECS:-5}
PERF_CALLGRAPH=${PERF_CALLGRAPH:-dwarf,16384}
HZ=$(getconf CLK_TCK)

# ------------------------------------------------------------------------------ prerequisites
missing=()
for tool in nginx haproxy caddy h2o openssl curl taskset ss timeout python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ "$PROFILE" = 1 ] && ! command -v perf >/dev/null 2>&1 && missing+=("perf (apt-get install linux-perf)")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "peers: missing ${missing[*]}; install with: sudo HSP_WITH_BENCH=1 scripts/install-deps.sh" >&2
  exit 2
fi
for bin in "$HSP_GATEWAY" "$HSP_BENCH"; do
  if [ ! -x "$bin" ]; then
    echo "peers: no $(basename "$bin") at $bin; build it (cmake -S . -B build -G Ninja &&" \
      "ninja -C build hsp-gateway hsp-bench) or set HSP_GATEWAY / HSP_BENCH" >&2
    exit 2
  fi
done
if [ "$(nproc)" -lt 2 ] || [ "$PROXY_CPU" = "$LOAD_CPU" ]; then
  echo "peers: needs two CPUs, the proxy's ($PROXY_CPU) apart from the load's ($LOAD_CPU)" >&2
  exit 2
fi
for n in $PROXIES; do
  case $n in nginx | haproxy | caddy | h2o | hsp-gateway) ;;
    *) echo "peers: unknown proxy '$n' (nginx haproxy caddy h2o hsp-gateway)" >&2; exit 2 ;;
  esac
done

OUT=${OUT:-$(mktemp -d /tmp/peers.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "$OUT/work.XXXXXX")
LOG="$OUT/raw.txt"
RESULTS="$OUT/results.jsonl"  # one JSON object per load (or per proxy that failed to start)
: > "$LOG"
: > "$RESULTS"

# ------------------------------------------------------------------------------ process control
# Only processes started here are ever signalled, by the ids recorded in OWNED.
OWNED=()
own() { OWNED+=("$1"); }
disown_pid() {
  local keep=() p
  for p in "${OWNED[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
  OWNED=("${keep[@]}")
}
descendants() { # the pid and every process below it
  local c
  echo "$1"
  for c in $(pgrep -P "$1" 2>/dev/null); do descendants "$c"; done
}
stop_pid() { # TERM, up to 5 s, then KILL; then whatever it had started that is still alive
  local p=$1 below c
  below=$(descendants "$p" | tail -n +2)
  kill -TERM "$p" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  for c in $below; do kill -0 "$c" 2>/dev/null && kill -KILL "$c" 2>/dev/null; done
  disown_pid "$p"
}
cleanup() {
  local p
  # A second Ctrl-C must not cut the cleanup short and leave servers behind.
  trap '' INT TERM
  trap - EXIT
  for p in "${OWNED[@]}"; do stop_pid "$p"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "peers: interrupted" >&2; cleanup; exit 130' INT TERM

note() { echo "$*" >> "$LOG"; }
say() { echo "$*" | tee -a "$LOG" >&2; }

# ------------------------------------------------------------------------------ measuring
user_sys_of() { # "utime stime" of a process tree, in clock ticks (each stat covers its threads)
  local p su=0 ss=0 u s
  for p in $(descendants "$1"); do
    # fields after "(comm) ": 12 = utime, 13 = stime
    read -r u s < <(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12, $13}')
    su=$((su + ${u:-0})); ss=$((ss + ${s:-0}))
  done
  echo "$su $ss"
}
status_kb() { # field pid: a /proc/PID/status field (VmRSS, VmHWM) summed over the tree, in kB
  local p s=0 v
  for p in $(descendants "$2"); do
    v=$(awk -v f="$1:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null)
    s=$((s + ${v:-0}))
  done
  echo "$s"
}
busy_ticks() { # user+nice+system+irq+softirq summed over all CPUs
  awk '/^cpu[0-9]+ /{b += $2 + $3 + $4 + $7 + $8} END{print b}' /proc/stat
}
free_ports() { # N distinct ports free on 127.0.0.1 for both TCP and UDP (h3 shares the TLS port)
  python3 - "$1" <<'PY'
import socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", t.getsockname()[1]))
    except OSError:
        t.close()
        continue
    held += [t, u]
    ports.append(t.getsockname()[1])
print(" ".join(map(str, ports)))
PY
}
wait_listen() { # port pid; TCP, up to 15 s, while pid lives
  for _ in $(seq 150); do
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
backend_requests() { # requests the backend nginx has counted so far (stub_status)
  curl -s --max-time 5 "http://127.0.0.1:$STATUS_PORT/" | awk 'NR == 3 {print $3}'
}
quiet_gate() { # wait for other work on the machine (builds, other loads) to calm down
  local waited=0 a b pct
  [ "$QUIET_WAIT" -le 0 ] && return
  while :; do
    a=$(busy_ticks); sleep 1; b=$(busy_ticks)
    pct=$(((b - a) * 100 / HZ))
    if [ "$pct" -le "$QUIET_MAX" ] || [ "$waited" -ge "$QUIET_WAIT" ]; then
      note "quiet gate: machine busy ${pct}% of one core after ${waited}s of waiting"
      return
    fi
    waited=$((waited + 1))
  done
}

# ------------------------------------------------------------------------------ configurations
make_certs() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >>"$LOG" 2>&1 || return 1
  cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/cert+key.pem"  # HAProxy's `crt`
}

nginx_prelude() { # $1 = directory
  cat <<EOF
daemon off;
master_process on;
worker_processes 1;
$([ "$(id -u)" = 0 ] && echo "user root;")
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $1/tmp-body;
  proxy_temp_path $1/tmp-proxy;
  fastcgi_temp_path $1/tmp-fastcgi;
  uwsgi_temp_path $1/tmp-uwsgi;
  scgi_temp_path $1/tmp-scgi;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_certificate $WORK/cert.pem;
  ssl_certificate_key $WORK/key.pem;
EOF
}

write_backend_conf() { # return 200 with a 13-byte body; h1 cleartext, h2 over TLS, stub_status
  local d=$WORK/backend
  mkdir -p "$d"
  {
    nginx_prelude "$d"
    cat <<EOF
  default_type text/plain;
  server {
    listen 127.0.0.1:$BACKEND_H1 backlog=4096;
    listen 127.0.0.1:$BACKEND_TLS ssl http2 backlog=4096;
    location / { return 200 "Hello, World!"; }
  }
  # Its own port, so that the script's status requests never mix with the proxies'.
  server {
    listen 127.0.0.1:$STATUS_PORT;
    location / { stub_status; }
  }
}
EOF
  } > "$d/nginx.conf"
}

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
      cat > "$d/Caddyfile" <<EOF
{
	admin off
	skip_install_trust
	auto_https disable_redirects
	http_port $SPARE_PORT
	https_port $PX_TLS
}

http://127.0.0.1:$PX_H1 {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$BACKEND_H1 {
		transport http {
			keepalive 120s
			keepalive_idle_conns 1024
			keepalive_idle_conns_per_host 1024
		}
	}
}

https://127.0.0.1:$PX_TLS {
	bind 127.0.0.1
	tls $WORK/cert.pem $WORK/key.pem
	reverse_proxy 127.0.0.1:$BACKEND_H1 {
		transport http {
			keepalive 120s
			keepalive_idle_conns 1024
			keepalive_idle_conns_per_host 1024
		}
	}
}
EOF
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
    nginx)
      {
        nginx_prelude "$d"
        cat <<EOF
  upstream backend {
    server 127.0.0.1:$BACKEND_H1;
    keepalive 1024;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$PX_H1 backlog=4096;
    listen 127.0.0.1:$PX_TLS ssl http2 backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
      } > "$d/nginx.conf"
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

start_on_cpu() { # cpu name argv...: starts argv pinned to cpu, output to $WORK/name/out.log
  local cpu=$1 name=$2
  shift 2
  taskset -c "$cpu" "$@" >>"$WORK/$name/out.log" 2>&1 &
  STARTED=$!
  own "$STARTED"
}

start_backend() {
  write_backend_conf
  start_on_cpu "$LOAD_CPU" backend nginx -p "$WORK/backend" -e "$WORK/backend/error.log" \
    -c "$WORK/backend/nginx.conf"
  BACKEND_PID=$STARTED
  wait_listen "$BACKEND_H1" "$BACKEND_PID" && wait_listen "$BACKEND_TLS" "$BACKEND_PID" &&
    wait_listen "$STATUS_PORT" "$BACKEND_PID"
}

loopback_only() { # pid: prints the tree's TCP/UDP listeners that are not on 127.0.0.1
  local pids
  pids=$(descendants "$1" | paste -sd'|' -)
  { ss -Hltnp; ss -Hlunp; } 2>/dev/null | grep -E "pid=($pids)," | awk '$4 !~ /^127\.0\.0\.1:/'
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
  if ! wait_listen "$PX_H1" "$PROXY_PID" || ! wait_listen "$PX_TLS" "$PROXY_PID"; then
    say "!! $n did not listen on 127.0.0.1:$PX_H1 and :$PX_TLS; its output:"
    tail -n 20 "$d/out.log" "$d/error.log" 2>/dev/null | tee -a "$LOG" >&2
    stop_pid "$PROXY_PID"
    return 1
  fi
  sleep 0.5  # let it finish starting (Caddy's h3 listener, h2o's worker) before idle RSS
  local bad
  bad=$(loopback_only "$PROXY_PID")
  if [ -n "$bad" ]; then
    say "!! $n listens beyond 127.0.0.1, stopping it: $bad"
    stop_pid "$PROXY_PID"
    return 1
  fi
  IDLE_RSS_KB=$(status_kb VmRSS "$PROXY_PID")
  PROXY_H3=0
  udp_listening "$PX_TLS" "$PROXY_PID" && PROXY_H3=1
  local c1 c2
  c1=$(curl -s --max-time 5 -o "$WORK/body1" -w '%{http_version} %{http_code}' \
    "http://127.0.0.1:$PX_H1/")
  c2=$(curl -s --cacert "$WORK/cert.pem" --http2 --max-time 5 -o "$WORK/body2" \
    -w '%{http_version} %{http_code}' "https://127.0.0.1:$PX_TLS/")
  note "$n pid $PROXY_PID tree [$(descendants "$PROXY_PID" | paste -sd' ' -)]" \
    "threads $(find "/proc/$PROXY_PID/task" -mindepth 1 -maxdepth 1 | wc -l)" \
    "affinity $(taskset -pc "$PROXY_PID" | awk '{print $NF}') idle RSS ${IDLE_RSS_KB} kB h3 $PROXY_H3" \
    "checks: h1 HTTP/$c1 '$(cat "$WORK/body1" 2>/dev/null)', h2 HTTP/$c2"
  if [ "$c1" != "1.1 200" ] || [ "$c2" != "2 200" ]; then
    say "!! $n answered '$c1' (h1) and '$c2' (h2) instead of '1.1 200' and '2 200'"
    stop_pid "$PROXY_PID"
    return 1
  fi
}

# ------------------------------------------------------------------------------ one load
BENCH_OUT=$WORK/bench.json
bench() { # proto url [extra hsp-bench args]: one bounded load from CPU $LOAD_CPU -> $BENCH_OUT
  local proto=${1%-open} url=$2  # h1-open: h1 with --rate among the extra arguments
  shift 2
  local streams=()
  [ "$proto" != h1 ] && streams=(-m "$STREAMS")
  # `timeout` is the backstop should hsp-bench itself hang: warm-up + duration + 30 s.
  taskset -c "$LOAD_CPU" timeout -k 5 "$(awk -v w="$WARM" -v d="$DUR" 'BEGIN{print int(w + d + 30)}')" \
    "$HSP_BENCH" "$url" --proto "$proto" -c "$CONNS" "${streams[@]}" -d "$DUR" -w "$WARM" \
    --cacert "$WORK/cert.pem" --json "$@" > "$BENCH_OUT" 2> "$WORK/bench.err"
}

json_num() { # file key: a top-level number of hsp-bench's JSON (empty when absent)
  python3 -c 'import json,sys
try:
    v = json.load(open(sys.argv[1])).get(sys.argv[2])
    print("" if v is None else v)
except Exception:
    print("")' "$1" "$2"
}

measure_once() { # who proto url [extra]: one load; appends its record to $WORK/attempt.json
  local who=$1 proto=$2 url=$3
  shift 3
  quiet_gate
  local pu0=0 ps0=0 pu1=0 ps1=0 b0 b1 m0 m1 r0 r1 t0 t1
  [ -n "$PROXY_PID" ] && read -r pu0 ps0 < <(user_sys_of "$PROXY_PID")
  read -r b0 < <(user_sys_of "$BACKEND_PID" | awk '{print $1 + $2}')
  m0=$(busy_ticks)
  r0=$(backend_requests)
  t0=$(date +%s.%N)
  # In a subshell so that `times` reports hsp-bench's CPU (its children's) for the accounting.
  ( bench "$proto" "$url" "$@"; echo "$?" > "$WORK/bench.rc"; times > "$WORK/bench.times" ) &
  local lp=$!
  own "$lp"
  wait "$lp"
  disown_pid "$lp"
  t1=$(date +%s.%N)
  r1=$(backend_requests)
  m1=$(busy_ticks)
  read -r b1 < <(user_sys_of "$BACKEND_PID" | awk '{print $1 + $2}')
  [ -n "$PROXY_PID" ] && read -r pu1 ps1 < <(user_sys_of "$PROXY_PID")
  local peak=0
  [ -n "$PROXY_PID" ] && peak=$(status_kb VmHWM "$PROXY_PID")
  local lg
  lg=$(awk 'NR == 2 {split($1, u, /[ms]/); split($2, s, /[ms]/);
    printf "%d", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * '"$HZ"'}' "$WORK/bench.times")
  {
    cat "$BENCH_OUT"
    echo "---"
    cat "$WORK/bench.err"
  } >> "$LOG"
  python3 - "$BENCH_OUT" "$WORK/attempt.json" <<PY
import json, sys
try:
    bench = json.load(open(sys.argv[1]))
except Exception:
    bench = None
hz = $HZ
wall = $t1 - $t0
proxy = ($pu1 + $ps1) - ($pu0 + $ps0)
backend = $b1 - $b0
loadgen = ${lg:-0}
busy = $m1 - $m0
# The second stub_status request counts itself.
served = max(0, ${r1:-0} - ${r0:-0} - 1)
rec = {
    "who": "$who", "proto": "$proto", "url": "$url", "args": "$*",
    "rc": int(open("$WORK/bench.rc").read().strip() or -1),
    "stderr": open("$WORK/bench.err", errors="replace").read()[-300:],
    "bench": bench, "backend_served": served, "wall_s": round(wall, 3),
    "proxy_user_ticks": $pu1 - $pu0, "proxy_sys_ticks": $ps1 - $ps0, "hz": hz,
    "peak_rss_kb": $peak,
    "foreign_pct": round(max(0.0, 100.0 * (busy - proxy - backend - loadgen) / hz / wall), 1),
    "proxy_core_pct": round(100.0 * proxy / hz / wall, 1),
}
if "$PROXY_PID" and served:
    rec["cpu_us_per_req"] = round(proxy / hz * 1e6 / served, 2)
    rec["user_us_per_req"] = round(($pu1 - $pu0) / hz * 1e6 / served, 2)
    rec["sys_us_per_req"] = round(($ps1 - $ps0) / hz * 1e6 / served, 2)
json.dump(rec, open(sys.argv[2], "w"))
PY
}

measure() { # run who proto url [extra]: up to MAX_TRIES loads, keeps the least disturbed one
  local run=$1
  shift
  local try best_f=999999 f
  for try in $(seq "$MAX_TRIES"); do
    measure_once "$@"
    f=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["foreign_pct"]))' \
      "$WORK/attempt.json")
    if [ "$f" -lt "$best_f" ]; then
      best_f=$f
      cp "$WORK/attempt.json" "$WORK/best.json"
    fi
    [ "$f" -le "$FOREIGN_MAX" ] && break
    note "[$1 $2] attempt $try disturbed (others used ${f}% of a core)"
  done
  python3 - "$WORK/best.json" "$run" "$try" "$IDLE_RSS_KB" "$PROXY_H3" >> "$RESULTS" <<'PY'
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
start_backend || { say "peers: backend nginx did not start"; tail "$WORK/backend/"*.log >&2; exit 1; }
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
      not_measured "$run" "$n" h3 "n/a (no h3 yet)"
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
    hs = {p: get("hsp-gateway", p) for p in ("h1", "h2", "h1-open")}
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

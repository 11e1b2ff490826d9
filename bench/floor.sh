#!/usr/bin/env bash
# bench/floor.sh: the kernel floor under issue 5's h1 CPU target. hsp-gateway must spend at most
# 0.8x nginx's CPU per proxied HTTP/1.1 request; this measures how much of that budget the kernel
# alone takes, with bench/floor/forwarder.cc: an epoll forwarder that copies bytes between each
# client connection and one upstream connection, with no HTTP at all (a measuring stick, not a
# proxy). nginx, the forwarder and hsp-gateway are loaded in turn in bench/peers.sh's layout; the
# room left for all of hsp-gateway's HTTP work is 0.8x nginx's figure minus the floor's.
# It is a benchmark, not a test: nothing is asserted.
#
#   bash bench/floor.sh                  # RUNS=2, DUR=8 s per load: ~2 minutes on a quiet machine
#   QUICK=1 bash bench/floor.sh          # 1 s loads, one run, no waiting for quiet: ~15 s
#   PROXIES="nginx floor" RUNS=3 bash bench/floor.sh
#
# Layout (as peers.sh, 2 cores): the proxy alone on CPU $PROXY_CPU; the backend nginx (one
# worker, `return 200` with a 13-byte body) and hsp-bench (-c$CONNS, 1 s warm-up, closed loop,
# h1 in cleartext) on CPU $LOAD_CPU. CPU µs/request = utime+stime of every process and thread of
# the proxy (from /proc/PID/stat) over the whole hsp-bench invocation, divided by the requests the
# backend served in that window (stub_status on a port of its own). Upstream connections: nginx
# and hsp-gateway keep an idle pool (the same keep-alive settings as peers.sh), the forwarder has
# one per client connection; either way 50 upstream connections carry the load.
#
# Everything listens on 127.0.0.1 only, on ports the kernel hands out at run time (a proxy that
# listens anywhere else is stopped); every load is bounded (hsp-bench -d, and `timeout` around
# it); every process the script starts is stopped on exit and on Ctrl-C, and only those.
#
# Knobs (environment): RUNS DUR WARM CONNS PROXIES PROXY_CPU LOAD_CPU HSP_GATEWAY HSP_BENCH
#   HSP_FLOOR_FORWARDER OUT QUICK QUIET_MAX QUIET_WAIT FOREIGN_MAX MAX_TRIES
# Needs Debian's nginx, curl, iproute2 (ss), util-linux (taskset), coreutils (timeout), python3,
# and hsp-bench, hsp-floor-forwarder and hsp-gateway built from this tree
# (ninja -C build hsp-gateway hsp-bench hsp-floor-forwarder).
set -u
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$here/lib/common.sh"
PROG=floor
common_knobs "$repo"
if [ "$QUICK" = 1 ]; then
  RUNS=${RUNS:-1} DUR=${DUR:-1}
fi
RUNS=${RUNS:-2}
DUR=${DUR:-8}             # seconds of measured load (hsp-bench -d)
WARM=${WARM:-1}           # seconds of warm-up before it, same connections (hsp-bench -w)
CONNS=${CONNS:-50}
PROXIES=${PROXIES:-"nginx floor hsp-gateway"}
HSP_FLOOR_FORWARDER=${HSP_FLOOR_FORWARDER:-$repo/build/bench/hsp-floor-forwarder}
PROXY_SETTLE=0.3                # after a proxy listens: let nginx's worker start

# ------------------------------------------------------------------------------ prerequisites
require_tools nginx curl taskset ss timeout python3 pgrep
for n in $PROXIES; do
  case $n in nginx | floor | hsp-gateway) ;;
    *) echo "floor: unknown proxy '$n' (nginx floor hsp-gateway)" >&2; exit 2 ;;
  esac
done
bins=("$HSP_BENCH")
case " $PROXIES " in *" floor "*) bins+=("$HSP_FLOOR_FORWARDER") ;; esac
case " $PROXIES " in *" hsp-gateway "*) bins+=("$HSP_GATEWAY") ;; esac
require_bins "build it (cmake -S . -B build -G Ninja && ninja -C build hsp-gateway hsp-bench \
hsp-floor-forwarder) or set HSP_GATEWAY / HSP_BENCH / HSP_FLOOR_FORWARDER" "${bins[@]}"
require_two_cpus

out_dirs
set_cleanup_traps

# ------------------------------------------------------------------------------ configurations
# nginx as backend and as proxy, hsp-gateway's site: the same settings as bench/peers.sh,
# cleartext only (bench/lib/common.sh).
write_proxy_conf() { # $1 = proxy: cleartext h1 on $PX_H1
  local d=$WORK/$1
  mkdir -p "$d"
  case $1 in
    hsp-gateway)
      { caddy_globals "$SPARE_PORT" "$SPARE_TLS_PORT"; caddy_site "http://127.0.0.1:$PX_H1"; } \
        > "$d/Caddyfile"
      ;;
    nginx) write_nginx_proxy_conf "$d" "$PX_H1" ;;
    floor) ;;  # arguments only
  esac
}

start_proxy() { # $1 = name; sets PROXY_PID
  local n=$1 d=$WORK/$1
  write_proxy_conf "$n"
  mkdir -p "$d/home/data" "$d/home/config"
  case $n in
    hsp-gateway)
      HOME="$d/home" XDG_DATA_HOME="$d/home/data" XDG_CONFIG_HOME="$d/home/config" \
        start_on_cpu "$PROXY_CPU" "$n" "$HSP_GATEWAY" run --config "$d/Caddyfile" --threads 1
      ;;
    nginx) start_on_cpu "$PROXY_CPU" "$n" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" ;;
    floor) start_on_cpu "$PROXY_CPU" "$n" "$HSP_FLOOR_FORWARDER" "$PX_H1" "$BACKEND_H1" ;;
  esac
  PROXY_PID=$STARTED
  proxy_up "$n" "$PX_H1" || return 1
  local c1
  c1=$(curl -s --max-time 5 -o "$WORK/body1" -w '%{http_version} %{http_code}' \
    "http://127.0.0.1:$PX_H1/")
  note "$(proxy_facts "$n") check: HTTP/$c1 '$(cat "$WORK/body1" 2>/dev/null)'"
  if [ "$c1" != "1.1 200" ]; then
    say "!! $n answered '$c1' instead of '1.1 200'"
    stop_pid "$PROXY_PID"
    return 1
  fi
}

# ------------------------------------------------------------------------------ one load
bench() { # proto url: one bounded closed-loop h1 load from CPU $LOAD_CPU -> $BENCH_OUT
  run_bench "$2" --proto "$1"
}

measure() { # run who url: up to MAX_TRIES h1 loads, keeps the least disturbed one
  local run=$1 who=$2 url=$3
  measure_best "$who" h1 "$url"
  python3 - "$WORK/best.json" "$run" "$MEASURE_TRIES" >> "$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["run"], r["tries"] = int(sys.argv[2]), int(sys.argv[3])
print(json.dumps(r))
PY
  say "run $run $who: $(python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
b = r["bench"] or {}
print("%s req/s, CPU %s us/req (user %s + sys %s), status %s, others %s%%" % (
    "-" if b.get("rps") is None else "%.0f" % b["rps"], r.get("cpu_us_per_req", "-"),
    r.get("user_us_per_req", "-"), r.get("sys_us_per_req", "-"), b.get("status"),
    r["foreign_pct"]))' "$WORK/best.json")"
}

# ------------------------------------------------------------------------------ runs
read -r BACKEND_H1 STATUS_PORT PX_H1 SPARE_PORT SPARE_TLS_PORT <<< "$(free_ports 5)"
write_backend_conf
if ! start_backend; then
  say "floor: backend nginx did not start"
  tail "$WORK/backend/"*.log >&2
  exit 1
fi
note "backend pid $BACKEND_PID on 127.0.0.1:$BACKEND_H1; proxies on 127.0.0.1:$PX_H1"
VERSIONS="$(nginx -v 2>&1)"
case " $PROXIES " in
  *" hsp-gateway "*) VERSIONS="$VERSIONS | $("$HSP_GATEWAY" version 2>&1 | head -1)" ;;
esac
VERSIONS="$VERSIONS | $(uname -sr)"
note "versions: $VERSIONS"
say "floor: raw output in $OUT; $RUNS run(s), h1 loads of ${WARM}s warm-up + ${DUR}s, -c$CONNS," \
  "proxy on CPU $PROXY_CPU, backend + hsp-bench on CPU $LOAD_CPU"

read -r -a order <<< "$PROXIES"
for run in $(seq "$RUNS"); do
  # Rotate the order each run so that no proxy always goes first.
  k=$(((run - 1) % ${#order[@]}))
  rot=("${order[@]:$k}" "${order[@]:0:$k}")
  for n in "${rot[@]}"; do
    PROXY_PID=""
    if ! start_proxy "$n"; then
      printf '{"run": %d, "who": "%s", "na": "failed to start"}\n' "$run" "$n" >> "$RESULTS"
      continue
    fi
    measure "$run" "$n" "http://127.0.0.1:$PX_H1/"
    tail -5 "$WORK/$n/out.log" "$WORK/$n/error.log" >> "$LOG" 2>/dev/null
    stop_pid "$PROXY_PID"
  done
done

# ------------------------------------------------------------------------------ table
python3 - "$RESULTS" "$OUT/summary.md" "$VERSIONS" "$CONNS" "$WARM" "$DUR" "$PROXY_CPU" \
  "$LOAD_CPU" "$PROXIES" <<'PY'
import json, sys
path, out_path, versions, conns, warm, dur, pcpu, lcpu, proxies = sys.argv[1:]
recs = [json.loads(l) for l in open(path) if l.strip()]
names = {"nginx": "nginx", "floor": "floor (hsp-floor-forwarder)", "hsp-gateway": "hsp-gateway"}
L = []
P = L.append
P("# The kernel floor under the h1 CPU target")
P("")
P("Versions: %s." % " ".join(versions.split()))
P("")
P("Layout (as bench/peers.sh): each proxy alone on CPU %s (one worker/thread); backend nginx "
  "(one worker, `return 200`, 13-byte body) and hsp-bench on CPU %s; everything on 127.0.0.1. "
  "Loads: hsp-bench --proto h1 -c%s, %s s warm-up + %s s measured, closed loop. CPU µs/req = "
  "the proxy's utime+stime (whole process tree) over the load ÷ requests the backend served in "
  "it. floor = bench/floor/forwarder.cc, an epoll byte copier with no HTTP (one upstream "
  "connection per client connection): what the kernel alone costs per proxied request."
  % (pcpu, lcpu, conns, warm, dur))


def cpu(r):
    return r.get("cpu_us_per_req") if r and "na" not in r else None


for run in sorted({r["run"] for r in recs}):
    rr = {r["who"]: r for r in recs if r["run"] == run}
    ng = cpu(rr.get("nginx"))
    P("")
    P("## Run %d" % run)
    P("")
    P("| proxy | CPU µs/req | user µs/req | sys µs/req | req/s | CPU ×nginx | non-200 / errors "
      "| others % |")
    P("|---|---|---|---|---|---|---|---|")
    for who in proxies.split():
        r = rr.get(who)
        name = names[who]
        if r is None:
            continue
        if "na" in r:
            P("| %s | %s | | | | | | |" % (name, r["na"]))
            continue
        b = r.get("bench") or {}
        if b.get("rps") is None or cpu(r) is None:
            P("| %s | load failed (hsp-bench exit %s: %s) | | | | | | |" % (
                name, r.get("rc"), " ".join(r.get("stderr", "").split())[-120:]))
            continue
        status = {str(k): v for k, v in (b.get("status") or {}).items()}
        other = sum(v for k, v in status.items() if k != "200")
        errs = sum((b.get("errors") or {}).values())
        P("| %s | %.2f | %.2f | %.2f | %.0f | %s | %d / %d | %s |" % (
            name, cpu(r), r["user_us_per_req"], r["sys_us_per_req"], b["rps"],
            "%.2f" % (cpu(r) / ng) if ng else "–", other, errs, r["foreign_pct"]))
    fl, gw = cpu(rr.get("floor")), cpu(rr.get("hsp-gateway"))
    P("")
    if ng and fl:
        x = 0.8 * ng
        P("0.8x nginx = %.2f µs; floor = %.2f µs (%.2f x nginx): room left for HTTP work = "
          "%.2f µs" % (x, fl, fl / ng, x - fl))
        if gw:
            P("")
            P("hsp-gateway = %.2f µs (%.2f x nginx): %.2f µs of HTTP work above the floor, "
              "%s the 0.8x target by %.2f µs" % (gw, gw / ng, gw - fl,
                                                 "within" if gw <= x else "over", abs(gw - x)))
    else:
        P("0.8x nginx / floor: no figure (the nginx or the floor load is missing)")
P("")
P("others %: CPU used during the load by processes outside this benchmark, in % of one core "
  "(a load above FOREIGN_MAX is redone, the least disturbed attempt is kept); raw.txt and "
  "results.jsonl hold every figure.")
text = "\n".join(L) + "\n"
open(out_path, "w").write(text)
print(text)
PY
say "floor: summary in $OUT/summary.md"

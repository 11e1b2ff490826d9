#!/usr/bin/env bash
# Installs every Debian 12 package HSP Gateway needs to build, run and test.
# Idempotent: packages already present are left alone. Runs as root (or via sudo).
set -euo pipefail

build_pkgs=(
  build-essential cmake ninja-build pkg-config
  libboost1.81-dev libssl-dev libnghttp2-dev
  libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev libgnutls28-dev
  nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev
  libmimalloc-dev  # the gateway's allocator (HSP_MIMALLOC)
  python3  # CMake configures the integration tests even when only the gateway is built
)
test_pkgs=(
  curl wrk nghttp2-client caddy procps iproute2
  # docker tests (tests/integration/dockerd.py): a private dockerd 20.10 in Swarm mode, and a
  # static busybox that becomes a 2 MB image through `docker import` (nothing is pulled).
  docker.io busybox-static
  # deploy test (tests/integration/docker/test_deploy_swarm.py): debootstrap makes the
  # debian:bookworm-slim base image locally from Debian's mirror (nothing pulled from a
  # registry); python3-yaml reads deploy/*.yml.
  debootstrap python3-yaml
  # HTTP/2 abuse clients (python3-h2 / hyperframe) and the gRPC server and client of the gRPC
  # tests, run with /usr/bin/python3.
  python3-h2 python3-hyperframe python3-grpcio
  # The peers of bench/peers.sh, which tests/integration/test_peers_smoke.py runs (Caddy is
  # above). The script starts its own instances on 127.0.0.1; the packaged services (Debian's
  # nginx and h2o listen on *:80) must not start, so the install runs under a deny-all
  # policy-rc.d (below).
  nginx haproxy h2o
  # ACME tests (tests/integration/pebble.py): Pebble, Let's Encrypt's test CA, and its
  # pebble-challtestsrv DNS server, both started on 127.0.0.1 by the tests; openssl makes the
  # CA that Pebble's own HTTPS presents.
  pebble openssl
  # HTTP/3 (gateway/h3): ngtcp2's gtlsclient talks to the QUIC server in the unit and
  # integration tests; headless Chromium loads a page over h3 (tests/integration/chromium.py),
  # and strace lets those tests check that Chromium sent nothing beyond loopback.
  ngtcp2-client chromium strace
)
# bench/peers.sh (HSP_WITH_BENCH=1): the peers, the tools they measure
# with, and reference clients to check hsp-bench against (wrk, h2load; gtlsclient for h3).
# Same policy-rc.d guard as the test packages.
bench_pkgs=(
  nginx haproxy caddy h2o wrk nghttp2-client ngtcp2-client openssl curl procps iproute2
  util-linux coreutils
)

missing=()
for p in "${build_pkgs[@]}" ${HSP_WITH_TESTS:+"${test_pkgs[@]}"} \
  ${HSP_WITH_BENCH:+"${bench_pkgs[@]}"}; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
if [ -n "${HSP_WITH_BENCH:-}${HSP_WITH_TESTS:-}" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
  # exit 101 = "action forbidden": invoke-rc.d then starts no service during this install.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

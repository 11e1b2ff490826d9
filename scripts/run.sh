#!/usr/bin/env bash
# The README's "run" command: installs what is needed (Debian 12, apt-get), builds, and runs the
# gateway. Without arguments it serves the embedded demo config (http://127.0.0.1:8080/, proxied
# to a demo upstream on 127.0.0.1:8081). Arguments are passed to `hsp-gateway run`, e.g.
#   scripts/run.sh --config /etc/hsp/Caddyfile
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
HSP_BUILD_DIR=${HSP_BUILD_DIR:-build} HSP_TARGETS=hsp-gateway ./scripts/build.sh
exec "${HSP_BUILD_DIR:-build}/gateway/hsp-gateway" run "$@"

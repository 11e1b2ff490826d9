#!/usr/bin/env bash
# Prepares a Debian 12 node for HSP Gateway on Docker Swarm and deploys a stack. Idempotent: run
# it again after editing the stack file or to upgrade; every step that is already done is
# skipped. Runs as root (or through sudo) on a manager node.
#
#   deploy/install.sh --advertise-addr 10.0.0.10                   # stack.yml, stack "gateway"
#   deploy/install.sh --stack deploy/stack-multinode.yml --image registry.example.com/hsp:1.2
#
# Steps: (1) Debian's docker.io through apt-get, if no docker client is installed; (2) `docker
# swarm init --advertise-addr ADDR` if this engine is not in a Swarm yet (ADDR: the address the
# other nodes reach this one on; needed only then); (3) the Docker secret hsp_push_secret
# (random, 32 bytes in hex) if missing; (4) with --build, the image from deploy/Dockerfile;
# (5) `docker stack deploy` of the stack file with HSP_IMAGE set to the image.
#
# Environment: DOCKER (the client to run, default `docker`), and the Docker client's own
# variables (DOCKER_HOST...).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
docker_cli=${DOCKER:-docker}
advertise_addr=""
stack_file="$here/stack.yml"
stack_name="gateway"
image="hsp-gateway:latest"
build=0
resolve_image=""
secret_name="hsp_push_secret"

usage() {
  cat <<EOF
usage: $0 [--advertise-addr ADDR] [--stack FILE] [--name STACK] [--image IMAGE] [--build]
          [--resolve-image always|changed|never]
  --advertise-addr ADDR  address for 'docker swarm init' (only when no Swarm exists yet)
  --stack FILE           stack file to deploy (default: $here/stack.yml)
  --name STACK           stack name (default: gateway)
  --image IMAGE          gateway image, passed as HSP_IMAGE (default: hsp-gateway:latest)
  --build                build IMAGE from deploy/Dockerfile first (compiles the gateway);
                         implies --resolve-image never unless given
  --resolve-image MODE   passed to 'docker stack deploy' (never: do not ask a registry for the
                         image's digest, for images that exist only on this node)
EOF
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --advertise-addr) advertise_addr=${2:?--advertise-addr needs a value}; shift 2 ;;
    --stack) stack_file=${2:?--stack needs a value}; shift 2 ;;
    --name) stack_name=${2:?--name needs a value}; shift 2 ;;
    --image) image=${2:?--image needs a value}; shift 2 ;;
    --build) build=1; shift ;;
    --resolve-image) resolve_image=${2:?--resolve-image needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[ -r "$stack_file" ] || die "cannot read the stack file $stack_file"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

# (1) Docker Engine from Debian.
if ! command -v "$docker_cli" >/dev/null 2>&1; then
  echo "install.sh: installing docker.io"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io
  if command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl enable --now docker
  fi
fi
docker() {
  # `command`: run as root with DOCKER unset, "$docker_cli" is "docker", which would call this
  # function again (and bash dies of the recursion).
  if [ -n "$sudo" ]; then sudo "$docker_cli" "$@"; else command "$docker_cli" "$@"; fi
}
docker info >/dev/null 2>&1 || die "the Docker daemon does not answer ($docker_cli info)"

# (2) Swarm.
state=$(docker info --format '{{.Swarm.LocalNodeState}}')
case "$state" in
  active) ;;
  inactive)
    [ -n "$advertise_addr" ] \
      || die "this engine is not in a Swarm: pass --advertise-addr ADDR to create one"
    echo "install.sh: docker swarm init --advertise-addr $advertise_addr"
    docker swarm init --advertise-addr "$advertise_addr" >/dev/null
    ;;
  *) die "Swarm state is '$state'; wait for it to settle or fix it first" ;;
esac
[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = "true" ] \
  || die "this node is not a Swarm manager: run install.sh on a manager"

# (3) The shared secret of controller -> server pushes (stack-multinode.yml).
if ! docker secret inspect "$secret_name" >/dev/null 2>&1; then
  echo "install.sh: creating the secret $secret_name"
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' | docker secret create "$secret_name" - >/dev/null
fi

# (4) The image. One built here is in no registry: nothing to resolve.
if [ "$build" -eq 1 ]; then
  echo "install.sh: building $image (compiles the gateway: several minutes)"
  docker build -f "$repo/deploy/Dockerfile" -t "$image" "$repo"
  resolve_image=${resolve_image:-never}
fi

# (5) The stack: deploying again updates the services whose definition changed.
echo "install.sh: deploying $stack_file as stack $stack_name (image $image)"
deploy_args=(--with-registry-auth -c "$stack_file")
[ -z "$resolve_image" ] || deploy_args+=(--resolve-image "$resolve_image")
$sudo env HSP_IMAGE="$image" "$docker_cli" stack deploy "${deploy_args[@]}" "$stack_name"
echo "install.sh: done; follow it with: docker stack ps $stack_name"

"""The base image of deploy/Dockerfile, `debian:bookworm-slim`, made locally when the daemon lacks
it: nothing is pulled from a registry. debootstrap (minbase variant) builds a Debian 12 root
file system from Debian's apt mirror, and `docker import` turns its tarball into the image.

The root is set up like Docker's official slim image where the build relies on it: the same
three apt sources (bookworm, bookworm-updates, bookworm-security on deb.debian.org, deb822
format), no documentation, manual pages or translations (also for packages installed later),
no package lists, apt caches or logs, and `CMD ["bash"]`. /dev, /proc, /sys are left empty
(the container runtime fills them).

The tarball (gzip, about 30 MB; debootstrap takes about 30 s) can be cached in a directory: a
cached one younger than MAX_AGE_DAYS is imported instead of running debootstrap again (a few minutes). The test puts it
next to the CTest fixture's state file, i.e. in the build tree, so a fresh build tree (CI)
always starts clean.

By hand, as root, against the daemon named by DOCKER_HOST:
    python3 base_image.py [--cache DIR] [--force]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

IMAGE = "debian:bookworm-slim"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
TARBALL = "debian-bookworm-minbase.tar.gz"
MAX_AGE_DAYS = 7
DEBOOTSTRAP = "/usr/sbin/debootstrap"
DEBOOTSTRAP_TIMEOUT = 900

SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

# As in Docker's slim images: dpkg leaves documentation, manual pages and translations out of
# every package installed later (copyright notices stay); make_tarball deletes what debootstrap
# already installed under the same paths.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
"""
EXCLUDED_TREES = ("usr/share/doc", "usr/share/info", "usr/share/man", "usr/share/locale")


def log(*args):
    print("[base_image]", *args, file=sys.stderr, flush=True)


class BaseImageError(RuntimeError):
    pass


def _mounts_under(path):
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mnt = line.split()[1].replace("\\040", " ")
            if mnt == path or mnt.startswith(path + "/"):
                out.append(mnt)
    return out


def _remove_root(root):
    # debootstrap mounts /proc (and /sys) in the target while it runs; a failed or interrupted
    # run can leave them mounted, and rmtree must never walk into them.
    for mnt in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=60)
    if _mounts_under(root):
        raise BaseImageError("mounts left under %s: %s" % (root, _mounts_under(root)))
    shutil.rmtree(root, ignore_errors=True)


def _write(root, rel, text, mode=0o644):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def make_tarball(dest):
    """debootstrap --variant=minbase into a temporary root, then a gzip tarball at `dest`."""
    if os.geteuid() != 0:
        raise BaseImageError("debootstrap needs root")
    if not os.access(DEBOOTSTRAP, os.X_OK):
        raise BaseImageError("%s missing (scripts/install-deps.sh with HSP_WITH_TESTS=1 "
                             "installs debootstrap)" % DEBOOTSTRAP)
    work = tempfile.mkdtemp(prefix="hsp-rootfs.", dir="/var/tmp")
    root = os.path.join(work, "root")
    try:
        t0 = time.monotonic()
        p = subprocess.run([DEBOOTSTRAP, "--variant=minbase", SUITE, root, MIRROR],
                           capture_output=True, timeout=DEBOOTSTRAP_TIMEOUT)
        if p.returncode != 0:
            tail = (p.stdout + p.stderr).decode("utf-8", "replace").splitlines()[-15:]
            debootstrap_log = os.path.join(root, "debootstrap", "debootstrap.log")
            if os.path.exists(debootstrap_log):
                with open(debootstrap_log, errors="replace") as f:
                    tail += ["-- debootstrap.log --"] + f.read().splitlines()[-15:]
            raise BaseImageError("debootstrap exited with %d:\n%s"
                                 % (p.returncode, "\n".join(tail)))
        log("debootstrap: %.0f s" % (time.monotonic() - t0))
        try:
            os.unlink(os.path.join(root, "etc/apt/sources.list"))
        except FileNotFoundError:
            pass
        _write(root, "etc/apt/sources.list.d/debian.sources", SOURCES)
        _write(root, "etc/dpkg/dpkg.cfg.d/hsp-slim", DPKG_EXCLUDES)
        for rel in EXCLUDED_TREES:
            for dirpath, _, files in os.walk(os.path.join(root, rel)):
                for name in files:
                    if not (rel == "usr/share/doc" and name == "copyright"):
                        os.unlink(os.path.join(dirpath, name))
        # No package lists, caches or logs from the build (the directories stay: apt expects
        # them).
        for rel in ("var/lib/apt/lists", "var/cache/apt", "var/log", "tmp", "var/tmp"):
            for dirpath, _, files in os.walk(os.path.join(root, rel)):
                for name in files:
                    if name != "lock":
                        os.unlink(os.path.join(dirpath, name))
        # Names the build host wrote; Docker provides its own at run time.
        for rel in ("etc/hostname", "etc/resolv.conf", "etc/machine-id"):
            path = os.path.join(root, rel)
            if os.path.lexists(path):
                os.unlink(path)
        tmp = dest + ".part"
        subprocess.run(["tar", "-C", root, "--numeric-owner", "--xattrs",
                        "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
                        "-czf", tmp, "."], check=True, timeout=600)
        os.replace(tmp, dest)
        log("rootfs tarball %s: %.1f MB" % (dest, os.path.getsize(dest) / 1e6))
    finally:
        _remove_root(work)


def have_image(docker):
    try:
        docker("image", "inspect", "--format", "{{.Id}}", IMAGE)
        return True
    except Exception:  # the CLI's non-zero exit, whatever wrapper raised it
        return False


def ensure(docker, cache_dir=None, force=False):
    """Makes IMAGE in the daemon behind `docker` (a function running the docker CLI with the
    given arguments and raising on failure) unless it is there. Returns True if it imported."""
    if not force and have_image(docker):
        log("%s present" % IMAGE)
        return False
    work = None
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        tarball = os.path.join(cache_dir, TARBALL)
        fresh = (os.path.exists(tarball)
                 and time.time() - os.path.getmtime(tarball) < MAX_AGE_DAYS * 86400)
        if fresh and not force:
            log("using cached %s" % tarball)
        else:
            make_tarball(tarball)
    else:
        work = tempfile.mkdtemp(prefix="hsp-base.", dir="/var/tmp")
        tarball = os.path.join(work, TARBALL)
        make_tarball(tarball)
    try:
        docker("import", "--change", 'CMD ["bash"]', tarball, IMAGE)
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
    log("imported %s" % IMAGE)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", help="directory keeping the rootfs tarball between runs")
    ap.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    args = ap.parse_args()
    cli = os.environ.get("HSP_DOCKER_CLI", "/usr/bin/docker")

    def docker(*argv):
        subprocess.run([cli] + list(argv), check=True, capture_output=True, timeout=600)
    try:
        ensure(docker, args.cache, args.force)
    except (BaseImageError, subprocess.SubprocessError) as e:
        log("failed:", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

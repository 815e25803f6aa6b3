#!/usr/bin/env bash
# Installs what pocketkube needs and is missing: Debian packages and the project's .venv.
# Safe to run again: it only does work when something is absent.
set -euo pipefail
cd "$(dirname "$0")/.."

# etcd for HA storage; the container engine's real parts: OCI runtimes, the conmon monitor, CNI plugins,
# iptables/nftables for port publishing, busybox-static for the offline base image,
# catatonit for the pod infrastructure image, umoci/skopeo to check images.
DEBIAN_PACKAGES=(etcd-server runc crun conmon containernetworking-plugins iptables nftables iproute2
                 busybox-static catatonit umoci skopeo debootstrap zstd tar)
PYTHON=${PYTHON:-python3}

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian starts etcd as a service on install where an init system runs; pocketkube runs its own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
fi

stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing the project into .venv"
    # This machine's pip configuration names local mirrors that may be absent: keep their warnings quiet.
    quiet_mirrors() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
    .venv/bin/pip install -q --upgrade pip >/dev/null 2> >(quiet_mirrors)
    .venv/bin/pip install -q -e ".[kubectl,test]" 2> >(quiet_mirrors)
    touch "$stamp"
fi
# Bytecode for the project's own modules (pip compiled the dependencies'): where PYTHONDONTWRITEBYTECODE is
# set, Python would otherwise compile every module again at each start, ~0.2 s per CLI command here.
.venv/bin/python -m compileall -q -j0 src >/dev/null

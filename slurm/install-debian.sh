#!/usr/bin/env bash
# Install what slurm/local-cluster.sh needs on Debian 12: slurm-wlm (Slurm
# 22.05: slurmctld, slurmd and the client commands) and munge (authentication).
#
# Usage: sudo slurm/install-debian.sh
#
# Idempotent: when every binary the cluster script uses is already on PATH it
# returns at once, without touching apt (an `apt-get update` alone costs seconds
# and needs the network to the mirror).
set -euo pipefail

# The binaries local-cluster.sh calls; if all are present there is nothing to do.
needed=(slurmctld slurmd sinfo squeue sbatch scontrol munged mungekey)

missing=()
for bin in "${needed[@]}"; do
    # /usr/sbin is not on every root PATH (e.g. `su` without `-`), so look there too.
    if ! command -v "$bin" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$bin ]]; then
        missing+=("$bin")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "slurm-wlm and munge already installed; nothing to do."
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-debian.sh: must run as root (apt-get install); missing: ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-debian.sh: apt-get not found; this script is for Debian/Ubuntu" >&2
    exit 1
fi

echo "Installing slurm-wlm and munge (missing: ${missing[*]}) ..."
# Non-interactive: the packages' postinst scripts must never wait on stdin (CI).
export DEBIAN_FRONTEND=noninteractive
apt-get update
# --no-install-recommends: skips mailutils/postfix and the X11 sview tool,
# which a test cluster does not need and which make the install several times
# slower.
apt-get install -y --no-install-recommends slurm-wlm munge
echo "Installed: $(dpkg-query -W -f='${Package} ${Version}\n' slurm-wlm munge | tr '\n' ' ')"

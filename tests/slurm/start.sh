#!/usr/bin/env bash
# Start a single-node SLURM on localhost (munge, slurmctld, slurmd) for tests/test_slurm.py.
#
#   tests/slurm/start.sh STATE_DIR
#
# Needs root. Installs Debian's slurm-wlm and munge when they are missing, writes
# STATE_DIR/slurm.conf (point SLURM_CONF at it), starts the daemons and waits until the node is
# idle. Stop everything it started with tests/slurm/stop.sh STATE_DIR.
set -euo pipefail

state=$(realpath -m "${1:?usage: start.sh STATE_DIR}")
here=$(dirname "$(realpath "$0")")
ctld_port=${RIM_SLURMCTLD_PORT:-16817}
slurmd_port=${RIM_SLURMD_PORT:-16818}
node=$(hostname -s)

if [ "$(id -u)" != 0 ]; then
    echo "start.sh needs root: it installs and starts the SLURM and munge daemons" >&2
    exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    # The package lists of a fresh machine may be empty or stale: update only when needed.
    apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; }
fi

mkdir -p "$state/slurmctld" "$state/slurmd"

# munge authenticates every SLURM message, so it must run before the SLURM daemons.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- munged
    touch "$state/munged.started"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

sed -e "s|@NODE@|$node|g" -e "s|@STATE@|$state|g" \
    -e "s|@CTLD_PORT@|$ctld_port|g" -e "s|@SLURMD_PORT@|$slurmd_port|g" \
    "$here/slurm.conf.in" >"$state/slurm.conf"
sed -e "s|@NODE@|$node|g" "$here/gres.conf.in" >"$state/gres.conf"
export SLURM_CONF="$state/slurm.conf"

slurmctld -f "$SLURM_CONF"
# Configless slurmd: it caches the controller's config and links it at /run/slurm/conf, where
# the srun inside each job finds it (the executor plugin drops SLURM_CONF from the job step).
slurmd --conf-server "127.0.0.1:$ctld_port"

for _ in $(seq 150); do
    if [ "$(sinfo -h -n "$node" -o %t 2>/dev/null)" = idle ]; then
        exit 0
    fi
    sleep 0.2
done
echo "SLURM node $node did not become idle within 30 s; logs:" >&2
tail -n 30 "$state/slurmctld.log" "$state/slurmd.log" >&2 || true
exit 1

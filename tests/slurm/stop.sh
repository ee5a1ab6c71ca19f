#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start.sh STATE_DIR started (and only those).
set -uo pipefail

state=$(realpath -m "${1:?usage: stop.sh STATE_DIR}")

stop_pid() {  # SIGTERM, then SIGKILL if the daemon is still there after 10 s
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Cancel what is still queued or running on this test cluster, so no job outlives it.
if [ -s "$state/slurm.conf" ] && [ -s "$state/slurmctld.pid" ]; then
    jobs=$(SLURM_CONF="$state/slurm.conf" squeue -h -t PENDING,RUNNING,CONFIGURING,COMPLETING -o %i 2>/dev/null)
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        SLURM_CONF="$state/slurm.conf" scancel $jobs 2>/dev/null
        sleep 2
    fi
fi

for daemon in slurmd slurmctld; do
    if [ -s "$state/$daemon.pid" ]; then
        stop_pid "$(cat "$state/$daemon.pid")"
        rm -f "$state/$daemon.pid"
    fi
done

# The configless slurmd links its config cache at /run/slurm/conf; drop the link if it is ours.
if [ "$(readlink /run/slurm/conf 2>/dev/null)" = "$state/slurmd/conf-cache" ]; then
    rm -f /run/slurm/conf
fi

if [ -e "$state/munged.started" ] && [ -s /run/munge/munged.pid ]; then
    stop_pid "$(cat /run/munge/munged.pid)"
    rm -f "$state/munged.started"
fi

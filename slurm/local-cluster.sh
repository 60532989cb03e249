#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests and CI (DESIGN.md §4).
#
# Usage: slurm/local-cluster.sh start|stop|status [--state-dir DIR] [--max-array-size N]
#
#   start   create/check the munge key, start munged (if no munged answers),
#           write slurm.conf, start slurmctld + slurmd as root and wait until
#           `sinfo` shows the node idle.  Already running -> says so, exit 0.
#   stop    cancel jobs, shut the daemons down (and the munged this script
#           started), remove the Slurm state; logs and slurm.conf are kept
#           for post-mortems.
#   status  print sinfo + squeue (exit 0), or "not running" (exit 1).
#
# State dir: --state-dir DIR, else $METACAM_SLURM_DIR, else /tmp/metacam-slurm.
# Everything Slurm writes (state, spool, pid files, logs) lives there.
#
# --max-array-size N (start only): written as MaxArraySize=N in slurm.conf, so
# a job array may hold at most N tasks (indices 0..N-1); without it Slurm's
# default, 1001.  CI and tests/slurm start the cluster with 50, so a sweep of
# more than 50 tasks must be split into several arrays (`metacam sweep
# launcher=submitit_slurm` reads the value from `scontrol show config`).  A
# cluster already running keeps its value: `start` says so when it differs
# (stop it first to change it).
#
# Where the config lives (decided): the source of truth is DIR/slurm.conf and
# the daemons are started with `-f DIR/slurm.conf`.  Client commands (sinfo,
# sbatch, scontrol, and the `scontrol requeue` that submitit runs *inside* a
# job) only find a config through $SLURM_CONF or the compiled-in default
# /etc/slurm/slurm.conf, and every caller (pytest, Hydra, submitit, a user's
# shell) would have to export SLURM_CONF.  So `start` also copies the file to
# /etc/slurm/slurm.conf, tagged with a marker line, unless a slurm.conf without
# our marker is already there (a real cluster's: never overwritten; then export
# SLURM_CONF=DIR/slurm.conf yourself).  `stop` removes the copy only if it
# carries our marker.
#
# Partition: `debug` (Default=YES, MaxTime=INFINITE).  Needs root and Debian's
# slurm-wlm + munge (slurm/install-debian.sh).
set -euo pipefail

# Debian puts the daemons in /usr/sbin, which is not on every root PATH.
export PATH="$PATH:/usr/sbin:/sbin"

readonly PARTITION=debug
readonly MARKER="# metacam-local-cluster: written by slurm/local-cluster.sh"
readonly ETC_CONF=/etc/slurm/slurm.conf
# munged's compiled-in defaults on Debian; Slurm's auth/munge uses the same
# socket by default, so neither needs a path in its config.
readonly MUNGE_KEY=/etc/munge/munge.key
readonly MUNGE_SOCKET_DIR=/run/munge
readonly MUNGE_LOG=/var/log/munge/munged.log
readonly WAIT_S=60

die() { echo "local-cluster.sh: $*" >&2; exit 1; }

usage() { echo "usage: $0 start|stop|status [--state-dir DIR] [--max-array-size N]" >&2; exit 2; }

# ---- arguments --------------------------------------------------------------
[[ $# -ge 1 ]] || usage
cmd=$1; shift
STATE=${METACAM_SLURM_DIR:-/tmp/metacam-slurm}
MAX_ARRAY_SIZE=""   # empty: Slurm's default (1001)
while [[ $# -gt 0 ]]; do
    case $1 in
        --state-dir) [[ $# -ge 2 ]] || usage; STATE=$2; shift 2 ;;
        --state-dir=*) STATE=${1#*=}; shift ;;
        --max-array-size) [[ $# -ge 2 ]] || usage; MAX_ARRAY_SIZE=$2; shift 2 ;;
        --max-array-size=*) MAX_ARRAY_SIZE=${1#*=}; shift ;;
        *) usage ;;
    esac
done
# Slurm accepts up to 4000001 (0 disables arrays); a test cluster needs at least 1.
if [[ -n $MAX_ARRAY_SIZE ]] && ! [[ $MAX_ARRAY_SIZE =~ ^[1-9][0-9]{0,6}$ && $MAX_ARRAY_SIZE -le 4000001 ]]; then
    echo "local-cluster.sh: --max-array-size must be an integer in 1..4000001, got '$MAX_ARRAY_SIZE'" >&2
    exit 2
fi
STATE=$(realpath -m "$STATE")   # the conf needs absolute paths
CONF=$STATE/slurm.conf
LOG=$STATE/log
CTLD_PID=$STATE/slurmctld.pid
SLURMD_PID=$STATE/slurmd.pid
# Written only when this script started munged, so `stop` never kills a
# munged that the system (or someone else) runs.
OUR_MUNGED_PID=$STATE/munged.started-here.pid
export SLURM_CONF=$CONF

# ---- helpers ----------------------------------------------------------------
pid_alive() {  # pid_alive FILE NAME: the pid in FILE is a live process called NAME
    # /proc, not `kill -0`: that fails with EPERM for a non-root `status`.
    # The name check keeps a stale pid file (pid reused after a reboot or a
    # crash) from making us report, or kill, an unrelated process.
    local pid
    [[ -s $1 ]] || return 1
    pid=$(cat "$1")
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (slurmctld/slurmd run as root here, and munged is set up as root)"
}

require_packages() {
    local missing=() bin
    for bin in slurmctld slurmd sinfo squeue scontrol sbatch munged munge unmunge; do
        command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
    done
    [[ ${#missing[@]} -eq 0 ]] || die "missing ${missing[*]}: run slurm/install-debian.sh"
}

show_logs() {  # print log paths and tails; called on every failure of start
    local f
    echo "--- logs (state dir $STATE) ---" >&2
    for f in "$LOG/slurmctld.log" "$LOG/slurmd.log" "$MUNGE_LOG"; do
        echo "== $f" >&2
        if [[ -r $f ]]; then tail -n 20 "$f" >&2; else echo "(absent)" >&2; fi
    done
}

# Set while `start` runs: a failed start stops what it started, so the next
# `start` begins clean instead of finding half a cluster "already running".
STARTING=0

fail() {
    echo "local-cluster.sh: $*" >&2
    show_logs
    if (( STARTING )); then
        echo "--- stopping what this start started ---" >&2
        teardown >&2
    fi
    exit 1
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

cluster_up() {  # our slurmctld and slurmd are alive and slurmctld answers
    # Check the file first: a client without its config retries for 60 s.
    [[ -f $CONF ]] && pid_alive "$CTLD_PID" slurmctld && pid_alive "$SLURMD_PID" slurmd &&
        scontrol ping 2>/dev/null | grep -q "is UP"
}

ctld_answers() { pid_alive "$CTLD_PID" slurmctld && scontrol ping 2>/dev/null | grep -q "is UP"; }

wait_for() {  # wait_for SECONDS WHAT CMD...: poll CMD every 0.2 s, fail after SECONDS
    local limit=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@"; do
        (( SECONDS - t0 < limit )) || fail "timed out after ${limit}s waiting until $what"
        sleep 0.2
    done
}

port_busy() {  # something listens on localhost:$1 (bash's /dev/tcp: no ss/netstat needed)
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ---- munge ------------------------------------------------------------------
start_munge() {
    if munge_works; then
        echo "munge: a munged already answers; using it"
        return
    fi
    if [[ ! -s $MUNGE_KEY ]]; then
        # Debian's postinst usually creates the key; make one if it did not.
        install -d -o munge -g munge -m 0700 "$(dirname "$MUNGE_KEY")"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey -c -k "$MUNGE_KEY"
        else  # munge < 0.5.14 has no mungekey
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    # munged refuses a key that is readable by others or not owned by munge.
    chown munge:munge "$MUNGE_KEY"; chmod 0400 "$MUNGE_KEY"
    # /run is a tmpfs: the socket dir disappears on reboot (and is absent in
    # containers without systemd's tmpfiles).
    install -d -o munge -g munge -m 0755 "$MUNGE_SOCKET_DIR"
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    # munged must not run as root; it daemonizes and writes its own pid file.
    runuser -u munge -- munged || fail "munged failed to start"
    for _ in $(seq 1 50); do
        munge_works && break
        sleep 0.1
    done
    munge_works || fail "munged started but 'munge -n | unmunge' fails"
    cp "$MUNGE_SOCKET_DIR/munged.pid" "$OUR_MUNGED_PID"
    echo "munge: started munged (pid $(cat "$OUR_MUNGED_PID"))"
}

# ---- slurm.conf -------------------------------------------------------------
write_conf() {
    local cpus mem_mb margin_mb real_mb def_mem
    cpus=$(nproc)
    mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
    # Leave 10% (at least 512 MB) to the OS and the daemons: a RealMemory
    # above what slurmd measures drains the node ("Low RealMemory").
    margin_mb=$(( mem_mb / 10 > 512 ? mem_mb / 10 : 512 ))
    real_mb=$(( mem_mb - margin_mb ))
    # With CR_Core_Memory a job that asks for no memory would get the whole
    # node and run alone; give it its per-CPU share instead.
    def_mem=$(( real_mb / cpus ))
    mkdir -p "$STATE/ctld" "$STATE/spool" "$LOG"
    cat >"$CONF" <<EOF
$MARKER
# state dir: $STATE
ClusterName=metacam
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire+1 s before it may start again (default
# 120 s, minimum 5): 30 s keeps requeue tests short and still leaves step
# launches on a loaded machine ample time to present their credential.
AuthInfo=cred_expire=30
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: containers and CI runners rarely delegate them, and
# CgroupPlugin=disabled is unknown to 22.05 (it stops slurmd).  No cgroup.conf.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
# Trust this file, not slurmd's hardware probe: nproc may be below the
# socket/core layout slurmd sees (cpusets), which would otherwise drain the node.
SlurmdParameters=config_overrides
# A node that was down comes back by itself when slurmd registers.
ReturnToService=2
# A job that becomes eligible only by time passing (a requeued job's
# BeginTime) starts at the next periodic pass of the main scheduler (backfill
# skips passes when nothing changed): every 5 s instead of every 60 s.
SchedulerParameters=sched_interval=5
# Short waits: test jobs are small and tests cancel/requeue them.
KillWait=5
MinJobAge=300
EOF
    # --max-array-size: the largest job array (tasks 0..N-1); else Slurm's 1001.
    if [[ -n $MAX_ARRAY_SIZE ]]; then
        echo "MaxArraySize=$MAX_ARRAY_SIZE" >>"$CONF"
    fi
    cat >>"$CONF" <<EOF
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    # Install the copy client commands find without SLURM_CONF (see header).
    if [[ -e $ETC_CONF ]] && ! grep -qxF "$MARKER" "$ETC_CONF"; then
        echo "note: $ETC_CONF belongs to someone else; left alone. Export SLURM_CONF=$CONF" >&2
    else
        install -d "$(dirname "$ETC_CONF")"
        cp "$CONF" "$ETC_CONF"
    fi
}

# ---- start / stop / status --------------------------------------------------
node_state() { sinfo -h -n localhost -o %T 2>/dev/null | head -n1; }

do_start() {
    require_root
    require_packages
    if cluster_up; then
        echo "already running (state dir $STATE, SLURM_CONF=$CONF)"
        local current
        current=$(scontrol show config 2>/dev/null | awk -F' *= *' '$1 == "MaxArraySize" {print $2}')
        if [[ -n $MAX_ARRAY_SIZE && $current != "$MAX_ARRAY_SIZE" ]]; then
            echo "note: it runs with MaxArraySize=$current, not $MAX_ARRAY_SIZE; '$0 stop' first to change it" >&2
        fi
        sinfo
        return 0
    fi
    # Another slurmctld/slurmd (another state dir, a system service) holds the
    # default ports 6817/6818; ours would die on bind.
    local port
    for port in 6817 6818; do
        port_busy "$port" &&
            die "port $port is in use: a slurm daemon is left over or was started with another state dir; run '$0 stop [--state-dir DIR]' first"
    done
    local t0=$SECONDS
    STARTING=1
    mkdir -p "$STATE" "$LOG"
    start_munge
    # A fresh cluster each time: stale job state from a crashed run would be
    # recovered and rerun.
    rm -rf "$STATE/ctld" "$STATE/spool"
    # Fresh logs, so the tails printed on failure are about this start.
    rm -f "$LOG/slurmctld.log" "$LOG/slurmd.log"
    write_conf
    slurmctld -f "$CONF" || fail "slurmctld failed to start"
    # The daemon writes its pid file a moment after forking; wait for it (and
    # for it to answer) so a failure below can stop it, and slurmd registers
    # at once instead of retrying.
    wait_for 10 "slurmctld answers" ctld_answers
    # -N: this node's name in slurm.conf is `localhost`, not the hostname.
    slurmd -f "$CONF" -N localhost || fail "slurmd failed to start"
    wait_for 10 "slurmd writes its pid file" pid_alive "$SLURMD_PID" slurmd
    local state=""
    while (( SECONDS - t0 < WAIT_S )); do
        state=$(node_state)
        [[ $state == idle ]] && break
        # slurmd registers within seconds; if either daemon died, stop waiting.
        pid_alive "$CTLD_PID" slurmctld || fail "slurmctld exited"
        pid_alive "$SLURMD_PID" slurmd || fail "slurmd exited"
        sleep 0.5
    done
    if [[ $state != idle ]]; then
        sinfo -R >&2 || true
        fail "node not idle after ${WAIT_S}s (state: ${state:-none})"
    fi
    echo "started in $(( SECONDS - t0 ))s: partition $PARTITION, MaxArraySize ${MAX_ARRAY_SIZE:-1001 (default)}, state dir $STATE"
    echo "SLURM_CONF=$CONF"
    sinfo
}

stop_pidfile() {  # stop_pidfile FILE NAME: TERM, wait up to 10 s, then KILL
    local f=$1 name=$2 pid
    pid_alive "$f" "$name" || return 0
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { echo "stopped $name (pid $pid)"; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    echo "killed $name (pid $pid)"
}

teardown() {  # stop our daemons (and the munged we started), remove state
    stop_pidfile "$SLURMD_PID" slurmd
    stop_pidfile "$CTLD_PID" slurmctld
    if [[ -s $OUR_MUNGED_PID ]]; then
        stop_pidfile "$OUR_MUNGED_PID" munged
        rm -f "$OUR_MUNGED_PID"
    fi
    if [[ -f $ETC_CONF ]] && grep -qxF "$MARKER" "$ETC_CONF"; then
        rm -f "$ETC_CONF"
    fi
    rm -rf "$STATE/ctld" "$STATE/spool"
    rm -f "$CTLD_PID" "$SLURMD_PID"
}

do_stop() {
    require_root
    if cluster_up; then
        # Jobs first: slurmstepd (the job's parent) outlives slurmd by design,
        # so a job left running would outlive the cluster. Every user's jobs;
        # %A: one id per array element, which scancel always accepts.
        squeue -h -o %A 2>/dev/null | xargs -r scancel 2>/dev/null || true
        for _ in $(seq 1 40); do
            [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
            sleep 0.25
        done
    fi
    teardown
    echo "stopped (logs kept in $LOG)"
}

do_status() {
    if cluster_up; then
        echo "running (state dir $STATE, SLURM_CONF=$CONF)"
        sinfo
        squeue
    else
        echo "not running (state dir $STATE)"
        return 1
    fi
}

case $cmd in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) usage ;;
esac

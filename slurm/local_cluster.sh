#!/usr/bin/env bash
# A real single-node SLURM cluster (slurmctld + slurmd + munge) on this machine, for tests and local sweeps.
#
#   slurm/local_cluster.sh start    install slurm-wlm + munge if missing (apt, needs root), start the daemons
#   slurm/local_cluster.sh status   exit 0 when the cluster answers, else 1
#   slurm/local_cluster.sh stop     stop the daemons this script started (by their pid files)
#   slurm/local_cluster.sh env      print the environment to use it
#
# Idempotent: `start` on a running cluster only prints its environment. All state, spool, logs and pid files live
# under $MUSICMOE_SLURM_DIR (default ${TMPDIR:-/tmp}/musicmoe-slurm). The last line `start` prints is
# `export SLURM_CONF=...`; eval it (or set SLURM_CONF) so sbatch/squeue/scontrol talk to this cluster.
# Ports: $MUSICMOE_SLURMCTLD_PORT (default 6817) and $MUSICMOE_SLURMD_PORT (default 6818).
set -euo pipefail

RUN_DIR="${MUSICMOE_SLURM_DIR:-${TMPDIR:-/tmp}/musicmoe-slurm}"
CTLD_PORT="${MUSICMOE_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${MUSICMOE_SLURMD_PORT:-6818}"
CONF="$RUN_DIR/slurm.conf"
MUNGE_RUN=/run/munge

log() { echo "local_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

pid_alive() {  # pid file -> 0 if its process runs
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

have_slurm() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null
}

install_slurm() {
    have_slurm && return 0
    [[ $(id -u) -eq 0 ]] || die "slurm-wlm and munge are not installed and installing them needs root (apt-get)"
    command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and apt-get is not available"
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends slurm-wlm munge >"$RUN_DIR/apt.log" 2>&1 \
        || { apt-get update -q >>"$RUN_DIR/apt.log" 2>&1 \
             && apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$RUN_DIR/apt.log" 2>&1; } \
        || die "apt-get install slurm-wlm munge failed; see $RUN_DIR/apt.log"
    have_slurm || die "slurm-wlm installed but slurmctld/slurmd/sbatch/munged are not on PATH"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_ok; then return 0; fi
    [[ $(id -u) -eq 0 ]] || die "munged is not running and starting it needs root"
    id munge >/dev/null 2>&1 || die "user 'munge' is missing (the munge package creates it)"
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chown munge:munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chmod 755 "$MUNGE_RUN"
    runuser -u munge -- /usr/sbin/munged
    touch "$RUN_DIR/munge.started"
    for _ in $(seq 50); do munge_ok && return 0; sleep 0.1; done
    die "munged did not come up"
}

write_conf() {
    local host node_line mem_mb real_mem
    host="$(hostname -s)"
    # `slurmd -C` prints this machine's node line; keep its topology, set RealMemory to ~90% of what is there
    node_line="$(slurmd -C | head -n 1)"
    mem_mb="$(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)"
    real_mem=$(( mem_mb * 9 / 10 ))
    node_line="$(sed -E "s/RealMemory=[0-9]+/RealMemory=${real_mem}/" <<<"$node_line")"
    [[ "$node_line" == NodeName=* ]] || die "unexpected output of 'slurmd -C': $node_line"
    mkdir -p "$RUN_DIR/state" "$RUN_DIR/spool" "$RUN_DIR/log"
    cat >"$CONF.tmp" <<EOF
# written by slurm/local_cluster.sh; a single-node test cluster
ClusterName=musicmoe
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=${RUN_DIR}/state
SlurmdSpoolDir=${RUN_DIR}/spool
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
SlurmdPidFile=${RUN_DIR}/slurmd.pid
SlurmctldLogFile=${RUN_DIR}/log/slurmctld.log
SlurmdLogFile=${RUN_DIR}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
${node_line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    mv "$CONF.tmp" "$CONF"
}

cluster_up() {  # both daemons alive and the controller answers
    pid_alive "$RUN_DIR/slurmctld.pid" && pid_alive "$RUN_DIR/slurmd.pid" \
        && SLURM_CONF="$CONF" scontrol ping 2>/dev/null | grep -q "is UP"
}

print_env() { echo "export SLURM_CONF=$CONF"; }

wait_for_node() {
    local state
    for _ in $(seq 100); do
        state="$(SLURM_CONF="$CONF" sinfo -h -N -o '%t' 2>/dev/null | head -n 1 || true)"
        case "$state" in
            idle|mix|alloc) return 0 ;;
            down*|drain*|drng*)
                SLURM_CONF="$CONF" scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.2
    done
    die "node did not become idle (state '${state:-?}'); see $RUN_DIR/log/"
}

cmd_start() {
    mkdir -p "$RUN_DIR"
    if cluster_up; then
        log "already running ($RUN_DIR)"
        print_env
        return 0
    fi
    install_slurm
    # leftovers of a crashed cluster: stop what our pid files name before starting again
    stop_daemons
    start_munge
    write_conf
    export SLURM_CONF="$CONF"
    slurmctld -i -f "$CONF" || die "slurmctld failed to start; see $RUN_DIR/log/slurmctld.log"
    slurmd -f "$CONF" || die "slurmd failed to start; see $RUN_DIR/log/slurmd.log"
    for _ in $(seq 100); do cluster_up && break; sleep 0.1; done
    cluster_up || die "slurmctld does not answer; see $RUN_DIR/log/"
    wait_for_node
    log "running: $(sinfo -h -N -o '%N %c CPUs %m MB %t')"
    print_env
}

stop_daemons() {
    local name pidf pid
    for name in slurmd slurmctld; do
        pidf="$RUN_DIR/$name.pid"
        if pid_alive "$pidf"; then
            pid="$(cat "$pidf")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidf"
    done
}

cmd_stop() {
    stop_daemons
    # munged is shared by everything on the machine: stop it only if this script started it
    if [[ -e "$RUN_DIR/munge.started" && -s "$MUNGE_RUN/munged.pid" ]]; then
        kill "$(cat "$MUNGE_RUN/munged.pid")" 2>/dev/null || true
        rm -f "$RUN_DIR/munge.started"
    fi
    log "stopped"
}

cmd_status() {
    if cluster_up; then
        SLURM_CONF="$CONF" sinfo -N -o '%N %c %m %t'
        SLURM_CONF="$CONF" squeue
        print_env
        return 0
    fi
    log "not running ($RUN_DIR)"
    return 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) print_env ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for tests and for trying the SLURM
# launcher on one machine. Needs root (munged runs as the munge user, slurmd
# launches jobs) and Debian/Ubuntu's packages; without systemd the daemons are
# started by hand and stopped again by their PIDs.
#
#   slurm/local-cluster.sh start [DIR]    install if needed, start munged, slurmctld, slurmd; wait for an idle node
#   slurm/local-cluster.sh stop [DIR]     cancel its jobs, stop its three daemons (by PID)
#   slurm/local-cluster.sh status [DIR]   sinfo + squeue
#
# DIR (default $STUDY_SLURM_DIR or /tmp/study-slurm) holds slurm.conf, the
# daemons' state, logs and PID files. Nothing is written to /etc/slurm: clients
# find the cluster through SLURM_CONF, which `start` prints and writes to
# DIR/env.sh (`. DIR/env.sh`). Jobs inherit it (sbatch exports the environment).
#
# Environment: STUDY_SLURM_CTLD_PORT (6817), STUDY_SLURM_SLURMD_PORT (6818),
# STUDY_SLURM_CPUS (all cores), STUDY_SLURM_MAX_ARRAY_SIZE (1001), STUDY_SLURM_GPUS (0; up to
# 4 stand-in GPUs, GRES backed by /dev/null and the like, so that GPU requests are scheduled
# for real and jobs get CUDA_VISIBLE_DEVICES, but no real GPU),
# STUDY_SLURM_NO_INSTALL=1 (never apt-get install).
set -euo pipefail

command_name=${1:-}
DIR=${2:-${STUDY_SLURM_DIR:-/tmp/study-slurm}}
CTLD_PORT=${STUDY_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${STUDY_SLURM_SLURMD_PORT:-6818}
PACKAGES="slurmctld slurmd slurm-client munge"
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "local-cluster: $*" >&2; exit 1; }
fail_start() { echo "local-cluster: $*" >&2; stop >&2 || true; exit 1; }
log() { echo "local-cluster: $*"; }

alive() {  # a zombie (exited, not yet reaped) is not alive
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
pid_of() { [ -s "$1" ] && tr -dc '0-9' <"$1" || true; }

stop_pid() {  # stop_pid NAME PIDFILE: SIGTERM, wait up to 15 s, then SIGKILL
    local name=$1 file=$2 pid
    pid=$(pid_of "$file")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 150); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
            log "$name ($pid) ignored SIGTERM; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $name ($pid)"
    fi
    rm -f "$file"
}

install_packages() {
    local missing=""
    for tool in slurmctld slurmd sbatch munged; do command -v "$tool" >/dev/null || missing=1; done
    [ -z "$missing" ] && return 0
    [ -n "${STUDY_SLURM_NO_INSTALL:-}" ] && die "SLURM or munge is not installed ($PACKAGES)"
    command -v apt-get >/dev/null || die "SLURM or munge is not installed and there is no apt-get: install $PACKAGES"
    log "installing $PACKAGES"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null; }
}

# Each cluster has its own munged on its own socket (MUNGE_DIR, derived from DIR): two
# clusters on one machine (two test sessions) never share, or stop, each other's.
MUNGE_DIR=${STUDY_SLURM_MUNGE_DIR:-/run/study-munge-$(printf %s "$DIR" | md5sum | cut -c1-10)}
munge_works() { munge -n --socket="$MUNGE_DIR/munge.socket" 2>/dev/null \
    | unmunge --socket="$MUNGE_DIR/munge.socket" >/dev/null 2>&1; }

start_munge() {
    if [ ! -f /etc/munge/munge.key ]; then  # Debian's package makes one; make it if it did not
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 2>/dev/null
        chown -R munge:munge /etc/munge; chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
    fi
    rm -rf "$MUNGE_DIR"
    mkdir -p "$MUNGE_DIR"
    chown munge:munge "$MUNGE_DIR"
    chmod 755 "$MUNGE_DIR"
    # As the munge user: as root munged refuses, because of its log file's owner.
    runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_DIR/munge.socket" --pid-file="$MUNGE_DIR/munged.pid" \
        --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" \
        || die "munged did not start (see $MUNGE_DIR/munged.log)"
    pid_of "$MUNGE_DIR/munged.pid" >"$DIR/munged.pid"
    for _ in $(seq 50); do munge_works && break; sleep 0.1; done
    munge_works || fail_start "munged does not answer on $MUNGE_DIR/munge.socket (see $MUNGE_DIR/munged.log)"
    log "munged started ($(cat "$DIR/munged.pid"), socket $MUNGE_DIR/munge.socket)"
}

write_conf() {
    local cpus mem defmem
    cpus=${STUDY_SLURM_CPUS:-$(nproc)}
    # RealMemory must not exceed what slurmd finds, or the node is drained.
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$(( mem > 1024 ? mem - 512 : mem ))
    defmem=$(( mem / cpus ))  # without a DefMemPerCPU one job takes the whole node
    local gpus=${STUDY_SLURM_GPUS:-0} gres="" grestypes=""
    if [ "$gpus" -gt 0 ]; then
        # Stand-in device files (slurmd counts a GPU per file); no cgroups, so nothing is bound.
        local files=(/dev/null /dev/zero /dev/full /dev/urandom)
        [ "$gpus" -le ${#files[@]} ] || fail_start "STUDY_SLURM_GPUS=$gpus: at most ${#files[@]} stand-in GPUs"
        gres=" Gres=gpu:$gpus"; grestypes="GresTypes=gpu"
        echo "NodeName=localhost Name=gpu File=$(IFS=,; echo "${files[*]:0:$gpus}")" >"$DIR/gres.conf"
    else
        rm -f "$DIR/gres.conf"
    fi
    cat >"$DIR/slurm.conf" <<EOF
# Written by slurm/local-cluster.sh: a single-node cluster on localhost.
ClusterName=study-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_DIR/munge.socket
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups, no accounting database
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
MaxArraySize=${STUDY_SLURM_MAX_ARRAY_SIZE:-1001}
KillWait=10
MinJobAge=300
InactiveLimit=0
SchedulerType=sched/backfill
$grestypes
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN$gres
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    [ "$(id -u)" = 0 ] || die "needs root (munged runs as the munge user; slurmd launches the jobs)"
    if alive "$(pid_of "$DIR/slurmctld.pid")" || alive "$(pid_of "$DIR/slurmd.pid")"; then
        die "already running in $DIR (stop it first: $0 stop $DIR)"
    fi
    install_packages
    mkdir -p "$DIR"
    rm -rf "$DIR/state" "$DIR/log"
    mkdir -p "$DIR/state/ctld" "$DIR/state/d" "$DIR/log"
    start_munge
    write_conf
    export SLURM_CONF="$DIR/slurm.conf"
    echo "export SLURM_CONF=$DIR/slurm.conf" >"$DIR/env.sh"
    slurmctld -f "$SLURM_CONF" -i || fail_start "slurmctld did not start (see $DIR/log/slurmctld.log)"
    for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
    slurmd -f "$SLURM_CONF" -N localhost || fail_start "slurmd did not start (see $DIR/log/slurmd.log)"
    local state=""
    for _ in $(seq 300); do
        state=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
        [ "$state" = idle ] && break
        sleep 0.1
    done
    [ "$state" = idle ] || fail_start "node not idle after 30 s (state '$state'); see $DIR/log/"
    log "cluster up: slurmctld $(pid_of "$DIR/slurmctld.pid"), slurmd $(pid_of "$DIR/slurmd.pid"), node idle"
    log "clients: export SLURM_CONF=$SLURM_CONF   (or: . $DIR/env.sh)"
}

stop() {
    [ -d "$DIR" ] || { log "nothing in $DIR"; return 0; }
    export SLURM_CONF="$DIR/slurm.conf"
    if alive "$(pid_of "$DIR/slurmctld.pid")"; then
        # Jobs run under slurmstepd, which outlives slurmd: cancel them and let them end first.
        local jobs
        jobs=$(squeue -h -o %F 2>/dev/null | sort -u | tr '\n' ' ')
        [ -n "${jobs// /}" ] && { log "cancelling jobs $jobs"; scancel $jobs 2>/dev/null || true; }
        for _ in $(seq 200); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
    fi
    stop_pid slurmd "$DIR/slurmd.pid"
    stop_pid slurmctld "$DIR/slurmctld.pid"
    if [ -s "$DIR/munged.pid" ]; then
        stop_pid munged "$DIR/munged.pid"
    fi
    rm -rf "$MUNGE_DIR"
}

status() {
    export SLURM_CONF="$DIR/slurm.conf"
    for name in munged slurmctld slurmd; do
        pid=$(pid_of "$DIR/$name.pid")
        if alive "$pid"; then echo "$name: running ($pid)"; else echo "$name: not running from $DIR"; fi
    done
    if alive "$(pid_of "$DIR/slurmctld.pid")"; then sinfo; squeue; fi
}

case "$command_name" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Install and start a single-node SLURM cluster on this machine (Debian/Ubuntu, as root).
#
# Used by CI (.ci/slurm_test.sh) so that the workflow really goes through sbatch; also handy
# to try profiles/slurm on a workstation. Idempotent: a second run leaves a healthy cluster
# alone. The cluster has one partition ("debug", the default) holding this host, no GPUs and
# no accounting database (job status comes from squeue; MinJobAge keeps finished jobs
# visible to it for 10 minutes).
#
#   sudo .ci/slurm_setup.sh          # then: sinfo, squeue, sbatch ...
#
# Environment: SLURM_PARTITION (default debug), SLURM_SETUP_TIMEOUT (seconds to wait for
# the node to become idle, default 120).
set -euo pipefail

PARTITION="${SLURM_PARTITION:-debug}"
TIMEOUT="${SLURM_SETUP_TIMEOUT:-120}"

log() { printf '[slurm_setup] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts daemons)"

node_idle() {
    sinfo --noheader --partition "$PARTITION" --format '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'
}

if command -v sinfo >/dev/null && node_idle; then
    log "SLURM already running: $(sinfo --noheader --format '%P %D %t %c %m')"
    exit 0
fi

# --- packages ---------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends slurm-wlm munge
fi

# --- munge ------------------------------------------------------------------------------
id munge >/dev/null 2>&1 || die "the munge package did not create the munge user"
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "writing /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! pgrep -u munge -x munged >/dev/null; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 1 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.5
done
munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

# --- slurm.conf for this host -------------------------------------------------------------
HOST="$(hostname -s)"
# Containers often have a hostname that does not resolve: daemons talk over loopback.
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts
CPUS="$(nproc --all)"
# slurmd refuses a node whose configured memory exceeds what it sees: leave 10% headroom.
MEM_MB="$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
SLURM_USER=slurm
id "$SLURM_USER" >/dev/null 2>&1 || SLURM_USER=root

install -d -m 0755 /etc/slurm /var/log/slurm
install -d -o "$SLURM_USER" -m 0755 /var/lib/slurm /var/lib/slurm/slurmctld
install -d -m 0755 /var/lib/slurm/slurmd
chown "$SLURM_USER" /var/log/slurm

log "writing /etc/slurm/slurm.conf (node $HOST: $CPUS CPUs, $MEM_MB MB)"
cat > /etc/slurm/slurm.conf <<EOF
# Single-node cluster written by care-alliance .ci/slurm_setup.sh
ClusterName=care
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=${SLURM_USER}
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups in containers: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Schedule cores and memory (so --mem and --cpus-per-task requests matter).
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No accounting database: keep finished jobs visible to squeue for 10 minutes.
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SchedulerType=sched/backfill
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF

# --- daemons ----------------------------------------------------------------------------
if ! pgrep -x slurmctld >/dev/null; then
    log "starting slurmctld"
    slurmctld
fi
if ! pgrep -x slurmd >/dev/null; then
    log "starting slurmd"
    slurmd
fi

log "waiting up to ${TIMEOUT}s for $HOST to become idle"
for _ in $(seq 1 "$TIMEOUT"); do
    if node_idle; then
        log "ready: $(sinfo --noheader --format '%P %D %t %c %m')"
        exit 0
    fi
    # A node that came back after a restart may be DOWN: resume it.
    if sinfo --noheader --format '%t' 2>/dev/null | grep -qE '^(down|drain)'; then
        scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
    fi
    sleep 1
done
sinfo -N -l >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
die "node $HOST did not become idle within ${TIMEOUT}s"

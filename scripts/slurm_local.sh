#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for trying scaletrain's SLURM paths and for
# the tests marked `slurm`: one node (localhost) with this machine's CPUs and memory, in
# a partition `debug` (the default, 4 h time limit) and `onecpu` (jobs may use one CPU). Needs root and Debian's packages:
#   apt-get install slurm-wlm munge
#   bash scripts/slurm_local.sh start     # munged, slurmctld, slurmd; waits for the node
#   bash scripts/slurm_local.sh status
#   bash scripts/slurm_local.sh stop
# It writes /etc/slurm/slurm.conf (refusing to replace one it did not write) and keeps the
# daemons' state and logs in $SLURM_LOCAL_DIR (default /tmp/scaletrain-slurm).
set -euo pipefail

state=${SLURM_LOCAL_DIR:-/tmp/scaletrain-slurm}
conf=/etc/slurm/slurm.conf
marker="# written by scaletrain scripts/slurm_local.sh"

die() { echo "slurm_local: $*" >&2; exit 1; }

write_config() {
  if [ -e "$conf" ] && ! head -n 1 "$conf" | grep -qF "$marker"; then
    die "$conf exists and was not written by this script: not replacing it"
  fi
  local cpus memory
  cpus=$(nproc)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))  # MiB, 90%
  mkdir -p /etc/slurm "$state/ctld" "$state/d"
  cat > "$conf" <<EOF
$marker
ClusterName=scaletrain-local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
# One machine, no cgroups: track processes by their parent, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
# A requeued job waits cred_expire seconds (120 by default) before it may start again,
# and waits for the next scheduling pass: short for a test cluster.
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=5,bf_interval=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=04:00:00 State=UP
# A partition whose jobs may use one CPU of the node: a job asking for more waits forever.
PartitionName=onecpu Nodes=localhost MaxCPUsPerNode=1 MaxTime=04:00:00 State=UP
EOF
}

start() {
  for program in munged slurmctld slurmd sbatch; do
    command -v "$program" >/dev/null || die "$program not found: apt-get install slurm-wlm munge"
  done
  [ "$(id -u)" = 0 ] || die "run as root: it starts munged, slurmctld and slurmd"
  write_config
  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- munged
  fi
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd -N localhost
  for _ in $(seq 60); do
    if sinfo -h -N -o %t 2>/dev/null | grep -qx idle; then
      sinfo
      return
    fi
    sleep 1
  done
  die "the node did not come up within 60 s: see $state/slurmctld.log and $state/slurmd.log"
}

stop() {
  scancel --user="$(id -un)" 2>/dev/null || true
  pkill -x slurmd || true
  pkill -x slurmctld || true
  for _ in $(seq 30); do
    pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || pgrep -x slurmstepd >/dev/null \
      || return 0
    sleep 1
  done
  pkill -9 -x slurmstepd || true
  pkill -9 -x slurmd || true
  pkill -9 -x slurmctld || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo && squeue ;;
  *) die "usage: $0 start|stop|status" ;;
esac

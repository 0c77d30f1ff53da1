#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine (munged, slurmctld, slurmd; no accounting database), for the
# Slurm launcher's tests and for trying `radladsd --launcher slurm` without a cluster.  Idempotent: when a
# controller already answers with an idle or allocated node it does nothing.  Needs root and the packages of
# scripts/install-deps.sh.  State, spool and logs live under $RADLADS_SLURM_DIR (default /tmp/radlads-slurm);
# the config is written to /etc/slurm/slurm.conf only when this script's marker is in it or there is none.
#
#   scripts/slurm-local.sh          start (or confirm) it; prints "slurm: up (node NAME, N CPUs)"
#   scripts/slurm-local.sh stop     stop the daemons this script started
set -euo pipefail
S=${RADLADS_SLURM_DIR:-/tmp/radlads-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by radlads scripts/slurm-local.sh"

for tool in slurmctld slurmd sinfo munged; do
  command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
  command -v "$tool" >/dev/null 2>&1 || { echo "slurm: $tool not found; run scripts/install-deps.sh as root" >&2; exit 1; }
done
if [ "$(id -u)" != 0 ]; then
  echo "slurm: starting a local cluster needs root" >&2
  exit 1
fi

if [ "${1:-}" = stop ]; then
  for f in "$S/slurmd.pid" "$S/slurmctld.pid"; do
    [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  exit 0
fi

up() { sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }
if up; then
  echo "slurm: up (already running)"
  exit 0
fi

mkdir -p "$S/state" "$S/spool"
# munge: the key from the package's postinst (or a new one), then the daemon unless it answers already
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || mungekey --create --force
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  echo "slurm: $CONF exists and was not written by this script; not touching it (start your Slurm yourself)" >&2
  exit 1
fi
H=$(hostname -s)
MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
mkdir -p /etc/slurm
cat > "$CONF" <<CONF
$MARK
ClusterName=radlads
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,batch_sched_delay=0
MpiDefault=pmix
ReturnToService=2
KillWait=5
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$S/jobcomp.log
NodeName=$H NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
pgrep -x slurmctld >/dev/null || slurmctld -c
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 100); do up && break; sleep 0.2; done
if ! up; then
  echo "slurm: the node did not come up; see $S/slurmctld.log and $S/slurmd.log" >&2
  exit 1
fi
echo "slurm: up (node $H, $(nproc) CPUs, logs in $S)"

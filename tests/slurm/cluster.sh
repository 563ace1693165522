#!/usr/bin/env bash
# A real single-node SLURM for the cluster tests: munge, MariaDB + slurmdbd (so sacct works), slurmctld and slurmd
# on localhost with one fake GPU (gres on /dev/null). Needs root on Debian.
#
#   tests/slurm/cluster.sh install   # apt packages (once per machine)
#   tests/slurm/cluster.sh start     # write configs, start every daemon, wait until the node is idle
#   tests/slurm/cluster.sh stop      # stop every daemon by its pid file
#
# State lives in $SLURM_TEST_DIR (default /tmp/cotdistill-slurm). Every wait is bounded.
set -euo pipefail
DIR=${SLURM_TEST_DIR:-/tmp/cotdistill-slurm}
CLUSTER=cotdistill

log() { echo "[cluster.sh] $*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2
  shift 2
  for _ in $(seq 1 $((limit * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "timed out after ${limit}s waiting for $what"
  return 1
}

install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client slurmdbd munge mariadb-server \
    >/dev/null
}

write_configs() {
  mkdir -p "$DIR"/{state,spool,log,run,mysql} /etc/slurm
  local mem
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
  cat >"$DIR/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MinJobAge=600
ReturnToService=2
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  cat >"$DIR/gres.conf" <<CONF
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null
CONF
  cat >"$DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
CONF
  chmod 600 "$DIR/slurmdbd.conf"
  # The Snakemake job step drops SLURM_CONF, so the configs must sit where SLURM looks by default.
  ln -sf "$DIR/slurm.conf" /etc/slurm/slurm.conf
  ln -sf "$DIR/gres.conf" /etc/slurm/gres.conf
  ln -sf "$DIR/slurmdbd.conf" /etc/slurm/slurmdbd.conf
}

start() {
  write_configs
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge && (mungekey -c -f -k /etc/munge/munge.key 2>/dev/null || \
      dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null)
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- munged --force
  wait_for 20 munged munge -n

  if [ ! -d "$DIR/mysql/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$DIR/mysql" >/dev/null
  fi
  chown -R mysql:mysql "$DIR/mysql"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  (setsid mariadbd --user=mysql --datadir="$DIR/mysql" --pid-file=/run/mysqld/cotdistill.pid \
    --socket=/run/mysqld/mysqld.sock --bind-address=127.0.0.1 --port=3306 >"$DIR/log/mariadb.log" 2>&1 &)
  wait_for 60 mariadb mariadb -uroot -e "select 1"
  mariadb -uroot -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

  slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  slurmctld
  slurmd -N localhost
  wait_for 90 "an idle node" bash -c "sinfo -h -o '%t' | grep -qx idle"
  log "SLURM is up: $(sinfo -h -o '%P %D %t %G')"
}

stop_pid() {  # stop_pid NAME PIDFILE
  local pidfile=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || return 0
  wait_for 20 "$1 to stop" bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

stop() {
  stop_pid slurmd "$DIR/run/slurmd.pid"
  stop_pid slurmctld "$DIR/run/slurmctld.pid"
  stop_pid slurmdbd "$DIR/run/slurmdbd.pid"
  stop_pid mariadb /run/mysqld/cotdistill.pid
  stop_pid munged /run/munge/munged.pid
  log "stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac

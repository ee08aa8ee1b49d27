#!/usr/bin/env bash
# A throwaway high-availability PostgreSQL on loopback, for tests: one etcd and
# two Patroni nodes in synchronous replication (trust auth on 127.0.0.1).
#
#   ha-postgres.sh start DIR              DIR: an empty, existing directory
#   ha-postgres.sh leader DIR             prints node1 or node2 (fails while there is none)
#   ha-postgres.sh kill-leader DIR        SIGKILLs the leader's patroni and postgres, prints the node
#   ha-postgres.sh wait-leader DIR [S]    waits (default 60 s) for a live leader that accepts writes,
#                                         prints "NODE SECONDS"
#   ha-postgres.sh stop DIR               stops everything (SIGTERM, then SIGKILL); idempotent
#
# `start` prints, on success:
#   url postgres://postgres@127.0.0.1:P1,127.0.0.1:P2/edgekv?target_session_attrs=read-write
#   node1 PGPORT1 RESTPORT1 PID1
#   node2 PGPORT2 RESTPORT2 PID2
#   ready
# and writes the same facts to DIR/cluster.env. Logs: DIR/etcd.log, DIR/node1.log,
# DIR/node2.log (Patroni's and PostgreSQL's output). As root, everything runs as
# the postgres user (PostgreSQL refuses to run as root) and DIR is chowned to it.
#
# Ports: six free ones on 127.0.0.1 between 32100 and 32700 (apart from the
# 20000-32000 the end-to-end tests restart their servers on). Timing on a
# 2-core machine: start 10-15 s, failover after kill-leader about 10 s (ttl 10,
# loop_wait 2, retry_timeout 4), stop up to 6 s.
# Needs Debian's patroni, etcd-server, postgresql and curl packages.
# Environment: PG_BIN_DIR (default: the newest /usr/lib/postgresql/*/bin),
# HA_START_TIMEOUT (default 90 s).
set -euo pipefail

PY=/usr/bin/python3   # Patroni's own interpreter; not whatever python3 is first on PATH
SCOPE=edgekv

die() { echo "ha-postgres: error: $*" >&2; exit 1; }
say() { echo "ha-postgres: $*" >&2; }

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# --- prerequisites ----------------------------------------------------------

pg_bin_dir() {
  if [ -n "${PG_BIN_DIR:-}" ]; then
    echo "$PG_BIN_DIR"
    return
  fi
  local d best="" v
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] || continue
    v=$(basename "$(dirname "$d")")
    if [ -z "$best" ] || [ "${v%%.*}" -gt "$(basename "$(dirname "$best")" | cut -d. -f1)" ]; then best=$d; fi
  done
  echo "$best"
}

check_prereqs() {
  local missing=()
  command -v patroni >/dev/null 2>&1 || missing+=("patroni (apt-get install --no-install-recommends patroni)")
  command -v etcd >/dev/null 2>&1 || missing+=("etcd (apt-get install --no-install-recommends etcd-server)")
  [ -x "$PY" ] || missing+=("$PY (comes with the patroni package)")
  command -v curl >/dev/null 2>&1 || missing+=("curl (apt-get install curl)")
  command -v psql >/dev/null 2>&1 || missing+=("psql (apt-get install postgresql-client)")
  command -v pgrep >/dev/null 2>&1 || missing+=("pgrep (apt-get install procps)")
  local bin
  bin=$(pg_bin_dir)
  [ -n "$bin" ] && [ -x "$bin/initdb" ] || missing+=("initdb under /usr/lib/postgresql/*/bin (apt-get install postgresql), or set PG_BIN_DIR")
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'ha-postgres: error: missing %s\n' "${missing[@]}" >&2
    exit 1
  fi
}

# --- helpers ----------------------------------------------------------------

# The user the cluster runs as: postgres when we are root, else ourselves.
run_user() {
  if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi
}

# Starts "$@" in the background, in its own session, as the run user, with its
# output appended to LOG; writes the final process's pid to PIDFILE (the
# command is exec'd, so it is the pid of the program itself, not of a wrapper).
spawn() {
  local log=$1 pidfile=$2
  shift 2
  # shellcheck disable=SC2016 # expanded by that sh, not here
  local script='echo $$ > "$0"; exec "$@"'
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- setsid sh -c "$script" "$pidfile" "$@" </dev/null >>"$log" 2>&1 &
  else
    setsid sh -c "$script" "$pidfile" "$@" </dev/null >>"$log" 2>&1 &
  fi
  local _
  for _ in $(seq 1 50); do
    [ -s "$pidfile" ] && { cat "$pidfile"; return 0; }
    sleep 0.1
  done
  die "could not start $1 (no pid in $pidfile); see $log"
}

# N distinct free TCP ports on 127.0.0.1, below Linux's ephemeral range
# (32768+) so that outgoing connections do not take them in the meantime.
free_ports() {
  "$PY" - "$1" <<'EOF'
import random, socket, sys
n, ports, held = int(sys.argv[1]), [], []
while len(ports) < n:
    p = random.randint(32100, 32700)
    if p in ports:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    held.append(s)
    ports.append(p)
for s in held:
    s.close()
print(" ".join(map(str, ports)))
EOF
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# GET http://127.0.0.1:PORT/PATH from a Patroni REST API (empty on failure).
rest() { curl -s --max-time 2 "http://127.0.0.1:$1/$2" 2>/dev/null || true; }

load_env() {
  DIR=$(cd "$1" 2>/dev/null && pwd) || die "no such directory: $1"
  [ -f "$DIR/cluster.env" ] || die "$DIR/cluster.env not found: was the cluster started with 'start $1'?"
  # shellcheck disable=SC1091
  . "$DIR/cluster.env"
}

# node's variable by name: nv node1 PGPORT -> $NODE1_PGPORT
nv() {
  local var
  var="$(echo "$1" | tr '[:lower:]' '[:upper:]')_$2"
  echo "${!var}"
}

postmaster_pid() {
  local f="$DIR/$1/data/postmaster.pid"
  if [ -r "$f" ]; then head -n 1 "$f"; fi
}

# The leader according to the DCS, provided that node's own Patroni answers
# that it is the primary. Empty when there is none.
current_leader() {
  local n name=""
  for n in node1 node2; do
    alive "$(nv "$n" PID)" || continue
    name=$(rest "$(nv "$n" RESTPORT)" cluster | "$PY" -c '
import json, sys
try:
    members = json.load(sys.stdin)["members"]
except Exception:
    sys.exit(0)
print(next((m["name"] for m in members if m["role"] == "leader"), ""))')
    if [ -n "$name" ]; then break; fi
  done
  [ -n "$name" ] || return 0
  alive "$(nv "$name" PID)" || return 0
  local role
  role=$(rest "$(nv "$name" RESTPORT)" patroni | "$PY" -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    sys.exit(0)
print(d.get("role", "") if d.get("state") == "running" else "")')
  if [ "$role" = master ] || [ "$role" = primary ]; then echo "$name"; fi
}

# Is NAME's Patroni the leader, with a synchronous, streaming standby?
# Prints "ok" or what is missing.
cluster_state() {
  local leader=$1 other=$2
  local c p
  c=$(rest "$(nv "$leader" RESTPORT)" cluster)
  p=$(rest "$(nv "$leader" RESTPORT)" patroni)
  "$PY" - "$leader" "$other" "$c" "$p" <<'EOF'
import json, sys
leader, other, c, p = sys.argv[1:5]
try:
    members = {m["name"]: m for m in json.loads(c)["members"]}
    status = json.loads(p)
except Exception:
    print("no answer from the REST API yet"); sys.exit(0)
if members.get(leader, {}).get("role") != "leader" or status.get("role") not in ("master", "primary"):
    print(leader + " is not the leader yet"); sys.exit(0)
if members.get(other, {}).get("role") != "sync_standby" or members[other].get("state") != "running":
    print(other + " is not a running sync_standby yet: " + json.dumps(members.get(other))); sys.exit(0)
reps = [r for r in status.get("replication", []) if r.get("application_name") == other]
if not reps or reps[0].get("state") != "streaming" or reps[0].get("sync_state") != "sync":
    print(other + " is not streaming synchronously yet: " + json.dumps(reps)); sys.exit(0)
print("ok")
EOF
}

psql_at() {
  local port=$1
  shift
  PGCONNECT_TIMEOUT=3 timeout 10 psql -X -q -A -t -h 127.0.0.1 -p "$port" -U postgres "$@"
}

show_logs() {
  local f
  for f in "$DIR"/etcd.log "$DIR"/node1.log "$DIR"/node2.log; do
    [ -f "$f" ] || continue
    echo "----- tail of $f -----" >&2
    tail -n 30 "$f" >&2
  done
}

now_ms() { date +%s%3N; }
secs_since() { local d=$(( $(now_ms) - $1 )); printf '%d.%d' $((d / 1000)) $((d % 1000 / 100)); }

# --- configuration ----------------------------------------------------------

# patroni_config NAME PGPORT RESTPORT
patroni_config() {
  local name=$1 pgport=$2 restport=$3
  cat <<EOF
# Written by scripts/ha-postgres.sh: a throwaway test cluster.
scope: $SCOPE
name: $name

log:
  level: INFO

restapi:
  listen: 127.0.0.1:$restport
  connect_address: 127.0.0.1:$restport

# etcd 3.4 serves only the v3 API unless started with --enable-v2, so this is
# Patroni's etcd3 section, not etcd.
etcd3:
  hosts: 127.0.0.1:$ETCD_CLIENT_PORT

bootstrap:
  dcs:
    # A dead leader's key expires after ttl; the sync standby then promotes.
    # loop_wait + 2 * retry_timeout <= ttl.
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    # Not strict: a primary whose standby is gone keeps accepting writes
    # (unreplicated) rather than blocking, so the surviving node of a
    # two-node test cluster is writable after a failover.
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        hot_standby: "on"
  initdb:
    - encoding: UTF8
    - locale: C
    - auth: trust

postgresql:
  listen: 127.0.0.1:$pgport
  connect_address: 127.0.0.1:$pgport
  data_dir: $DIR/$name/data
  bin_dir: $BIN_DIR
  pgpass: $DIR/$name/pgpass
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  parameters:
    # TCP only: no socket file outside DIR, no path length limit.
    unix_socket_directories: ''
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust

watchdog:
  mode: "off"

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
EOF
}

# --- subcommands -------------------------------------------------------------

cmd_start() {
  check_prereqs
  [ -d "$1" ] || die "$1 is not a directory (create it first)"
  DIR=$(cd "$1" && pwd)
  [ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty"
  BIN_DIR=$(pg_bin_dir)
  local user timeout
  user=$(run_user)
  timeout=${HA_START_TIMEOUT:-90}

  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- test -x "$(dirname "$DIR")" ||
      die "the postgres user cannot reach $DIR (a parent directory is closed to it); use e.g. a directory under /tmp"
    chown postgres: "$DIR"
  fi
  chmod 700 "$DIR"

  local ports
  read -r -a ports <<<"$(free_ports 6)"
  ETCD_CLIENT_PORT=${ports[0]}
  ETCD_PEER_PORT=${ports[1]}
  NODE1_PGPORT=${ports[2]} NODE1_RESTPORT=${ports[3]}
  NODE2_PGPORT=${ports[4]} NODE2_RESTPORT=${ports[5]}
  URL="postgres://postgres@127.0.0.1:$NODE1_PGPORT,127.0.0.1:$NODE2_PGPORT/edgekv?target_session_attrs=read-write"
  ETCD_PID="" NODE1_PID="" NODE2_PID=""

  # From here on, a failure stops what was started and shows the logs.
  trap on_start_exit EXIT

  local n
  for n in node1 node2; do
    mkdir -p "$DIR/$n"
    patroni_config "$n" "$(nv "$n" PGPORT)" "$(nv "$n" RESTPORT)" >"$DIR/$n.yml"
  done
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$DIR"

  local url="http://127.0.0.1:$ETCD_CLIENT_PORT" peer="http://127.0.0.1:$ETCD_PEER_PORT"
  ETCD_PID=$(spawn "$DIR/etcd.log" "$DIR/etcd.pid" etcd \
    --name "$SCOPE" --data-dir "$DIR/etcd" \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "$SCOPE=$peer" --initial-cluster-state new \
    --initial-cluster-token "$SCOPE-$ETCD_CLIENT_PORT")
  write_env

  local start deadline
  start=$(now_ms)
  deadline=$(( $(date +%s) + timeout ))
  until curl -s --max-time 2 "$url/health" 2>/dev/null | grep -q '"health":"true"'; do
    alive "$ETCD_PID" || die "etcd exited; see $DIR/etcd.log"
    [ "$(date +%s)" -lt "$deadline" ] || die "etcd not healthy after ${timeout}s"
    sleep 0.2
  done

  # node1 first, so that it is the one that bootstraps (either would do).
  NODE1_PID=$(spawn "$DIR/node1.log" "$DIR/node1.pid" patroni "$DIR/node1.yml")
  write_env
  sleep 1
  NODE2_PID=$(spawn "$DIR/node2.log" "$DIR/node2.pid" patroni "$DIR/node2.yml")
  write_env

  local state="" leader=""
  while :; do
    alive "$NODE1_PID" || die "patroni node1 exited; see $DIR/node1.log"
    alive "$NODE2_PID" || die "patroni node2 exited; see $DIR/node2.log"
    leader=$(current_leader)
    if [ -n "$leader" ]; then
      local other=node1
      [ "$leader" = node1 ] && other=node2
      state=$(cluster_state "$leader" "$other")
      [ "$state" = ok ] && break
    else
      state="no leader yet"
    fi
    [ "$(date +%s)" -lt "$deadline" ] ||
      die "the cluster was not ready after ${timeout}s (one leader and one streaming sync standby): $state"
    sleep 0.5
  done

  local port
  port=$(nv "$leader" PGPORT)
  if [ "$(psql_at "$port" -d postgres -c "select 1 from pg_database where datname = 'edgekv'")" != 1 ]; then
    psql_at "$port" -d postgres -c 'create database edgekv owner postgres' >/dev/null ||
      die "could not create the database edgekv on $leader"
  fi
  [ "$(psql "$URL" -X -A -t -c 'select pg_is_in_recovery()')" = f ] ||
    die "$URL does not reach the primary"

  trap - EXIT
  say "ready in $(secs_since "$start") s; leader $leader; logs in $DIR/*.log; run as $user"
  echo "url $URL"
  echo "node1 $NODE1_PGPORT $NODE1_RESTPORT $NODE1_PID"
  echo "node2 $NODE2_PGPORT $NODE2_RESTPORT $NODE2_PID"
  echo "ready"
}

# A failed start shows the logs and stops whatever it had started.
on_start_exit() {
  local rc=$?
  [ "$rc" -ne 0 ] || return 0
  show_logs
  write_env
  cmd_stop_loaded >/dev/null 2>&1 || true
}

write_env() {
  {
    echo "# Written by scripts/ha-postgres.sh start; read by its other subcommands."
    printf 'DIR=%q\n' "$DIR"
    printf 'URL=%q\n' "$URL"
    echo "ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT"
    echo "ETCD_PEER_PORT=$ETCD_PEER_PORT"
    echo "ETCD_PID=$ETCD_PID"
    echo "NODE1_PGPORT=$NODE1_PGPORT"
    echo "NODE1_RESTPORT=$NODE1_RESTPORT"
    echo "NODE1_PID=$NODE1_PID"
    echo "NODE2_PGPORT=$NODE2_PGPORT"
    echo "NODE2_RESTPORT=$NODE2_RESTPORT"
    echo "NODE2_PID=$NODE2_PID"
  } >"$DIR/cluster.env.tmp"
  mv "$DIR/cluster.env.tmp" "$DIR/cluster.env"
}

cmd_leader() {
  load_env "$1"
  local leader
  leader=$(current_leader)
  [ -n "$leader" ] || die "no live leader at the moment"
  echo "$leader"
}

cmd_kill_leader() {
  load_env "$1"
  local leader
  leader=$(current_leader)
  [ -n "$leader" ] || die "no live leader to kill"
  local ppid pids
  ppid=$(postmaster_pid "$leader")
  # patroni, the postmaster and the postmaster's children, all at once.
  pids="$(nv "$leader" PID) $ppid"
  [ -n "$ppid" ] && pids="$pids $(pgrep -P "$ppid" | tr '\n' ' ')"
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  now_ms >"$DIR/killed_at"
  echo "$leader" >"$DIR/killed"
  echo "$leader"
}

cmd_wait_leader() {
  load_env "$1"
  local timeout=${2:-60}
  local start deadline n
  start=$(now_ms)
  deadline=$(( $(date +%s) + timeout ))
  while :; do
    n=$(current_leader)
    if [ -n "$n" ] && [ "$(psql_at "$(nv "$n" PGPORT)" -d edgekv -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; then
      break
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { show_logs; die "no writable leader after ${timeout}s"; }
    sleep 0.2
  done
  if [ -f "$DIR/killed_at" ]; then
    say "$n is the leader, $(secs_since "$(cat "$DIR/killed_at")") s after kill-leader killed $(cat "$DIR/killed")"
  fi
  echo "$n $(secs_since "$start")"
}

# Sends SIG to the pids given that are alive; waits up to S seconds for them.
signal_and_wait() {
  local sig=$1 secs=$2
  shift 2
  local p live=()
  for p in "$@"; do alive "$p" && live+=("$p"); done
  [ ${#live[@]} -gt 0 ] || return 0
  kill "-$sig" "${live[@]}" 2>/dev/null || true
  local _
  for _ in $(seq 1 $((secs * 10))); do
    local any=0
    for p in "${live[@]}"; do alive "$p" && any=1; done
    [ $any -eq 0 ] && return 0
    sleep 0.1
  done
  return 1
}

# A pid from cluster.env is only ours if the process still looks like ours
# (pids get reused): patroni/etcd with DIR on the command line.
ours() {
  local p=$1
  alive "$p" || return 1
  tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$DIR"
}

node_pids() {
  local n=$1 p pm
  p=$(nv "$n" PID)
  ours "$p" && echo "$p"
  pm=$(postmaster_pid "$n")
  if [ -n "$pm" ] && ours "$pm"; then
    echo "$pm"
    pgrep -P "$pm" || true
  fi
}

cmd_stop_loaded() {
  local pids
  # Patroni stops its PostgreSQL on SIGTERM.
  pids=$(for n in node1 node2; do ours "$(nv "$n" PID)" && nv "$n" PID; done; true)
  # shellcheck disable=SC2086
  signal_and_wait TERM 20 $pids || true
  pids=$(node_pids node1; node_pids node2; true)
  # shellcheck disable=SC2086
  signal_and_wait KILL 5 $pids || true
  if ours "$ETCD_PID"; then
    signal_and_wait TERM 10 "$ETCD_PID" || signal_and_wait KILL 5 "$ETCD_PID" || true
  fi
  local left
  left=$(node_pids node1; node_pids node2; ours "$ETCD_PID" && echo "$ETCD_PID"; true)
  [ -z "$left" ] || die "processes still running: $(echo "$left" | tr '\n' ' ')"
  echo "stopped"
}

cmd_stop() {
  if [ ! -f "$1/cluster.env" ]; then
    echo "stopped"
    return 0
  fi
  load_env "$1"
  cmd_stop_loaded
}

main() {
  [ $# -ge 2 ] || usage
  local cmd=$1
  shift
  case "$cmd" in
    start) [ $# -eq 1 ] || usage; cmd_start "$1" ;;
    leader) [ $# -eq 1 ] || usage; cmd_leader "$1" ;;
    kill-leader) [ $# -eq 1 ] || usage; cmd_kill_leader "$1" ;;
    wait-leader) [ $# -le 2 ] || usage; cmd_wait_leader "$@" ;;
    stop) [ $# -eq 1 ] || usage; cmd_stop "$1" ;;
    *) usage ;;
  esac
}

main "$@"

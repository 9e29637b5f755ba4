#!/usr/bin/env bash
# A real multi-node Ray cluster on this machine: a head node and N worker nodes on loopback, each a
# separate `ray start` with its own ports, temp dir and resources (CPUs, object store).
#
#   cluster/local.sh start N [CPUS]   # head + N worker nodes, CPUS each (default 1); prints the address
#   cluster/local.sh status           # the address, the nodes' temp dirs, `ray status`
#   cluster/local.sh stop             # stops exactly the processes this script started
#
# Why not `ray stop`: it ends every Ray process on the machine, other users' and other tests' included.
# Instead every process of this cluster carries DGC_CLUSTER_ID=<id> in its environment (set on the
# `ray start` commands and inherited by everything Ray spawns: GCS, raylets, agents, workers); `stop`
# kills exactly the processes whose environment holds this cluster's id, TERM first, KILL after 5 s
# (Ray's agents survive a TERM to their raylet otherwise).
#
# State lives in $DISTGRAPH_LOCAL_CLUSTER (default /tmp/dgc; keep it short: Ray's Unix socket paths
# under it must stay below ~107 bytes): `state` (address, cluster id, temp dirs, the PIDs at start),
# one temp dir and one log per node.
#
# Token authentication stays on (RAY_AUTH_MODE=token). Every node and every driver reads the same token:
# $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token, which `start` creates
# with `ray get-auth-token --generate` when none exists. Without token mode on the worker nodes too,
# the head refuses them (InvalidAuthToken).
set -Eeuo pipefail
ROOT=${DISTGRAPH_LOCAL_CLUSTER:-/tmp/dgc}
STATE=$ROOT/state
OBJECT_STORE_MB=${OBJECT_STORE_MB:-500}
export RAY_AUTH_MODE=token

# A free port that this start has not handed out already: the OS may hand a just-closed port out again, and Ray
# refuses two of its components on one port (a start failed so: node manager and dashboard both drew 56093).
# The ports drawn are kept in $ROOT/ports, since each $(free_port) runs in a subshell.
free_port() {
  python3 - "$ROOT/ports" <<'PY'
import socket, sys
path = sys.argv[1]
try:
    used = set(open(path).read().split())
except FileNotFoundError:
    used = set()
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
    s.close()
    if port not in used:
        break
with open(path, "a") as f:
    f.write(port + "\n")
print(port)
PY
}

# PIDs of every live process whose environment carries this cluster's id (zombies have no environment)
ours() {
  grep -lzx "DGC_CLUSTER_ID=$CLUSTER_ID" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 || true
}

start() {
  local n=${1:?usage: local.sh start N [CPUS]} cpus=${2:-1}
  if [[ -f $STATE ]]; then
    # shellcheck source=/dev/null
    source "$STATE"
    if [[ -n $(ours) ]]; then
      echo "a local cluster is already running at $ADDRESS (cluster/local.sh stop first)" >&2
      exit 1
    fi
  fi
  mkdir -p "$ROOT" && rm -rf "$ROOT"/n[0-9]* "$ROOT/ports"  # only what an earlier start left
  if [[ -z ${RAY_AUTH_TOKEN:-} && -z ${RAY_AUTH_TOKEN_PATH:-} && ! -s ~/.ray/auth_token ]]; then
    ray get-auth-token --generate >/dev/null
  fi
  CLUSTER_ID="dgc-$(date +%s)-$$"
  ADDRESS="127.0.0.1:$(free_port)"
  TEMP_DIRS=""
  save_state ""
  trap 'echo "start failed; see the logs in $ROOT" >&2; stop >/dev/null' ERR
  node 0 --head --port="${ADDRESS#*:}" --ray-client-server-port="$(free_port)" \
    --dashboard-port="$(free_port)" --include-dashboard=false
  for i in $(seq 1 "$n"); do
    node "$i" --address="$ADDRESS"
  done
  for _ in $(seq 1 120); do  # until every node has registered with the head
    [[ $(ray status --address "$ADDRESS" 2>/dev/null | grep -c " node_") -ge $((n + 1)) ]] && break
    sleep 0.5
  done
  trap - ERR
  save_state "$(ours | tr '\n' ' ')"
  echo "started 1 head + $n worker nodes ($cpus CPU each) on 127.0.0.1; state and logs in $ROOT"
  echo "export RAY_ADDRESS=$ADDRESS RAY_AUTH_MODE=token"
}

# node I ARGS...: one `ray start` with its own temp dir and ports, marked with the cluster id
node() {
  local i=$1
  shift
  TEMP_DIRS="$TEMP_DIRS $ROOT/n$i"
  save_state ""
  DGC_CLUSTER_ID=$CLUSTER_ID ray start "$@" --node-ip-address=127.0.0.1 --num-cpus="$cpus" \
    --node-manager-port="$(free_port)" --object-manager-port="$(free_port)" \
    --object-store-memory=$((OBJECT_STORE_MB << 20)) --temp-dir="$ROOT/n$i" --disable-usage-stats \
    >"$ROOT/n$i.log" 2>&1
}

save_state() {
  printf 'ADDRESS=%q\nCLUSTER_ID=%q\nTEMP_DIRS=%q\nPIDS=%q\n' "$ADDRESS" "$CLUSTER_ID" "${TEMP_DIRS# }" "$1" >"$STATE"
}

stop() {
  if [[ ! -f $STATE ]]; then
    echo "no local cluster in $ROOT"
    return 0
  fi
  # shellcheck source=/dev/null
  source "$STATE"
  local p i
  p=$(ours)
  [[ -n $p ]] && { kill -TERM $p 2>/dev/null || true; }
  for i in $(seq 1 100); do  # TERM for 5 s, then KILL whatever is left (or appeared meanwhile)
    p=$(ours)
    [[ -z $p ]] && break
    ((i > 25)) && { kill -KILL $p 2>/dev/null || true; }
    sleep 0.2
  done
  if [[ -n $p ]]; then
    echo "could not stop processes $p of $CLUSTER_ID" >&2
    exit 1
  fi
  rm -f "$STATE"
  echo "stopped the local cluster $CLUSTER_ID ($ROOT)"
}

status() {
  if [[ ! -f $STATE ]]; then
    echo "no local cluster in $ROOT"
    exit 1
  fi
  # shellcheck source=/dev/null
  source "$STATE"
  echo "address $ADDRESS; cluster id $CLUSTER_ID; $(ours | wc -l) live processes; nodes' temp dirs: $TEMP_DIRS"
  ray status --address "$ADDRESS"
}

case "${1:-}" in
  start) start "${2:-1}" "${3:-${CPUS_PER_NODE:-1}}" ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: cluster/local.sh start N [CPUS] | stop | status" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# A real multi-node Ray cluster on this machine: a head node and N worker nodes on loopback, each a
# separate `ray start` with its own ports, temp dir and resources.
#
#   cluster/local.sh start N      # prints: export RAY_ADDRESS=127.0.0.1:PORT
#   cluster/local.sh status
#   cluster/local.sh stop         # stops exactly the processes this script started
#
# Never uses `ray stop` (it ends every Ray process on the machine, other users' included): the
# nodes are found by their temp dirs, which live under $DISTGRAPH_LOCAL_CLUSTER (default
# /tmp/dgc). Token authentication stays on (RAY_AUTH_MODE=token; the token is ~/.ray/auth_token).
# CPUS_PER_NODE (default 1) sets each node's CPUs.
set -euo pipefail
ROOT=${DISTGRAPH_LOCAL_CLUSTER:-/tmp/dgc}
CPUS=${CPUS_PER_NODE:-1}
export RAY_AUTH_MODE=token

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pids() { pgrep -f -- "$ROOT/n[0-9]" || true; }

start() {
  local n=${1:?usage: local.sh start N}
  if [[ -f "$ROOT/address" ]]; then
    echo "a local cluster is already running at $(cat "$ROOT/address") (cluster/local.sh stop first)" >&2
    exit 1
  fi
  mkdir -p "$ROOT"
  local port; port=$(free_port)
  ray start --head --node-ip-address=127.0.0.1 --port="$port" --num-cpus="$CPUS" \
    --temp-dir="$ROOT/n0" --include-dashboard=false --disable-usage-stats >"$ROOT/n0.log" 2>&1
  echo "127.0.0.1:$port" >"$ROOT/address"
  for i in $(seq 1 "$n"); do
    ray start --address="127.0.0.1:$port" --node-ip-address=127.0.0.1 --num-cpus="$CPUS" \
      --node-manager-port="$(free_port)" --object-manager-port="$(free_port)" \
      --temp-dir="$ROOT/n$i" --disable-usage-stats >"$ROOT/n$i.log" 2>&1
  done
  for _ in $(seq 1 120); do  # wait until every node has registered with the head
    [[ $(ray status --address "127.0.0.1:$port" 2>/dev/null | grep -c " node_") -ge $((n + 1)) ]] && break
    sleep 0.5
  done
  echo "started 1 head + $n worker nodes ($CPUS CPU each); logs in $ROOT"
  echo "export RAY_ADDRESS=127.0.0.1:$port"
}

stop() {
  local p; p=$(pids)
  if [[ -n "$p" ]]; then
    kill -TERM $p 2>/dev/null || true
    for _ in $(seq 1 50); do [[ -z "$(pids)" ]] && break; sleep 0.2; done
    p=$(pids)
    [[ -n "$p" ]] && kill -KILL $p 2>/dev/null || true
  fi
  rm -f "$ROOT/address"
  echo "stopped the local cluster in $ROOT"
}

status() {
  if [[ ! -f "$ROOT/address" ]]; then echo "no local cluster running ($ROOT)"; exit 1; fi
  echo "address $(cat "$ROOT/address"); $(pids | wc -l) processes"
  ray status --address "$(cat "$ROOT/address")"
}

case "${1:-}" in
  start) start "${2:-1}" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: cluster/local.sh start N | stop | status" >&2; exit 2 ;;
esac

#!/bin/sh
# The durable part of the cluster example in one command: a private
# `nats-server -js` with its store in a temporary folder, on a free loopback
# port; the payer stores five payments while no node listens; the server is
# killed (-9) and started again on its store; then a ledger node starts and
# books every payment, in order. Everything is stopped by PID at the end.
# Run from anywhere: sh examples/cluster/durable.sh [MBRUN] (make
# run-durable). Every wait is bounded.
set -u
here=$(cd "$(dirname "$0")" && pwd)
mbrun=${1:-$here/../../build/mbrun}
server=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
tmp=$(mktemp -d)
srv=""
node=""
cleanup() {
  for p in $node $srv; do kill -TERM "$p" 2>/dev/null; done
  for p in $node $srv; do
    i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL "$p" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# start_server PORT: nats-server -js on PORT (-1: a free one); sets srv and url
start_server() {
  "$server" -a 127.0.0.1 -p "$1" -js -sd "$tmp/js" --ports_file_dir "$tmp" >> "$tmp/server.log" 2>&1 &
  srv=$!
  i=0; while [ ! -s "$tmp/nats-server_$srv.ports" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
  url=$(sed -n 's/.*"\(nats:[^"]*\)".*/\1/p' "$tmp/nats-server_$srv.ports" 2>/dev/null)
  [ -n "$url" ]
}
start_server -1 || { echo "durable.sh: nats-server -js did not start (see $tmp/server.log)"; exit 1; }
echo "nats-server -js at $url"

(cd "$here" && "$mbrun" -w 1 --nats "$url" --node payer payer.lua) || exit 1

kill -KILL "$srv"
i=0; while kill -0 "$srv" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
port=${url##*:}
i=0; until start_server "$port"; do # the same port, its store kept
  i=$((i+1)); [ $i -lt 20 ] || { echo "durable.sh: nats-server did not restart"; exit 1; }
  sleep 0.1
done
echo "nats-server killed (-9) and started again on its store"

# the file is there before the node's shell opens it (a loaded machine may
# run the loop below first: grep would print nothing, and the test fail)
: > "$tmp/ledger.out"
(cd "$here" && NODE=ledger-1 exec "$mbrun" --nats "$url" --node ledger-1 -c ledger_node.lua) \
  > "$tmp/ledger.out" 2>&1 &
node=$!
i=0; while [ "$(grep -c booked "$tmp/ledger.out" 2>/dev/null)" -lt 5 ] && [ $i -lt 200 ]; do
  sleep 0.05; i=$((i+1))
done
kill -TERM "$node"
i=0; while kill -0 "$node" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
grep -v '^stack traceback\|^	' "$tmp/ledger.out" | sed "s/^/[ledger-1] /"
[ "$(grep -c booked "$tmp/ledger.out")" -eq 5 ]

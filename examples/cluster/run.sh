#!/bin/sh
# The cluster example in one command: a private nats-server on a free
# loopback port, two billing nodes, the shop; everything stopped by PID at
# the end. Run from anywhere: sh examples/cluster/run.sh [MBRUN]
# (make run-cluster). Every wait is bounded.
set -u
here=$(cd "$(dirname "$0")" && pwd)
mbrun=${1:-$here/../../build/mbrun}
server=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
tmp=$(mktemp -d)
pids=""
cleanup() {
  for p in $pids; do kill -TERM "$p" 2>/dev/null; done
  for p in $pids; do
    i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL "$p" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

"$server" -a 127.0.0.1 -p -1 --ports_file_dir "$tmp" > "$tmp/server.log" 2>&1 &
pids="$!"
i=0; while [ ! -s "$tmp/nats-server_$pids.ports" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
url=$(sed -n 's/.*"\(nats:[^"]*\)".*/\1/p' "$tmp/nats-server_$pids.ports")
[ -n "$url" ] || { echo "run.sh: nats-server did not start (see $tmp/server.log)"; exit 1; }
echo "nats-server at $url"

for n in billing-1 billing-2; do
  (cd "$here" && NODE=$n exec "$mbrun" --nats "$url" --node "$n" -c node.lua) > "$tmp/$n.out" 2>&1 &
  pids="$! $pids"
done
for n in billing-1 billing-2; do
  i=0; while ! grep -q ready "$tmp/$n.out" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
done

(cd "$here" && NODE=shop "$mbrun" -w 1 --nats "$url" --node shop shop.lua)
status=$?
sleep 0.2
for p in $pids; do kill -TERM "$p" 2>/dev/null; done
sleep 0.5
for n in billing-1 billing-2; do sed "s/^/[$n] /" "$tmp/$n.out"; done
exit $status

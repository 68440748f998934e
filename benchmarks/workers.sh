#!/usr/bin/env bash
# add_sub at concurrency 32 against one and then two v2serve worker processes, with wrk and the server
# sharing both cores (no pinning: two workers need both). Also prints each server's resident memory.
# Run benchmarks/run.py once first: it builds benchmarks/.venvs/v2serve and benchmarks/.work/.
set -euo pipefail
cd "$(dirname "$0")/.."
python=benchmarks/.venvs/v2serve/bin/python
port=$("$python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
trap 'kill "${pid:-0}" 2> /dev/null || true' EXIT
for workers in 1 2; do
  PYTHONPATH=benchmarks/servers V2SERVE_IMPLEMENTATION_PACKAGES='["v2serve_models"]' "$python" -m v2serve serve benchmarks/.work/v2serve/add_sub --port "$port" \
    --workers "$workers" > "benchmarks/.work/workers-$workers.log" 2>&1 &
  pid=$!
  for _ in $(seq 150); do curl -sf "localhost:$port/v2/health/ready" > /dev/null && break; sleep 0.2; done
  sleep 1  # with several workers, the first answer can come before every worker listens
  BODY_FILE=benchmarks/.work/body-add_sub.bin CONTENT_TYPE=application/json \
    wrk -t1 -c32 -d10s -s benchmarks/post.lua "http://127.0.0.1:$port/v2/models/add_sub/infer" | grep "Requests/sec" \
    | sed "s/^/workers=$workers /"
  children=$( (ps -o rss= --ppid "$pid" || true) | awk '{s += $1} END {print s + 0}')
  echo "workers=$workers resident kB: supervisor $(ps -o rss= -p "$pid" | tr -d ' '), workers $children"
  kill -TERM "$pid"
  wait "$pid" || true
done

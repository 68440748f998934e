#!/usr/bin/env bash
# Where v2serve's time goes, and how much memory it needs:
#   1. py-spy samples the server (threads holding the GIL) (pinned to core 0) for 10 s of add_sub at c=32 (wrk on core 1) and prints
#      the functions with the most own time, from the folded stacks in benchmarks/.work/profile-add_sub.txt;
#   2. peak resident memory (VmHWM) of a server serving the large tensor (FP32 [1,3,224,224], 2.9 MB JSON)
#      at c=8 for 10 s, against its idle resident memory.
# Run benchmarks/run.py once first: it builds benchmarks/.venvs/v2serve and benchmarks/.work/.
set -euo pipefail
cd "$(dirname "$0")/.."
python=benchmarks/.venvs/v2serve/bin/python
"$python" -m pip install -q py-spy
port=$("$python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
trap 'kill "${pid:-0}" 2> /dev/null || true' EXIT

start() {
  PYTHONPATH=benchmarks/servers V2SERVE_IMPLEMENTATION_PACKAGES='["v2serve_models"]' taskset -c 0 "$python" -m v2serve serve "benchmarks/.work/v2serve/$1" \
    --port "$port" > "benchmarks/.work/profile-$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 150); do curl -sf "localhost:$port/v2/health/ready" > /dev/null && break; sleep 0.2; done
}

load() {  # model, body file, concurrency
  BODY_FILE="$2" CONTENT_TYPE=application/json taskset -c 1 \
    wrk -t1 "-c$3" -d10s -s benchmarks/post.lua "http://127.0.0.1:$port/v2/models/$1/infer" | grep "Requests/sec"
}

start add_sub
load add_sub benchmarks/.work/body-add_sub.bin 32 &
loading=$!
benchmarks/.venvs/v2serve/bin/py-spy record --pid "$pid" --duration 9 --rate 500 --gil --format raw \
  --output benchmarks/.work/profile-add_sub.txt > /dev/null 2>&1
wait "$loading" || true
kill -TERM "$pid"; wait "$pid" || true
echo "own time, top 25 (share of samples):"
"$python" - benchmarks/.work/profile-add_sub.txt << 'PY'
import collections, sys
own, total = collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, _, count = line.rstrip().rpartition(" ")
    frame = stack.split(";")[-1]
    own[frame] += int(count)
    total += int(count)
for frame, count in own.most_common(25):
    print(f"{100 * count / total:5.1f}%  {frame[:150]}")
PY

start channel_mean
idle=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
load channel_mean benchmarks/.work/body-large_tensor_json.bin 8
peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
echo "channel_mean server: idle resident ${idle} kB, peak while serving 2.9 MB JSON at c=8: ${peak} kB"
kill -TERM "$pid"; wait "$pid" || true

#!/usr/bin/env bash
# One worker process against two, over HTTP and gRPC: see workers.py, which does the work.
set -euo pipefail
exec python3 "$(dirname "$0")/workers.py" "$@"

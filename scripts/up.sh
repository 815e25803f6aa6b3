#!/usr/bin/env bash
# Starts a single-node pocketkube cluster in the background and says how to use it.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=${1:-/var/lib/pocketkube}
port=${POCKETKUBE_HTTPS_PORT:-6443}
pidfile="$data_dir/server.pid"
logfile="$data_dir/server.log"
mkdir -p "$data_dir"

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "pocketkube is already running (pid $(cat "$pidfile"), log $logfile)"
else
    setsid .venv/bin/pocketkube server --data-dir "$data_dir" --https-port "$port" >>"$logfile" 2>&1 < /dev/null &
    echo $! > "$pidfile"
    for _ in $(seq 1 300); do
        if grep -q "API server ready" "$logfile" 2>/dev/null; then break; fi
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "pocketkube server failed to start; last lines of $logfile:" >&2
            tail -n 20 "$logfile" >&2
            exit 1
        fi
        sleep 0.1
    done
    grep -q "API server ready" "$logfile" || { echo "pocketkube server did not become ready; see $logfile" >&2; exit 1; }
    echo "pocketkube is running (pid $(cat "$pidfile"), log $logfile)"
fi
cat <<TXT

Use the cluster:
    .venv/bin/pocketkube kubectl get namespaces
    export KUBECONFIG=$data_dir/kubeconfig.yaml   # for kubectl, Helm and client libraries
Stop it:
    make down
TXT

#!/usr/bin/env bash
# Runs seg_jax as one job of N processes on this machine: each process gets its own fake CPU
# devices and they meet at a coordinator on the loopback interface. It exercises exactly the
# multi-host code path (jax.distributed, per-process input, collective checkpoints) of a
# cluster, with no cluster.
#
#   launch/local_multiprocess.sh N [seg_jax.main flags...]
#   launch/local_multiprocess.sh 2 --config configs/demo.py --workdir runs/demo_2proc
#
# Environment:
#   DEVICES_PER_PROCESS  fake CPU devices per process (default 2)
#   COORDINATOR_PORT     loopback port of process 0 (default: a free one)
#   PYTHON               the interpreter (default python3, e.g. the one of an active venv)
# Output lines are prefixed with [process i]. If a process fails, the others are stopped and
# the script exits with that process's status.
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES [seg_jax.main flags...]" >&2
  exit 2
fi
num_processes=$1
shift
python=${PYTHON:-python3}
devices=${DEVICES_PER_PROCESS:-2}
port=${COORDINATOR_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

export JAX_PLATFORMS=cpu
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${devices}"

pids=()
stop_all() { kill "${pids[@]}" 2>/dev/null || true; }
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM

for ((id = 0; id < num_processes; id++)); do
  "$python" -u -m seg_jax.main --coordinator_address="127.0.0.1:${port}" \
    --num_processes="${num_processes}" --process_id="${id}" "$@" \
    > >(sed -u "s/^/[process ${id}] /") 2>&1 &
  pids+=($!)
done

# Wait for all; on the first failure stop the rest (they would wait for it until a timeout).
running=("${pids[@]}")
while ((${#running[@]})); do
  still=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
    else
      status=0
      wait "$pid" || status=$?
      if ((status != 0)); then
        echo "local_multiprocess.sh: a process exited with status ${status}; stopping the others." >&2
        stop_all
        wait || true
        exit "$status"
      fi
    fi
  done
  running=("${still[@]}")
  ((${#running[@]})) && sleep 0.5
done
wait  # the output prefixers

#!/usr/bin/env bash
# slurmserve node launcher for job 4242, rendered by slurmserve; run by one srun step with
# one task per node. Each task starts its node's container, streams the container's log to a
# file, stops the container on SIGTERM/SIGINT, and exits with the container's exit code.
# Compute nodes need only bash and docker.
set -euo pipefail

rank="${SLURM_PROCID:?slurmserve: SLURM_PROCID is unset; run this script under srun}"
case "$rank" in
  0)
    expected_host=gpu-1
    name=slurmserve-4242-0
    log=/shared/logs/4242/node-0-gpu-1.log
    wait_for=(192.0.2.2:24202)
    run_opts=(docker run --rm --name slurmserve-4242-0 --label slurmserve.job=4242 --label slurmserve.rank=0 --label slurmserve.role=mpi-launcher --label slurmserve.engine=trtllm --init --network host --ipc host --ulimit stack=67108864 --env-file /shared/logs/4242/node-0.env --add-host gpu-1:192.0.2.1 --add-host gpu-2:192.0.2.2 --gpus all --volume /shared/logs/4242/node-0:/slurmserve:ro)
    run_tail=(--entrypoint bash registry.example/engine:1.0 /slurmserve/trtllm-launch.sh)
    redact_file=''
    ;;
  1)
    expected_host=gpu-2
    name=slurmserve-4242-1
    log=/shared/logs/4242/node-1-gpu-2.log
    wait_for=()
    run_opts=(docker run --rm --name slurmserve-4242-1 --label slurmserve.job=4242 --label slurmserve.rank=1 --label slurmserve.role=mpi-worker --label slurmserve.engine=trtllm --init --network host --ipc host --ulimit stack=67108864 --env-file /shared/logs/4242/node-1.env --add-host gpu-1:192.0.2.1 --add-host gpu-2:192.0.2.2 --gpus all --volume /shared/logs/4242/node-1:/slurmserve:ro)
    run_tail=(--entrypoint bash registry.example/engine:1.0 /slurmserve/mpi-worker.sh)
    redact_file=''
    ;;
  *) echo "slurmserve: task $rank has no role in this plan" >&2; exit 0 ;;
esac

fact() { printf 'SLURMSERVE_FACT\t%s\t%s\t%s\n' "$rank" "$1" "$2"; }
fail() { fact failed "$*"; }  # the driver names the node and rank

here="${SLURMD_NODENAME:-$(hostname -s)}"
if [[ "$here" != "$expected_host" ]]; then
  fail "planned for $expected_host but running on $here; the allocation changed, re-run slurmserve"
  exit 3
fi

devices=()
missing_required=1
for pattern in '/dev/infiniband/uverbs*' /dev/infiniband/rdma_cm /dev/gdrdrv; do
  while IFS= read -r dev; do
    devices+=(--device "$dev")
    [[ "$dev" == */uverbs* ]] && missing_required=0
  done < <(compgen -G "$pattern" || true)
done
# RDMA registers pinned memory: lift memlock only where RDMA devices are passed through.
(( missing_required )) || devices+=(--ulimit memlock=-1)

deadline=$((SECONDS + 1800))
for target in "${wait_for[@]}"; do
  # Readiness order: poll the port this node depends on; no fixed sleeps. ([IPv6]:port)
  host=${target%:*}; host=${host#[}; host=${host%]}
  until (exec 3<>"/dev/tcp/$host/${target##*:}") 2>/dev/null; do
    if (( SECONDS >= deadline )); then
      fail "gave up waiting for $target after 1800s"
      exit 5
    fi
    sleep 0.2
  done
done

# A container with this job's name and label is ours from an earlier attempt of this job.
stale=$(docker ps --all --quiet --filter "name=^/${name}\$" --filter "label=slurmserve.job=4242")
[[ -z "$stale" ]] || docker rm --force "$stale" >/dev/null
# The same name without our label is someone else's container: never touched.
if [[ -n "$(docker ps --all --quiet --filter "name=^/${name}\$")" ]]; then
  fail "a container named $name exists on $here without the label slurmserve.job=4242; it is not ours, so it was left alone: remove or rename it and re-run"
  exit 6
fi

stopping=0
stop_container() {
  stopping=1
  docker stop --time 10 "$name" >/dev/null 2>&1 || true
}
trap 'stop_container' TERM INT HUP

# Secret values (API key, secret variables of --env-file) never reach the log, even when the
# engine prints them (SGLang logs its ServerArgs). Read by builtins: never in any argv.
secrets=()
redact() {
  local line s
  trap '' TERM INT HUP  # outlive the step's signals: the container's last lines still come
  while IFS= read -r line || [[ -n "$line" ]]; do
    for s in "${secrets[@]}"; do line=${line//"$s"/<redacted>}; done
    printf '%s\n' "$line"
  done
}
if [[ -n "$redact_file" ]]; then
  mapfile -t secrets <"$redact_file"
  "${run_opts[@]}" "${devices[@]}" "${run_tail[@]}" > >(redact >>"$log") 2>&1 &
else
  "${run_opts[@]}" "${devices[@]}" "${run_tail[@]}" >>"$log" 2>&1 &
fi
client=$!
fact started "$name"
# `wait` on a background job lets the trap run as soon as a signal arrives; the client
# returns when the container ends, with its exit code (125-127: docker could not run it).
while true; do
  wait "$client" && code=0 || code=$?
  kill -0 "$client" 2>/dev/null || break
  if (( stopping )); then
    # A stop that came while docker was still creating the container found nothing to stop.
    sleep 0.2
    stop_container
  fi
done
docker rm --force "$name" >/dev/null 2>&1 || true
if (( stopping )); then
  fact stopped "$name"
  exit 0
fi
if ! docker version >/dev/null 2>&1; then
  fail "docker on $here stopped or does not answer (the client of container $name returned $code); restart dockerd there"
elif (( code >= 125 && code <= 127 )); then
  fail "docker could not run the container (code $code): $(tail -n1 "$log")"
else
  fail "container $name exited with code $code"
fi
exit "$code"

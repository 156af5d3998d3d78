#!/usr/bin/env bash
# slurmserve node launcher for job 4242, rendered by slurmserve; run by one srun step with
# one task per node.
# Each task starts its node's container (docker), streams its log to a file, stops it on
# SIGTERM/SIGINT, and exits with its exit code. Compute nodes need only bash and the runtime.
set -euo pipefail

task="${SLURM_PROCID:?slurmserve: SLURM_PROCID is unset; run this script under srun}"
rank=$((task / 1))  # block distribution: a node's tasks are consecutive
first_task=$((task % 1 == 0))  # a node's first task speaks for it
case "$rank" in
  0)
    expected_host=gpu-1
    name=slurmserve-4242-0
    log=/shared/logs/4242/node-0-gpu-1.log
    wait_for=()
    run_opts=(docker run --rm --name slurmserve-4242-0 --label slurmserve.job=4242 --label slurmserve.rank=0 --label slurmserve.role=head --label slurmserve.engine=sglang --init --network host --ipc host --ulimit stack=67108864 --env-file /shared/logs/4242/node-0.env --add-host gpu-1:192.0.2.1 --add-host gpu-2:192.0.2.2)
    run_tail=(--entrypoint python3 registry.example/engine:1.0 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-V3 --tp-size 16 --dp-size 2 --host 0.0.0.0 --port 30000 --enable-metrics --enable-dp-attention --nnodes 2 --node-rank 0 --dist-init-addr 192.0.2.1:24200)
    redact_file=''
    prepare=1
    ;;
  1)
    expected_host=gpu-2
    name=slurmserve-4242-1
    log=/shared/logs/4242/node-1-gpu-2.log
    wait_for=()
    run_opts=(docker run --rm --name slurmserve-4242-1 --label slurmserve.job=4242 --label slurmserve.rank=1 --label slurmserve.role=worker --label slurmserve.engine=sglang --init --network host --ipc host --ulimit stack=67108864 --env-file /shared/logs/4242/node-1.env --add-host gpu-1:192.0.2.1 --add-host gpu-2:192.0.2.2)
    run_tail=(--entrypoint python3 registry.example/engine:1.0 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-V3 --tp-size 16 --dp-size 2 --host 0.0.0.0 --port 30000 --enable-metrics --enable-dp-attention --nnodes 2 --node-rank 1 --dist-init-addr 192.0.2.1:24200)
    redact_file=''
    prepare=1
    ;;
  *) echo "slurmserve: task $rank has no role in this plan" >&2; exit 0 ;;
esac

fact() { printf 'SLURMSERVE_FACT\t%s\t%s\t%s\n' "$rank" "$1" "$2"; }
image=registry.example/engine:1.0
# Daemon runtime (docker): named containers labelled slurmserve.job=JOB in each node's store.
# The rt_* functions every template calls (contract: slurmserve/runtimes/__init__.py).
rt_has_image() { docker image inspect --format '{{.Id}}' "$image" 2>/dev/null; }

rt_load() {  # SOURCE COMPRESSED: load a `docker save` tarball
  if (( $2 )); then
    if command -v pigz >/dev/null 2>&1; then unzip=(pigz -dc); else unzip=(gzip -dc); fi
    "${unzip[@]}" "$1" | docker load 2>&1
  else
    docker load --input "$1" 2>&1
  fi
}

rt_pull() { docker pull --quiet "$1" 2>&1; }

rt_exec() {  # NETWORK ENV_FILE MOUNTS -- ARGV: one throwaway container of $image
  local network=$1 env_file=$2 mounts=$3 opts=() m
  shift 4
  [[ -z "$env_file" ]] || opts+=(--env-file "$env_file")
  IFS=, read -ra m <<<"$mounts"
  for mount in "${m[@]}"; do opts+=(--volume "$mount"); done
  docker run --rm --interactive --network "$network" --label slurmserve.job=4242 "${opts[@]}" \
    --entrypoint "$1" "$image" "${@:2}"
}

rt_prepare() {  # NAME: a stale container of ours goes; someone else's is left alone
  local id job
  # One listing of the containers of that name, each with its job label ("" if it has none).
  while read -r id job; do
    if [[ -n "$job" && "$job" == 4242 ]]; then
      docker rm --force "$id" >/dev/null
    else
      echo "a container named $1 exists on $here without the label slurmserve.job=4242; it is not ours, so it was left alone: remove or rename it and re-run"
      return 1
    fi
  done < <(docker ps --all --filter "name=^/?${1}\$" --format '{{.ID}} {{.Label "slurmserve.job"}}')
}

rt_device_opts() {  # DEVICES...: pass each through; RDMA registers pinned memory (memlock)
  device_opts=()
  local dev rdma=0
  for dev in "$@"; do
    device_opts+=(--device "$dev")
    [[ "$dev" == */uverbs* ]] && rdma=1
  done
  (( rdma )) && device_opts+=(--ulimit memlock=-1)
  return 0
}

rt_gpu_opts() {  # IDS ("" none, "all", or the global indices SLURM gave this job here)
  gpu_opts=()
  [[ -z "$1" ]] && return 0
  if [[ "$1" == all ]]; then gpu_opts=(--gpus all); else gpu_opts=(--gpus "\"device=$1\""); fi
}

rt_stop() { docker stop --time 10 "$1" >/dev/null 2>&1 || true; }  # NAME PID

rt_after() {  # NAME: its container if still there and ours (not one that took the name since)
  local id
  for id in $(docker ps --all --quiet --filter "name=^/?${1}\$" --filter label=slurmserve.job=4242 2>/dev/null); do
    docker rm --force "$id" >/dev/null 2>&1 || true
  done
}

rt_diagnose() {  # NAME CODE LOG: why the container ended
  if ! docker version >/dev/null 2>&1; then
    echo "docker on $here stopped or does not answer (the client of container $1 returned $2); restart it there"
  elif (( $2 >= 125 && $2 <= 127 )); then
    echo "docker could not run the container (code $2): $(tail -n1 "$3")"
  else
    echo "container $1 exited with code $2"
  fi
}

rt_remove() {  # JOB: remove its containers; prints how many (exit 1: docker did not answer)
  local ids id n=0
  ids=$(docker ps --all --quiet --filter "label=slurmserve.job=$1" 2>&1) || { echo "$ids" | tail -n1; return 1; }
  for id in $ids; do docker rm --force "$id" >/dev/null 2>&1 && n=$((n + 1)); done
  echo "$n"
}
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
    devices+=("$dev")
    [[ "$dev" == */uverbs* ]] && missing_required=0
  done < <(compgen -G "$pattern" || true)
done
rt_device_opts "${devices[@]}"

# Only the GPUs SLURM gave this job on this node, by global index (a node shared with another
# job must not hand it this job's GPUs, nor this job its): SLURM_STEP_GPUS, not the
# cgroup-relative CUDA_VISIBLE_DEVICES.
allocated="${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-}}"
case all in
  none) gpu_ids="" ;;
  all) gpu_ids="${allocated:-all}" ;;  # SLURM names none (no GRES): the node is the job's
  *)
    gpu_ids=all
    for id in ${gpu_ids//,/ }; do
      if [[ -n "$allocated" && ",$allocated," != *",$id,"* ]]; then
        fail "--gpus all names GPU $id, which SLURM did not give this job on $here (it gave $allocated)"
        exit 4
      fi
    done
    ;;
esac
rt_gpu_opts "$gpu_ids"
fact gpus "${gpu_ids:-none}"

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

# An earlier attempt's container of this name goes first (not someone else's). prepare=0: the
# preflight found nothing of this job here, so no listing; a container created since makes
# the runtime refuse the name (rt_diagnose), and nothing is removed.
if (( prepare )) && ! why=$(rt_prepare "$name"); then
  fail "$why"
  exit 6
fi

stopping=0
stop_container() {
  stopping=1
  rt_stop "$name" "${client:-}"
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
if (( stopping )); then  # SLURM's signal came before the container: start none
  rt_after "$name"
  exit 0
fi
if [[ -n "$redact_file" ]]; then
  mapfile -t secrets <"$redact_file"
  "${run_opts[@]}" "${device_opts[@]}" "${gpu_opts[@]}" "${run_tail[@]}" > >(redact >>"$log") 2>&1 &
else
  "${run_opts[@]}" "${device_opts[@]}" "${gpu_opts[@]}" "${run_tail[@]}" >>"$log" 2>&1 &
fi
client=$!
(( ! first_task )) || fact started "$name"
# `wait` on a background job lets the trap run as soon as a signal arrives; the client
# returns when the container ends, with its exit code. Once stopping, stop again until the
# client ends: a stop that came while the runtime was still creating the container found
# nothing to stop (bash reaps the ended client itself, so `kill -0` fails then).
while kill -0 "$client" 2>/dev/null; do
  if (( stopping )); then
    stop_container
    sleep 0.2
  else
    wait "$client" || true
  fi
done
wait "$client" && code=0 || code=$?
rt_after "$name"
if (( stopping )); then
  (( ! first_task )) || fact stopped "$name"
  exit 0
fi
fail "$(rt_diagnose "$name" "$code" "$log")"
exit "$code"

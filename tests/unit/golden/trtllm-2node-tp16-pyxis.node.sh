#!/usr/bin/env bash
# slurmserve node launcher for job 4242, rendered by slurmserve; run by one srun step with
# one task per node (8 here: an MPI world's ranks, each running its node's command).
# Each task starts its node's container (pyxis), streams its log to a file, stops it on
# SIGTERM/SIGINT, and exits with its exit code. Compute nodes need only bash and the runtime.
set -euo pipefail

task="${SLURM_PROCID:?slurmserve: SLURM_PROCID is unset; run this script under srun}"
rank=$((task / 8))  # block distribution: a node's tasks are consecutive
first_task=$((task % 8 == 0))  # a node's first task speaks for it
case "$rank" in
  0)
    expected_host=gpu-1
    name=slurmserve-4242-0
    log=/shared/logs/4242/node-0-gpu-1.log
    wait_for=()
    run_opts=(rt_with_env /shared/logs/4242/node-0.env /shared/logs/4242/node-0)
    run_tail=(trtllm-llmapi-launch trtllm-serve Qwen/Qwen2.5-72B-Instruct --host 0.0.0.0 --port 8000 --extra_llm_api_options /slurmserve/trtllm-config.yaml)
    redact_file=''
    prepare=1
    ;;
  1)
    expected_host=gpu-2
    name=slurmserve-4242-1
    log=/shared/logs/4242/node-1-gpu-2.log
    wait_for=()
    run_opts=(rt_with_env /shared/logs/4242/node-1.env /shared/logs/4242/node-1)
    run_tail=(trtllm-llmapi-launch trtllm-serve Qwen/Qwen2.5-72B-Instruct --host 0.0.0.0 --port 8000 --extra_llm_api_options /slurmserve/trtllm-config.yaml)
    redact_file=''
    prepare=1
    ;;
  *) echo "slurmserve: task $rank has no role in this plan" >&2; exit 0 ;;
esac

fact() { printf 'SLURMSERVE_FACT\t%s\t%s\t%s\n' "$rank" "$1" "$2"; }
image=registry.example/engine:1.0
# pyxis + enroot: in-image steps run inside the job's named container (srun --container-*).
# Step-native runtime: the engine is a process of this SLURM step. What it leaves behind is
# found by the job mark in its environment (SLURMSERVE_JOB=JOB), and only that is touched.
rt_node="${SLURMD_NODENAME:-$(hostname -s)}"
rt_marked() {  # JOB [STEP]: PIDs on this node whose environment carries the job's mark, but
  # not those of step STEP (this node's other tasks of an MPI world's step). One grep reads
  # every environment: teardown asks this several times a node.
  local entry file pid
  local -a order=()
  local -A ours=() here=() other_step=()
  while IFS= read -r -d '' entry; do
    file=${entry%%:*} entry=${entry#*:}
    case "$entry" in
      "SLURMSERVE_JOB=$1") [[ -n "${ours[$file]:-}" ]] || { ours[$file]=1; order+=("$file"); } ;;
      # and this node's name: on a test machine, nodes share one PID space
      "SLURMSERVE_NODE=$rt_node") here[$file]=1 ;;
      "SLURM_STEP_ID=${2:-}") [[ -z "${2:-}" ]] || other_step[$file]=1 ;;
    esac
  done < <(SLURMSERVE_JOB= exec grep -azH -e "^SLURMSERVE_JOB=" -e "^SLURMSERVE_NODE=" -e "^SLURM_STEP_ID=" \
             /proc/[0-9]*/environ 2>/dev/null)
  for file in "${order[@]}"; do
    [[ -n "${here[$file]:-}" && -z "${other_step[$file]:-}" ]] || continue
    pid=${file#/proc/}; pid=${pid%/environ}
    [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] || echo "$pid"
  done
}

# Within SLURM's KillWait: Ray's daemons, for one, outlive a SIGTERM once their engine is gone.
rt_kill_marked() {  # JOB [STEP]: TERM what carries the mark, KILL what is left after 1 s;
  # prints the count
  local pids n i
  mapfile -t pids < <(rt_marked "$1" "${2:-}")
  n=$(printf '%s\n' "${pids[@]}" | grep -c . || true)
  (( n )) || { echo 0; return 0; }
  kill -TERM "${pids[@]}" 2>/dev/null
  for ((i = 0; i < 5; i++)); do
    mapfile -t pids < <(rt_marked "$1" "${2:-}")
    [[ -n "${pids[*]}" ]] || break
    sleep 0.2
  done
  [[ -z "${pids[*]}" ]] || kill -KILL "${pids[@]}" 2>/dev/null
  echo "$n"
}

rt_with_env() {  # ENV_FILE FILES_DIR CMD...: CMD with the env file's variables (builtins only)
  local file=$1 files=$2 line
  shift 2
  (
    rt_image_path
    while IFS= read -r line || [[ -n "$line" ]]; do
      [[ "$line" == *=* ]] && export "${line%%=*}=${line#*=}"
    done <"$file"
    # Each node's files (and secrets) at /slurmserve, as the plan's commands expect.
    [[ -z "$files" ]] || ln -sfn "$files" /slurmserve
    exec "$@"
  )
}

rt_prepare() {  # NAME: what an earlier attempt of this job left on this node goes first (not
  # what this step's other tasks on the node started already)
  rt_kill_marked 4242 "${SLURM_STEP_ID:-}" >/dev/null
}

rt_device_opts() { device_opts=(); }  # the runtime passes the node's devices itself

rt_stop() {  # NAME PID: SIGTERM to the engine and all it started (what a cgroup-tracking
  # SLURM would signal; Ray's daemons left the process tree), SIGKILL after the grace period
  local i pids
  mapfile -t pids < <(rt_marked 4242)
  kill -TERM "$2" "${pids[@]}" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$2" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL "$2" 2>/dev/null || true
}

rt_after() { rt_kill_marked 4242 >/dev/null; }  # NAME: daemons the engine left (Ray)

rt_diagnose() { echo "the engine ($1) exited with code $2"; }  # NAME CODE LOG

# The image's own PATH (enroot writes its ENV to /etc/environment): enroot starts a login shell
# by default (ENROOT_LOGIN_SHELL), whose /etc/profile resets PATH, e.g. past an /opt/venv.
rt_image_path() {
  local line
  [[ -r /etc/environment ]] || return 0
  while IFS= read -r line; do
    [[ "$line" == PATH=* ]] && export "$line"
  done </etc/environment
  return 0
}

rt_has_image() { [[ -r "$image" ]] && echo "$image"; }  # a .sqsh (a reference: imported by pyxis)

rt_convert() {  # TARBALL OUT: `docker save` tarball -> enroot squashfs, with the tools' own
  local tar=$1 out=$2 id loaded
  loaded=$(podman load --input "$tar" 2>&1) || { echo "podman load failed: $(tail -n1 <<<"$loaded")"; return 1; }
  id=$(sed -n 's/^Loaded image[^:]*: *//p' <<<"$loaded" | tail -n1)
  [[ -n "$id" ]] || { echo "podman load named no image: $(tail -n1 <<<"$loaded")"; return 1; }
  # enroot 4.1's podman:// import removes its container with a hard-coded `docker rm`: let
  # that `docker` be podman, or the container stays and the import reports failure. Its
  # `podman create` gets no network: the default one would put a CNI bridge on this node.
  local shim rc=0 real
  real=$(command -v podman)
  shim=$(mktemp -d) && printf '#!/bin/sh\nexec podman "$@"\n' >"$shim/docker" &&
    printf '#!/bin/sh\nif [ "$1" = create ]; then shift; exec %q create --network=none "$@"; fi\nexec %q "$@"\n' \
      "$real" "$real" >"$shim/podman" && chmod 755 "$shim/docker" "$shim/podman"
  PATH="$shim:$PATH" enroot import --output "$out" "podman://$id" >"$shim/log" 2>&1 || rc=$?
  cat "$shim/log" >&2
  if (( rc )); then
    echo "enroot import podman://$id failed with code $rc: $(grep -v '^\s*$' "$shim/log" | tail -n1)"
    rm -rf "$shim"; return 1
  fi
  rm -rf "$shim"
  podman rmi "$id" >/dev/null 2>&1 || true  # only the conversion needed it
}

rt_exec() {  # NETWORK ENV_FILE MOUNTS -- ARGV: this step already runs in the image
  local env_file=$2
  shift 4
  rt_image_path
  if [[ -n "$env_file" ]]; then rt_with_env "$env_file" "" "$@"; else "$@"; fi
}

rt_gpu_opts() { gpu_opts=(); }  # the step's own GPUs: SLURM's cgroup and CUDA_VISIBLE_DEVICES

rt_remove() {  # JOB: its processes and its named enroot container on this node; prints count
  local n name
  n=$(rt_kill_marked "$1")
  if command -v enroot >/dev/null 2>&1; then
    while IFS= read -r name; do
      case "$name" in
        "pyxis_slurmserve-$1" | "pyxis_$1_slurmserve-$1") enroot remove --force "$name" >/dev/null 2>&1 ;;
      esac
    done < <(enroot list 2>/dev/null)
  fi
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

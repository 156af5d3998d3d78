#!/usr/bin/env bash
# slurmserve job script, rendered by `slurmserve render`. It carries the whole spec, so this file
# alone reproduces the job: `sbatch` it. The batch step runs the same driver as `slurmserve run`.
#SBATCH --job-name=slurmserve
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --output=/shared/logs/slurmserve-%j.out
set -euo pipefail

python=/shared/venv/bin/python
if ! [[ -x "$python" ]] || ! "$python" -c 'import slurmserve' 2>/dev/null; then
  echo "slurmserve: $python with slurmserve is not available on $(hostname); install slurmserve" \
       "in a venv on a shared path and re-render with --python PATH" >&2
  exit 2
fi

spec_file=$(mktemp "${TMPDIR:-/tmp}/slurmserve-spec.XXXXXX")
final_cleanup() {
  rm -f "$spec_file"
  # The driver tears down by itself; this last step covers a driver that could not (SIGKILL,
  # out of memory): remove whatever still carries this job's label, on every node.
  srun --overlap --nodes="$SLURM_JOB_NUM_NODES" --ntasks="$SLURM_JOB_NUM_NODES" \
       --ntasks-per-node=1 --job-name=slurmserve-final-cleanup \
       bash -c '#!/usr/bin/env bash
# slurmserve cleanup, rendered by slurmserve: on every node remove what carries our mark for the
# given job(s), and only that: containers by label (docker, podman), processes by the job mark
# (pyxis, apptainer). Runs each runtime named, where its tool is installed. Reports how many it
# removed, and whether the runtime answered (a node whose runtime is down cannot be checked).
# Extra job IDs may follow as arguments.
set -uo pipefail
rank="${SLURM_PROCID:-0}"
fact() { printf '"'"'SLURMSERVE_FACT\t%s\t%s\t%s\n'"'"' "$rank" "$1" "$2"; }
removed=0
remove_docker() (  # a subshell: this runtime'"'"'s rt_* functions stay in it
  image=""
# Daemon runtime (docker): named containers labelled slurmserve.job=JOB in each node'"'"'s store.
# The rt_* functions every template calls (contract: slurmserve/runtimes/__init__.py).
rt_has_image() { docker image inspect --format '"'"'{{.Id}}'"'"' "$image" 2>/dev/null; }

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
  docker run --rm --interactive --network "$network" --label slurmserve.job= "${opts[@]}" \
    --entrypoint "$1" "$image" "${@:2}"
}

rt_prepare() {  # NAME: a stale container of ours goes; someone else'"'"'s is left alone
  local id job
  # One listing of the containers of that name, each with its job label ("" if it has none).
  while read -r id job; do
    if [[ -n "$job" && "$job" == '"'"''"'"' ]]; then
      docker rm --force "$id" >/dev/null
    else
      echo "a container named $1 exists on $here without the label slurmserve.job=; it is not ours, so it was left alone: remove or rename it and re-run"
      return 1
    fi
  done < <(docker ps --all --filter "name=^/?${1}\$" --format '"'"'{{.ID}} {{.Label "slurmserve.job"}}'"'"')
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
  for id in $(docker ps --all --quiet --filter "name=^/?${1}\$" --filter label=slurmserve.job= 2>/dev/null); do
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
  total=0
  for job in "$@"; do
    n=$(rt_remove "$job" 2>&1) || { echo "error: docker: $(tail -n1 <<<"$n")"; return 1; }
    total=$((total + n))
  done
  echo "$total"
)
remove_podman() (  # a subshell: this runtime'"'"'s rt_* functions stay in it
  image=""
# Daemon runtime (podman): named containers labelled slurmserve.job=JOB in each node'"'"'s store.
# The rt_* functions every template calls (contract: slurmserve/runtimes/__init__.py).
rt_has_image() { podman image inspect --format '"'"'{{.Id}}'"'"' "$image" 2>/dev/null; }

rt_load() {  # SOURCE COMPRESSED: load a `docker save` tarball
  if (( $2 )); then
    if command -v pigz >/dev/null 2>&1; then unzip=(pigz -dc); else unzip=(gzip -dc); fi
    "${unzip[@]}" "$1" | podman load 2>&1
  else
    podman load --input "$1" 2>&1
  fi
}

rt_pull() { podman pull --quiet "$1" 2>&1; }

rt_exec() {  # NETWORK ENV_FILE MOUNTS -- ARGV: one throwaway container of $image
  local network=$1 env_file=$2 mounts=$3 opts=() m
  shift 4
  [[ -z "$env_file" ]] || opts+=(--env-file "$env_file")
  IFS=, read -ra m <<<"$mounts"
  for mount in "${m[@]}"; do opts+=(--volume "$mount"); done
  podman run --rm --interactive --network "$network" --label slurmserve.job= "${opts[@]}" \
    --entrypoint "$1" "$image" "${@:2}"
}

rt_prepare() {  # NAME: a stale container of ours goes; someone else'"'"'s is left alone
  local id job
  # One listing of the containers of that name, each with its job label ("" if it has none).
  while read -r id job; do
    if [[ -n "$job" && "$job" == '"'"''"'"' ]]; then
      podman rm --force "$id" >/dev/null
    else
      echo "a container named $1 exists on $here without the label slurmserve.job=; it is not ours, so it was left alone: remove or rename it and re-run"
      return 1
    fi
  done < <(podman ps --all --filter "name=^/?${1}\$" --format '"'"'{{.ID}} {{index .Labels "slurmserve.job"}}'"'"')
}

rt_device_opts() {  # DEVICES...: pass each through; RDMA registers pinned memory (memlock)
  device_opts=()
  local dev rdma=0
  for dev in "$@"; do
    device_opts+=(--device "$dev")
    [[ "$dev" == */uverbs* ]] && rdma=1
  done
  # podman runs with this task'"'"'s limits (--ulimit host): raise them here.
  ulimit -S -s 65536 2>/dev/null || true
  (( rdma )) && { ulimit -S -l unlimited 2>/dev/null || true; }
  return 0
}

rt_gpu_opts() {  # IDS ("" none, "all", or the global indices SLURM gave this job here)
  gpu_opts=()
  # CDI names (nvidia-ctk cdi generate): one device per global index.
  local id
  [[ -z "$1" ]] && return 0
  if [[ "$1" == all ]]; then gpu_opts=(--device nvidia.com/gpu=all); return 0; fi
  for id in ${1//,/ }; do gpu_opts+=(--device "nvidia.com/gpu=$id"); done
}

rt_stop() { podman stop --time 10 "$1" >/dev/null 2>&1 || true; }  # NAME PID

rt_after() {  # NAME: its container if still there and ours (not one that took the name since)
  local id
  for id in $(podman ps --all --quiet --filter "name=^/?${1}\$" --filter label=slurmserve.job= 2>/dev/null); do
    podman rm --force "$id" >/dev/null 2>&1 || true
  done
}

rt_diagnose() {  # NAME CODE LOG: why the container ended
  if ! podman version >/dev/null 2>&1; then
    echo "podman on $here stopped or does not answer (the client of container $1 returned $2); restart it there"
  elif (( $2 >= 125 && $2 <= 127 )); then
    echo "podman could not run the container (code $2): $(tail -n1 "$3")"
  else
    echo "container $1 exited with code $2"
  fi
}

rt_remove() {  # JOB: remove its containers; prints how many (exit 1: podman did not answer)
  local ids id n=0
  ids=$(podman ps --all --quiet --filter "label=slurmserve.job=$1" 2>&1) || { echo "$ids" | tail -n1; return 1; }
  for id in $ids; do podman rm --force "$id" >/dev/null 2>&1 && n=$((n + 1)); done
  echo "$n"
}
  total=0
  for job in "$@"; do
    n=$(rt_remove "$job" 2>&1) || { echo "error: podman: $(tail -n1 <<<"$n")"; return 1; }
    total=$((total + n))
  done
  echo "$total"
)
remove_pyxis() (  # a subshell: this runtime'"'"'s rt_* functions stay in it
  image=""
# pyxis + enroot: in-image steps run inside the job'"'"'s named container (srun --container-*).
# Step-native runtime: the engine is a process of this SLURM step. What it leaves behind is
# found by the job mark in its environment (SLURMSERVE_JOB=JOB), and only that is touched.
rt_node="${SLURMD_NODENAME:-$(hostname -s)}"
rt_marked() {  # JOB [STEP]: PIDs on this node whose environment carries the job'"'"'s mark, but
  # not those of step STEP (this node'"'"'s other tasks of an MPI world'"'"'s step). One grep reads
  # every environment: teardown asks this several times a node.
  local entry file pid
  local -a order=()
  local -A ours=() here=() other_step=()
  while IFS= read -r -d '"'"''"'"' entry; do
    file=${entry%%:*} entry=${entry#*:}
    case "$entry" in
      "SLURMSERVE_JOB=$1") [[ -n "${ours[$file]:-}" ]] || { ours[$file]=1; order+=("$file"); } ;;
      # and this node'"'"'s name: on a test machine, nodes share one PID space
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

# Within SLURM'"'"'s KillWait: Ray'"'"'s daemons, for one, outlive a SIGTERM once their engine is gone.
rt_kill_marked() {  # JOB [STEP]: TERM what carries the mark, KILL what is left after 1 s;
  # prints the count
  local pids n i
  mapfile -t pids < <(rt_marked "$1" "${2:-}")
  n=$(printf '"'"'%s\n'"'"' "${pids[@]}" | grep -c . || true)
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

rt_with_env() {  # ENV_FILE FILES_DIR CMD...: CMD with the env file'"'"'s variables (builtins only)
  local file=$1 files=$2 line
  shift 2
  (
    rt_image_path
    while IFS= read -r line || [[ -n "$line" ]]; do
      [[ "$line" == *=* ]] && export "${line%%=*}=${line#*=}"
    done <"$file"
    # Each node'"'"'s files (and secrets) at /slurmserve, as the plan'"'"'s commands expect.
    [[ -z "$files" ]] || ln -sfn "$files" /slurmserve
    exec "$@"
  )
}

rt_prepare() {  # NAME: what an earlier attempt of this job left on this node goes first (not
  # what this step'"'"'s other tasks on the node started already)
  rt_kill_marked '"'"''"'"' "${SLURM_STEP_ID:-}" >/dev/null
}

rt_device_opts() { device_opts=(); }  # the runtime passes the node'"'"'s devices itself

rt_stop() {  # NAME PID: SIGTERM to the engine and all it started (what a cgroup-tracking
  # SLURM would signal; Ray'"'"'s daemons left the process tree), SIGKILL after the grace period
  local i pids
  mapfile -t pids < <(rt_marked '"'"''"'"')
  kill -TERM "$2" "${pids[@]}" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$2" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL "$2" 2>/dev/null || true
}

rt_after() { rt_kill_marked '"'"''"'"' >/dev/null; }  # NAME: daemons the engine left (Ray)

rt_diagnose() { echo "the engine ($1) exited with code $2"; }  # NAME CODE LOG

# The image'"'"'s own PATH (enroot writes its ENV to /etc/environment): enroot starts a login shell
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

rt_convert() {  # TARBALL OUT: `docker save` tarball -> enroot squashfs, with the tools'"'"' own
  local tar=$1 out=$2 id loaded
  loaded=$(podman load --input "$tar" 2>&1) || { echo "podman load failed: $(tail -n1 <<<"$loaded")"; return 1; }
  id=$(sed -n '"'"'s/^Loaded image[^:]*: *//p'"'"' <<<"$loaded" | tail -n1)
  [[ -n "$id" ]] || { echo "podman load named no image: $(tail -n1 <<<"$loaded")"; return 1; }
  # enroot 4.1'"'"'s podman:// import removes its container with a hard-coded `docker rm`: let
  # that `docker` be podman, or the container stays and the import reports failure. Its
  # `podman create` gets no network: the default one would put a CNI bridge on this node.
  local shim rc=0 real
  real=$(command -v podman)
  shim=$(mktemp -d) && printf '"'"'#!/bin/sh\nexec podman "$@"\n'"'"' >"$shim/docker" &&
    printf '"'"'#!/bin/sh\nif [ "$1" = create ]; then shift; exec %q create --network=none "$@"; fi\nexec %q "$@"\n'"'"' \
      "$real" "$real" >"$shim/podman" && chmod 755 "$shim/docker" "$shim/podman"
  PATH="$shim:$PATH" enroot import --output "$out" "podman://$id" >"$shim/log" 2>&1 || rc=$?
  cat "$shim/log" >&2
  if (( rc )); then
    echo "enroot import podman://$id failed with code $rc: $(grep -v '"'"'^\s*$'"'"' "$shim/log" | tail -n1)"
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

rt_gpu_opts() { gpu_opts=(); }  # the step'"'"'s own GPUs: SLURM'"'"'s cgroup and CUDA_VISIBLE_DEVICES

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
  total=0
  for job in "$@"; do
    n=$(rt_remove "$job" 2>&1) || { echo "error: pyxis: $(tail -n1 <<<"$n")"; return 1; }
    total=$((total + n))
  done
  echo "$total"
)
remove_apptainer() (  # a subshell: this runtime'"'"'s rt_* functions stay in it
  image=""
# Apptainer/Singularity (experimental): `apptainer exec` of a .sif per node, a child of this task.
# Step-native runtime: the engine is a process of this SLURM step. What it leaves behind is
# found by the job mark in its environment (SLURMSERVE_JOB=JOB), and only that is touched.
rt_node="${SLURMD_NODENAME:-$(hostname -s)}"
rt_marked() {  # JOB [STEP]: PIDs on this node whose environment carries the job'"'"'s mark, but
  # not those of step STEP (this node'"'"'s other tasks of an MPI world'"'"'s step). One grep reads
  # every environment: teardown asks this several times a node.
  local entry file pid
  local -a order=()
  local -A ours=() here=() other_step=()
  while IFS= read -r -d '"'"''"'"' entry; do
    file=${entry%%:*} entry=${entry#*:}
    case "$entry" in
      "SLURMSERVE_JOB=$1") [[ -n "${ours[$file]:-}" ]] || { ours[$file]=1; order+=("$file"); } ;;
      # and this node'"'"'s name: on a test machine, nodes share one PID space
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

# Within SLURM'"'"'s KillWait: Ray'"'"'s daemons, for one, outlive a SIGTERM once their engine is gone.
rt_kill_marked() {  # JOB [STEP]: TERM what carries the mark, KILL what is left after 1 s;
  # prints the count
  local pids n i
  mapfile -t pids < <(rt_marked "$1" "${2:-}")
  n=$(printf '"'"'%s\n'"'"' "${pids[@]}" | grep -c . || true)
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

rt_with_env() {  # ENV_FILE FILES_DIR CMD...: CMD with the env file'"'"'s variables (builtins only)
  local file=$1 files=$2 line
  shift 2
  (
    while IFS= read -r line || [[ -n "$line" ]]; do
      [[ "$line" == *=* ]] && export "APPTAINERENV_${line%%=*}=${line#*=}"
    done <"$file"
    exec "$@"
  )
}

rt_prepare() {  # NAME: what an earlier attempt of this job left on this node goes first (not
  # what this step'"'"'s other tasks on the node started already)
  rt_kill_marked '"'"''"'"' "${SLURM_STEP_ID:-}" >/dev/null
}

rt_device_opts() { device_opts=(); }  # the runtime passes the node'"'"'s devices itself

rt_stop() {  # NAME PID: SIGTERM to the engine and all it started (what a cgroup-tracking
  # SLURM would signal; Ray'"'"'s daemons left the process tree), SIGKILL after the grace period
  local i pids
  mapfile -t pids < <(rt_marked '"'"''"'"')
  kill -TERM "$2" "${pids[@]}" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$2" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL "$2" 2>/dev/null || true
}

rt_after() { rt_kill_marked '"'"''"'"' >/dev/null; }  # NAME: daemons the engine left (Ray)

rt_diagnose() { echo "the engine ($1) exited with code $2"; }  # NAME CODE LOG

# A node with only SingularityCE: its binary under the name the run line uses (apptainer).
if ! command -v apptainer >/dev/null 2>&1 && command -v singularity >/dev/null 2>&1; then
  shim="${TMPDIR:-/tmp}/slurmserve-${SLURM_JOB_ID:-0}-bin"
  mkdir -p "$shim" && ln -sfn "$(command -v singularity)" "$shim/apptainer" && PATH="$shim:$PATH"
fi
rt_apptainer() { apptainer "$@"; }

rt_has_image() { [[ -r "$image" || "$image" == docker://* ]] && echo "$image"; }

rt_convert() {  # TARBALL OUT: `docker save` tarball -> .sif, with Apptainer'"'"'s own builder
  rt_apptainer build --force "$2" "docker-archive://$1" >&2 || { echo "apptainer build failed (its output is in this step'"'"'s log)"; return 1; }
}

rt_exec() {  # NETWORK ENV_FILE MOUNTS -- ARGV: one throwaway container of $image
  local network=$1 env_file=$2 mounts=$3 opts=() m
  shift 4
  IFS=, read -ra m <<<"$mounts"
  for mount in "${m[@]}"; do opts+=(--bind "$mount"); done
  [[ "$network" == none ]] && opts+=(--net --network none)
  if [[ -n "$env_file" ]]; then
    rt_with_env "$env_file" "" rt_apptainer exec --containall --cleanenv "${opts[@]}" "$image" "$@"
  else
    rt_apptainer exec --containall --cleanenv "${opts[@]}" "$image" "$@"
  fi
}

rt_gpu_opts() {  # IDS: --nv binds the driver; only the job'"'"'s GPUs are made visible
  gpu_opts=()
  [[ -z "$1" ]] && return 0
  gpu_opts=(--nv)
  [[ "$1" == all ]] && return 0
  # --cleanenv drops SLURM'"'"'s CUDA_VISIBLE_DEVICES (right for the step'"'"'s view): pass it on.
  export APPTAINERENV_NVIDIA_VISIBLE_DEVICES="$1"
  export APPTAINERENV_CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-$1}"
}

rt_device_opts() {  # DEVICES...: --containall hides the host'"'"'s /dev
  device_opts=()
  local dev var
  for dev in "$@"; do device_opts+=(--bind "$dev"); done
  # An MPI world'"'"'s step (srun --mpi=pmix): the ranks reach this node'"'"'s PMIx server by its
  # variables and its socket directory, which --cleanenv and --containall would hide.
  if [[ -n "${PMIX_SERVER_TMPDIR:-}" ]]; then
    device_opts+=(--bind "$PMIX_SERVER_TMPDIR")
    for var in $(compgen -e PMIX_) $(compgen -e SLURM_); do
      export "APPTAINERENV_$var=${!var}"
    done
  fi
}

rt_remove() { rt_kill_marked "$1"; }  # JOB
  total=0
  for job in "$@"; do
    n=$(rt_remove "$job" 2>&1) || { echo "error: apptainer: $(tail -n1 <<<"$n")"; return 1; }
    total=$((total + n))
  done
  echo "$total"
)
for name in docker podman pyxis apptainer; do
  # Only where the runtime'"'"'s tool is installed (the batch script'"'"'s last word, any runtime).
  case "$name" in
    apptainer) command -v apptainer >/dev/null 2>&1 || command -v singularity >/dev/null 2>&1 || continue ;;
    pyxis) command -v enroot >/dev/null 2>&1 || continue ;;
    *) command -v "$name" >/dev/null 2>&1 || continue ;;
  esac
  if n=$("remove_$name"  "$@"); then
    removed=$((removed + n))
  else
    fact runtime "$n"
  fi
done
fact removed "$removed"
' cleanup "$SLURM_JOB_ID" || true
}
trap final_cleanup EXIT
printf '%s\n' '{"api_key": null, "check_args": true, "dp": 2, "drain_grace": 30.0, "engine": "sglang", "engine_args": ["--enable-dp-attention"], "env": {}, "env_file": null, "ep": null, "fabric": "auto", "gpus": "all", "gpus_per_node": 8, "handover": null, "health_timeout": 1800.0, "hf_cache": null, "host": "0.0.0.0", "idle_timeout": null, "image": "registry.example/engine:1.0", "image_cache": null, "job_name": "slurmserve", "launch_mode": "auto", "log_dir": "/shared/logs", "max_restarts": 3, "model": "deepseek-ai/DeepSeek-V3", "mounts": [], "name": null, "nodes": 2, "port": null, "pp": null, "ready_replicas": 1, "replicas": 1, "restart": "on-failure", "route": "prefix", "router_partition": null, "router_time": null, "runtime": "auto", "serve_for": null, "served_model_name": null, "slurm": {"account": null, "exclusive": false, "partition": null, "qos": null, "sbatch_args": [], "time": null}, "stage": "auto", "stage_dir": "/tmp", "tp": 16}' >"$spec_file"

# In the background, so a TERM for this script (scancel --batch, a time-limit signal) reaches the
# driver at once; its teardown runs, then the final cleanup step.
driver=""
trap '[[ -z "$driver" ]] || kill -TERM "$driver" 2>/dev/null || true' TERM INT HUP
"$python" -m slurmserve run --config "$spec_file" &
driver=$!
while true; do
  wait "$driver" && code=0 || code=$?
  kill -0 "$driver" 2>/dev/null || break
done
exit "$code"

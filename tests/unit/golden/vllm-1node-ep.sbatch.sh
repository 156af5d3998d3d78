#!/usr/bin/env bash
# slurmserve job script, rendered by `slurmserve render`. It carries the whole spec, so this file
# alone reproduces the job: `sbatch` it. The batch step runs the same driver as `slurmserve run`.
#SBATCH --job-name=slurmserve
#SBATCH --nodes=1
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
# slurmserve cleanup, rendered by slurmserve: on every node remove the containers that carry our
# label for the given job(s), and only those. Reports how many it removed, and whether docker
# answered (a node whose docker is down cannot be checked). Extra job IDs may follow as arguments.
set -uo pipefail
rank="${SLURM_PROCID:-0}"
fact() { printf '"'"'SLURMSERVE_FACT\t%s\t%s\t%s\n'"'"' "$rank" "$1" "$2"; }
removed=0
for job in  "$@"; do
  if ! ids=$(docker ps --all --quiet --filter "label=slurmserve.job=$job" 2>&1); then
    fact docker "error: $(tail -n1 <<<"$ids")"
    continue
  fi
  for id in $ids; do
    docker rm --force "$id" >/dev/null 2>&1 && removed=$((removed + 1))
  done
done
fact removed "$removed"
' cleanup "$SLURM_JOB_ID" || true
}
trap final_cleanup EXIT
printf '%s\n' '{"api_key": null, "check_args": true, "dp": null, "engine": "vllm", "engine_args": ["--tensor-parallel-size", "8", "--enable-expert-parallel", "--max-model-len", "8192"], "env": {}, "env_file": null, "ep": null, "fabric": "auto", "gpus": "all", "gpus_per_node": 8, "health_timeout": 1800.0, "hf_cache": null, "host": "0.0.0.0", "image": "registry.example/engine:1.0", "job_name": "slurmserve", "launch_mode": "auto", "log_dir": "/shared/logs", "model": "Qwen/Qwen3-30B-A3B-FP8", "mounts": [], "nodes": 1, "port": null, "pp": null, "served_model_name": null, "slurm": {"account": null, "exclusive": false, "partition": null, "qos": null, "sbatch_args": [], "time": null}, "stage": "auto", "stage_dir": "/tmp", "tp": null}' >"$spec_file"

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

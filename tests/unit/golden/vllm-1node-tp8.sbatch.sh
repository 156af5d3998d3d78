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
trap 'rm -f "$spec_file"' EXIT
printf '%s\n' '{"dp": null, "engine": "vllm", "engine_args": [], "env": {}, "env_file": null, "ep": null, "fabric": "auto", "gpus": "all", "gpus_per_node": 8, "health_timeout": 1800.0, "host": "0.0.0.0", "image": "registry.example/engine:1.0", "job_name": "slurmserve", "launch_mode": "auto", "log_dir": "/shared/logs", "model": "Qwen/Qwen2.5-14B-Instruct", "mounts": [], "nodes": 1, "port": null, "pp": null, "served_model_name": null, "slurm": {"account": null, "exclusive": false, "partition": null, "qos": null, "sbatch_args": [], "time": null}, "stage": "auto", "stage_dir": "/tmp", "tp": 8}' >"$spec_file"

"$python" -m slurmserve run --config "$spec_file"
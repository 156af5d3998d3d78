#!/usr/bin/env bash
# Ray head for vLLM, rendered by slurmserve: start Ray on this job's ports, wait until Ray
# lists every expected node (by IP) and GPU (ray_wait.py, mounted beside this script), then
# serve. Order comes from readiness, not sleeps.
set -euo pipefail
ray_start=(ray start --node-ip-address 192.0.2.1 --num-gpus 8 --disable-usage-stats --head --port 24201 --include-dashboard false --node-manager-port 24203 --object-manager-port 24204 --dashboard-agent-listen-port 24206 --dashboard-agent-grpc-port 24207 --metrics-export-port 24208 --runtime-env-agent-port 24209 --min-worker-port 24250 --max-worker-port 24299)
# Ray starts its client server (default port 10001) only with ray[client]; keep it in our block
# (has-client prints nothing; an error from it shows in this log).
if python3 /slurmserve/ray_wait.py has-client; then
  ray_start+=(--ray-client-server-port 24205)
fi
"${ray_start[@]}"
python3 /slurmserve/ray_wait.py wait 2 16 1800 192.0.2.1 192.0.2.2
exec vllm serve deepseek-ai/DeepSeek-V2-Lite --host 0.0.0.0 --port 8000 --tensor-parallel-size 8 --pipeline-parallel-size 2 --distributed-executor-backend ray

#!/usr/bin/env bash
# slurmserve preflight for job 304, rendered by slurmserve: one task per node reports
# facts as "SLURMSERVE_FACT<TAB>rank<TAB>key<TAB>value" lines. It starts nothing.
set -uo pipefail
rank="${SLURM_PROCID:?run under srun}"
fact() { printf 'SLURMSERVE_FACT\t%s\t%s\t%s\n' "$rank" "$1" "$2"; }
head_ip=10.77.0.1

fact node "${SLURMD_NODENAME:-$(hostname -s)}"

# The address and interface on the route to the head: what every engine binds (failures 1-2).
route=$(ip -o route get "$head_ip" 2>/dev/null | head -n1)
if [[ "$route" == local* ]]; then
  address="$head_ip"
else
  address=$(sed -n 's/.* src \([^ ]*\).*/\1/p' <<<"$route")
fi
ifname=$(ip -o addr show 2>/dev/null | awk -v ip="$address" '{split($4, a, "/"); if (a[1] == ip) {print $2; exit}}')
fact address "${address:-}"
fact ifname "${ifname:-}"

if server=$(docker version --format '{{.Server.Version}}' 2>&1); then
  fact docker "ok $server"
else
  fact docker "error: $(tail -n1 <<<"$server")"
fi

image_id=sha256:8ea7fa3ecb00a0b8679b307cd609c77ae0a418fb9ef621892d3026645121a532
if [[ -n "$image_id" ]] && docker image inspect "$image_id" >/dev/null 2>&1; then
  fact image present
else
  fact image absent
fi
tarball=/var/cache/slurmserve/images/standin-7af5b7e9083a.tar
if [[ -r "$tarball" ]]; then fact tarball readable; else fact tarball "unreadable: $tarball"; fi
# A marker in the staging directory: a later step tells whether nodes share it.
touch /tmp/.slurmserve-304-"$rank" 2>/dev/null && fact stage_dir writable

devices=()
for pattern in '/dev/infiniband/uverbs*' /dev/infiniband/rdma_cm /dev/gdrdrv; do
  while IFS= read -r dev; do devices+=("$dev"); done < <(compgen -G "$pattern" || true)
done
fact devices "${devices[*]:-}"
if command -v nvidia-smi >/dev/null 2>&1; then
  fact gpus "$(nvidia-smi --list-gpus 2>/dev/null | wc -l)"
else
  fact gpus none
fi

case "$rank" in
  0) ports=(30000 26400 26411) ;;
  1) ports=() ;;
  *) ports=() ;;
esac
busy=()
for port in "${ports[@]}"; do
  for host in "${address:-127.0.0.1}" 127.0.0.1; do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then busy+=("$port"); break; fi
  done
done
fact busy_ports "${busy[*]:-}"

# Containers of ours (any job) on this node, for removing leftovers of finished jobs.
ours=$(docker ps --all --filter label=slurmserve.job --format '{{.Names}}={{.Label "slurmserve.job"}}' 2>/dev/null | tr '\n' ' ')
fact ours "${ours% }"
fact done 1

#!/usr/bin/env bash
# slurmserve cleanup, rendered by slurmserve: on every node remove the containers that carry our
# label for the given job(s), and only those. Reports how many it removed.
set -uo pipefail
rank="${SLURM_PROCID:-0}"
removed=0
for job in 303; do
  while IFS= read -r id; do
    [[ -n "$id" ]] || continue
    docker rm --force "$id" >/dev/null 2>&1 && removed=$((removed + 1))
  done < <(docker ps --all --quiet --filter "label=slurmserve.job=$job")
done
for job in 303; do rm -f /tmp/.slurmserve-"$job"-*; done
printf 'SLURMSERVE_FACT\t%s\tremoved\t%s\n' "$rank" "$removed"

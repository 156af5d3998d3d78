#!/usr/bin/env bash
# MPI worker node, rendered by slurmserve: sshd on this job's port, key-only, for mpirun from the
# head. Ranks started over ssh get this container's environment (PermitUserEnvironment).
set -euo pipefail
mkdir -p /root/.ssh /run/sshd
chmod 700 /root/.ssh
install -m 600 /slurmserve/secrets/ssh_key.pub /root/.ssh/authorized_keys
# Not the job's SLURM variables (pyxis passes them): Open MPI would read the allocation.
env | grep -v -e '^_=' -e '^SHLVL=' -e '^PWD=' -e '^SLURM' > /root/.ssh/environment
chmod 600 /root/.ssh/environment
ssh-keygen -A >/dev/null
exec /usr/sbin/sshd -D -e -p 24202 -o PermitRootLogin=prohibit-password \
  -o PasswordAuthentication=no -o PermitUserEnvironment=yes

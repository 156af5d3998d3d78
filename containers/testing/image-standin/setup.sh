#!/usr/bin/env bash
# Runs inside the base container (host network) and turns it into the stand-in image.
set -euo pipefail
set -a
# shellcheck source=../versions.env
. /recipe/versions.env
set +a
export PIP_CACHE_DIR=/cache/pip PIP_CERT=/etc/ssl/certs/ca-certificates.crt
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180

python3 -m venv --system-site-packages /opt/venv  # system site: Debian's mpi4py
# huggingface_hub resolves hub IDs offline (HF_HUB_OFFLINE=1) as the engines do; the version
# the vllm-cpu image resolves to. Pinned here, not in versions.env, which is part of the
# vllm-cpu recipe hash too (a pin for this image must not rebuild that one).
HF_HUB_VERSION=2.4.0
/opt/venv/bin/pip install --quiet "ray==$RAY_VERSION" "pyyaml==$PYYAML_VERSION" \
    "huggingface_hub==$HF_HUB_VERSION"
cp -r /recipe/standin /tmp/standin-src
/opt/venv/bin/pip install --quiet /tmp/standin-src

# ssh sessions (how mpirun starts remote ranks) get sshd's default PATH, without the venv.
for cmd in vllm trtllm-serve trtllm-llmapi-launch ray; do
    ln -sf "/opt/venv/bin/$cmd" "/usr/local/bin/$cmd"
done

# sshd for MPI launches between node containers; the launcher picks the port and keys.
mkdir -p /run/sshd /root/.ssh
chmod 700 /root/.ssh
ssh-keygen -A
cat >/etc/ssh/sshd_config.d/standin.conf <<'CONF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM no
UseDNS no
CONF
cat >/etc/ssh/ssh_config.d/standin.conf <<'CONF'
Host *
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
CONF
# TCP only between containers; CMA single-copy needs ptrace rights containers lack.
cat >>/etc/openmpi/openmpi-mca-params.conf <<'CONF'
pml = ob1
btl = self,vader,tcp
btl_vader_single_copy_mechanism = none
CONF

apt-get clean
rm -rf /var/lib/apt/lists/* /root/.cache /tmp/standin-src
/opt/venv/bin/vllm --version

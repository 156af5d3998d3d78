"""`hf_prefetch.py MODEL`: download a Hub model into HF_HOME (huggingface_hub.snapshot_download).

Runs once, on the head node, in a throwaway container of the engine image. A failure exits
with one `slurmserve: ...` line the driver shows (the first line of the error only: the rest
may be a long traceback).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence


def fetch(model: str, download: Callable[[str], str]) -> str:
    """The line to print once `download(model)` has the snapshot; SystemExit on failure."""
    try:
        path = download(model)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise SystemExit(f"slurmserve: {type(exc).__name__}: {first}") from None
    return f"slurmserve: fetched {model} to {path}"


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: hf_prefetch.py MODEL", file=sys.stderr)
        return 2
    # The env file says offline (for the engine, which reads what this fetched): not this.
    os.environ["HF_HUB_OFFLINE"] = "0"
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise SystemExit(f"slurmserve: {type(exc).__name__}: {exc}") from None
    print(fetch(argv[0], snapshot_download), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

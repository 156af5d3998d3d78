"""Per-deployment JSON state: what `status`, `logs` and `stop` read.

The state file lives in the job's log dir; an index entry under the user's state dir points to
it, so `slurmserve status JOB` works from any directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STOP_MARKER = "stop-requested"  # `slurmserve stop` creates it in the run dir; the driver polls it


def index_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "slurmserve" / "jobs"


def write(run_dir: str, data: dict[str, Any]) -> str:
    """Atomically write run_dir/state.json and index it by job ID."""
    data = {**data, "updated": time.time()}
    path = os.path.join(run_dir, "state.json")
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
    index = index_dir()
    index.mkdir(parents=True, exist_ok=True)
    (index / f"{data['job']}.path").write_text(os.path.abspath(path) + "\n")
    return path


def find(job_id: str) -> str | None:
    entry = index_dir() / f"{job_id}.path"
    if entry.exists():
        path = entry.read_text().strip()
        if os.path.exists(path):
            return path
    return None


def read(job_id: str) -> dict[str, Any] | None:
    path = find(job_id)
    if path is None:
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def known_jobs() -> list[str]:
    index = index_dir()
    if not index.exists():
        return []
    return sorted((p.stem for p in index.glob("*.path")), key=lambda j: (len(j), j))

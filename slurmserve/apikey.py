"""API keys: a spec names where the key comes from (`env:VAR` or `file:PATH`), never the key.

The key itself reaches only the serving container (through a 0600 file, see launch.py), the
driver's readiness probe and the clients of `test`, `bench` and `status`. Specs, rendered
scripts and state files carry the source, so a key never lands in them, in `ps` or in logs.
"""

from __future__ import annotations

import os
import re
import stat

from .errors import SpecError

FIELD = "--api-key"
FORMS = "env:VAR or file:PATH"
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY = re.compile(r"^[\x21-\x7e]{1,4096}$")  # printable ASCII, no spaces: it travels in a header


def parse_source(value: object, field: str = FIELD) -> str:
    """Validate a key source and return it normalised (`file:` paths made absolute).

    The key must be readable now: a missing variable or file fails before anything starts.
    """
    if not isinstance(value, str):
        raise SpecError(field, f"expected {FORMS}", "e.g. --api-key env:SERVE_API_KEY")
    kind, sep, rest = value.partition(":")
    if sep and kind == "env":
        if not _VAR.match(rest):
            raise SpecError(field, f"env:{rest} does not name an environment variable",
                            "use letters, digits and _, e.g. env:SERVE_API_KEY")
        source = f"env:{rest}"
    elif sep and kind == "file" and rest:
        source = "file:" + os.path.abspath(os.path.expanduser(rest))
    else:
        # Never echo the value: it may be the key itself.
        raise SpecError(field, f"takes {FORMS}, not the key itself (a key on the command line "
                        "shows in `ps`, shell history, rendered scripts and state)",
                        "e.g. --api-key env:SERVE_API_KEY or --api-key file:~/.serve-key "
                        "(chmod 600)")
    read(source, field)
    return source


def read(source: str, field: str = FIELD) -> str:
    """The key a source holds; SpecError naming the variable or file when it cannot."""
    kind, _, rest = source.partition(":")
    if kind == "env":
        text = os.environ.get(rest)
        if not text:
            state = "empty" if text == "" else "not set"
            raise SpecError(field, f"environment variable {rest} is {state}",
                            f"export {rest} with the key, or use file:PATH")
        return _checked(text, f"${rest}", field)
    try:
        mode = os.stat(rest).st_mode
        if not stat.S_ISREG(mode):
            raise SpecError(field, f"{rest} is not a regular file", "give the file holding the key")
        if mode & 0o077:
            raise SpecError(field, f"{rest} is open to other users (mode "
                            f"{stat.S_IMODE(mode):03o})", f"chmod 600 {rest}")
        with open(rest, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise SpecError(field, f"cannot read {rest}: {exc.strerror}", "check the path") from None
    except UnicodeDecodeError:
        raise SpecError(field, f"{rest} is not UTF-8 text", "put the key alone in the file") from None
    return _checked(text.removesuffix("\n").removesuffix("\r"), rest, field)


def _checked(key: str, where: str, field: str) -> str:
    if not key:
        raise SpecError(field, f"{where} holds an empty key", "put the key in it")
    if not _KEY.match(key):
        raise SpecError(field, f"the key in {where} has spaces, line breaks or non-ASCII "
                        "characters", "an API key is one line of printable ASCII")
    return key


def try_read(source: str | None) -> str | None:
    """The key of a recorded source, or None when it cannot be read here."""
    if not source:
        return None
    try:
        return read(source)
    except SpecError:
        return None


def for_client(given: str | None, job_source: str | None, fallback: str | None) -> str | None:
    """The key `test` and `bench` send.

    `given` (--api-key: a key, env:VAR or file:PATH) wins; else the job's own source from its
    state; else `fallback` (OPENAI_API_KEY). A job whose key cannot be read here is an error.
    """
    if given:
        kind, sep, rest = given.partition(":")
        if sep and kind in ("env", "file") and rest:
            return read(parse_source(given))
        return _checked(given, "--api-key", FIELD)
    if job_source:
        try:
            return read(job_source)
        except SpecError as exc:
            raise SpecError(FIELD, f"the job's endpoint needs its key from {job_source}, but "
                            f"{exc.problem}", f"{exc.fix}, or pass --api-key") from None
    if fallback:
        return _checked(fallback, "$OPENAI_API_KEY", FIELD)
    return None


def shell_ref(source: str) -> str:
    """How a shell command reads the key from its source (for printed examples): $VAR or
    $(cat PATH); meant inside double quotes."""
    import shlex

    kind, _, rest = source.partition(":")
    return f"${rest}" if kind == "env" else f"$(cat {shlex.quote(rest)})"

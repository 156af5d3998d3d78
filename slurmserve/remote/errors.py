"""What remote mode reports: one line saying what failed and how to fix it."""

from __future__ import annotations

from types import ModuleType

from ..errors import SlurmserveError


class RemoteError(SlurmserveError):
    """The login host cannot be reached, refused us, or lacks slurmserve; says how to fix it."""


class HostKeyError(RemoteError):
    """The login host's key is unknown or changed: never accepted silently."""


class RemoteCommandError(SlurmserveError):
    """slurmserve on the login host failed; carries its exit code (2 = bad input)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code if exit_code in (1, 2) else 1


def paramiko_module() -> ModuleType:
    """paramiko, or a one-line error naming the extra that installs it."""
    try:
        import paramiko
    except ImportError:
        raise RemoteError("remote mode needs paramiko, which is not installed: "
                          "pip install 'slurmserve[remote]'") from None
    return paramiko

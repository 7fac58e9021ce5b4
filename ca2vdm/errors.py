"""Every error the library raises on purpose, in one place at the bottom of the package (any layer may raise any).

Each carries one line for the user that names the problem and the fix. A message names the settings it is about
with :func:`opt` (``opt("overwrite")``, ``opt("resume", "latest")``), never as a flag: ``str(error)`` spells them as
the Python API does (``resume=latest``), and a command line prints :meth:`Ca2vdmError.for_cli`, which spells them as
its flags (``--resume latest``). So no library message names a flag, and every front end names its own.
Imports nothing from the package.
"""
from __future__ import annotations

import re

_SETTING = re.compile(r"\{([a-z][a-z0-9_]*)(?:=([^{}]*))?\}")


def opt(name: str, value: object = None) -> str:
    """A setting (and a value) inside an error message: rendered by each front end in its own spelling."""
    return "{" + name + ("" if value is None else f"={value}") + "}"


def _as_api(match: re.Match) -> str:
    name, value = match.groups()
    return name if value is None else f"{name}={value}"


class Ca2vdmError(Exception):
    """Base of the library's errors: a message whose settings are marked with :func:`opt`."""

    def __init__(self, message: str):
        self.template = message
        super().__init__(_SETTING.sub(_as_api, message))

    def for_cli(self, flags: dict[str, str] | None = None) -> str:
        """The message with its settings as command-line flags: ``--name value`` (``flags`` renames some)."""
        def as_flag(match: re.Match) -> str:
            name, value = match.groups()
            flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
            return flag if value is None else f"{flag} {value}"
        return _SETTING.sub(as_flag, self.template)


class ConfigError(Ca2vdmError, ValueError):
    """A configuration problem, reported before any work starts."""


class SettingError(Ca2vdmError, ValueError):
    """A setting (an API keyword, a command-line flag, a field of a server message) with a value that is refused.

    ``name`` is the setting as the API spells it, ``value`` what was given, ``problem`` why and what to give instead;
    the message reads ``name=value: problem`` (``--name value: problem`` on a command line).
    """

    def __init__(self, name: str, value: object, problem: str):
        self.name, self.value, self.problem = name, value, problem
        super().__init__(f"{opt(name, value)}: {problem}")


class DataError(Ca2vdmError, ValueError):
    """A dataset that cannot be used (no readable videos, a bad manifest, labels that do not fit the model)."""


class CodecError(DataError):
    """An autoencoder (codec) that cannot be loaded or does not fit the model."""


class CheckpointError(Ca2vdmError, ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class CheckpointWriteError(Ca2vdmError, RuntimeError):
    """Writing a training checkpoint failed (disk full, permissions, ...); earlier checkpoints are untouched."""


class RunLockedError(Ca2vdmError, RuntimeError):
    """Another training run is using the output directory."""


class NonFiniteLossError(Ca2vdmError, RuntimeError):
    """The loss became NaN or infinite and ``train.nonfinite`` is ``stop``."""


class ExportError(Ca2vdmError, ValueError):
    """An export that would destroy something (its source, a training checkpoint's files, an existing file)."""

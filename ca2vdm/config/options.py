"""Declared settings: a type, a default, an allowed range and a line of help per field of a settings dataclass.

A settings class (the sampler's, each step cache's) declares its fields with :func:`setting`; :func:`check_fields`
coerces and checks every value in one place for the command line, the Python API and the server: the declared type
(an integral float for an int, 0/1 or true/false for a bool), finite numbers only, the declared range, the declared
choices. A refused value raises :class:`~ca2vdm.errors.SettingError` naming the setting and what it accepts.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ca2vdm.errors import SettingError

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Declared:
    """What a setting accepts: ``kind`` (int, float, bool or str), an inclusive range, or the choices."""
    kind: type
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False      # the low bound itself is refused
    high_open: bool = False     # the high bound itself is refused
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """What the setting accepts, in words (for messages and help)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        what = {int: "a whole number", float: "a finite number", bool: "true or false (1 or 0)", str: "text",
                dict: "a mapping of names to values"}[self.kind]
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{what} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {_num(self.high)}"
        return what

    def check(self, name: str, value: Any) -> Any:
        """``value`` as the declared kind, or SettingError naming ``name`` and what it accepts."""
        typed = self._coerce(value)
        if typed is None:
            raise SettingError(name, value, f"must be {self.describe()}")
        return typed

    def _coerce(self, value: Any) -> Any:
        if self.kind is dict:
            return dict(value) if isinstance(value, Mapping) and all(isinstance(k, str) for k in value) else None
        if self.kind is str:
            return value if isinstance(value, str) and (not self.choices or value in self.choices) else None
        if self.kind is bool:
            if isinstance(value, str):
                text = value.strip().lower()
                return True if text in TRUE else False if text in FALSE else None
            return bool(value) if isinstance(value, (bool, int)) and value in (0, 1) else None
        number = _number(value)
        if number is None or (self.kind is int and isinstance(number, float) and not number.is_integer()):
            return None
        try:
            number = int(number) if self.kind is int else float(number)
        except OverflowError:  # an int too large for a float
            return None
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return None
        if self.high is not None and (number > self.high or (self.high_open and number == self.high)):
            return None
        return number


def _number(value: Any) -> float | int | None:
    """A finite int or float from a number or its text; None otherwise (bools, NaN, infinities, other types)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def setting(default: Any, help: str, kind: type | None = None, **declared: Any) -> Any:
    """A dataclass field with a declared kind (by default its default's type), range, choices and help."""
    kind = kind or type(default)
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return dataclasses.field(metadata={"declared": Declared(kind, help, **declared)}, **factory)


def declared_fields(cls) -> dict[str, Declared]:
    """The declared settings of a dataclass (fields made with :func:`setting`), in order."""
    return {f.name: f.metadata["declared"] for f in dataclasses.fields(cls) if "declared" in f.metadata}


def check_fields(instance) -> None:
    """Coerce and check every declared field of a frozen dataclass instance in place (for ``__post_init__``)."""
    for name, declared in declared_fields(type(instance)).items():
        object.__setattr__(instance, name, declared.check(name, getattr(instance, name)))

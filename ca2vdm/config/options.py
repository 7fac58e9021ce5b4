"""Declared settings: a type, a default, an allowed range and a line of help per field of a settings dataclass.

A settings class (the sampler's, each step cache's, each section of a trainer's config) declares its fields with
:func:`setting`; the checks are written once, here, from those declarations: the declared type (an integral float
for an int, 0/1 or true/false for a bool), finite numbers only, the declared range, the declared choices, None only
where the field may be unset, non-blank text where it is required, non-empty lists of such values.
:func:`check_fields` checks a frozen settings object (the sampler's, a step cache's) for the command line, the Python
API and the server: a refused value raises :class:`~ca2vdm.errors.SettingError` naming the setting and what it
accepts. :func:`setting_problems` checks a config section and its subsections (a trainer's YAML), naming each refused
value as ``section.field must be ..., got ...``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ca2vdm.errors import SettingError

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
REFUSED = object()  # what a value coerces to when the declaration refuses it
_WHAT = {int: ("a whole number", "whole numbers"), float: ("a finite number", "finite numbers"),
         bool: ("true or false (1 or 0)", "booleans"), str: ("text", "texts"),
         dict: ("a mapping of names to values", "mappings")}


@dataclass(frozen=True)
class Declared:
    """What a setting accepts: ``kind`` (int, float, bool, str, dict, or list of ``item``), an inclusive range, or
    the choices (of a list: of each item)."""
    kind: type
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False      # the low bound itself is refused
    high_open: bool = False     # the high bound itself is refused
    choices: tuple[str, ...] = ()
    optional: bool = False      # None is accepted: the setting is unset (its help says what that means)
    required: bool = False      # text: blank is refused (a path with no sensible default)
    item: type | None = None    # kind list: the kind of each item (a list holds at least one)
    note: str = ""              # what a special value means, e.g. "-1: auto"

    def describe(self) -> str:
        """What the setting accepts, in words (for messages and help)."""
        if self.kind is list:
            what = f"a non-empty list of {self._describe_one(plural=True)}"
        else:
            what = self._describe_one(plural=False)
        return what + (f" ({self.note})" if self.note else "") + (", or null (unset)" if self.optional else "")

    def _describe_one(self, plural: bool) -> str:
        if self.choices:
            return ("each " if plural else "") + "one of " + ", ".join(self.choices)
        what = _WHAT[self.item if self.kind is list else self.kind][plural]
        if self.required:
            what = f"non-blank {what}"
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
        typed = self.coerce(value)
        if typed is REFUSED:
            raise SettingError(name, value, f"must be {self.describe()}")
        return typed

    def problem(self, key: str, value: Any) -> str:
        """One line naming a refused ``value`` of the config key ``key`` and what it accepts."""
        if self.required and (value is None or isinstance(value, str) and not value.strip()):
            return f"{key} is required ({self.help}), got {value!r}"
        return f"{key} must be {self.describe()}, got {value!r}"

    def coerce(self, value: Any) -> Any:
        """``value`` as the declared kind, or :data:`REFUSED`."""
        if value is None:
            return None if self.optional else REFUSED
        if self.kind is not list:
            return self._coerce(self.kind, value)
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) or not value:
            return REFUSED
        items = [self._coerce(self.item, each) for each in value]
        return REFUSED if any(each is REFUSED for each in items) else items

    def _coerce(self, kind: type, value: Any) -> Any:
        if kind is dict:
            return dict(value) if isinstance(value, Mapping) and all(isinstance(k, str) for k in value) else REFUSED
        if kind is str:
            ok = isinstance(value, str) and (not self.choices or value in self.choices) and (
                not self.required or value.strip())
            return value if ok else REFUSED
        if kind is bool:
            if isinstance(value, str):
                text = value.strip().lower()
                return True if text in TRUE else False if text in FALSE else REFUSED
            return bool(value) if isinstance(value, (bool, int)) and value in (0, 1) else REFUSED
        number = _number(value)
        if number is None or (kind is int and isinstance(number, float) and not number.is_integer()):
            return REFUSED
        try:
            number = int(number) if kind is int else float(number)
        except OverflowError:  # an int too large for a float
            return REFUSED
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return REFUSED
        if self.high is not None and (number > self.high or (self.high_open and number == self.high)):
            return REFUSED
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
    """A dataclass field with a declared kind (by default its default's type), range, choices and help. A default of
    None makes the setting optional (give its ``kind``); a callable default is a factory (give its ``kind``)."""
    if default is None:
        declared.setdefault("optional", True)
    return declared_field(default, Declared(kind or type(default), help, **declared))


def declared_field(default: Any, declared: Declared) -> Any:
    """A dataclass field with ``declared`` as its declaration (what :func:`setting` makes)."""
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return dataclasses.field(metadata={"declared": declared}, **factory)


def declared_fields(cls) -> dict[str, Declared]:
    """The declared settings of a dataclass (fields made with :func:`setting`), in order."""
    return {f.name: f.metadata["declared"] for f in dataclasses.fields(cls) if "declared" in f.metadata}


def check_fields(instance) -> None:
    """Coerce and check every declared field of a frozen dataclass instance in place (for ``__post_init__``)."""
    for name, declared in declared_fields(type(instance)).items():
        object.__setattr__(instance, name, declared.check(name, getattr(instance, name)))


def setting_problems(section, prefix: str = "") -> list[str]:
    """What is wrong with a settings dataclass instance (a config section) and its subsections, one line each.

    Every declared field is checked and, when valid, stored as its declared kind; a field that holds a dataclass is
    walked as the subsection ``prefix.name``. Once a section's own fields and subsections are valid, its ``rules()``
    (if it has any: the rules that relate its fields, or its subsections' fields) add their problems.
    """
    problems = []
    for f in dataclasses.fields(section):
        key, value = f"{prefix}.{f.name}" if prefix else f.name, getattr(section, f.name)
        declared = f.metadata.get("declared")
        if declared is None:
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                problems += setting_problems(value, key)
            continue
        typed = declared.coerce(value)
        if typed is REFUSED:
            problems.append(declared.problem(key, value))
        else:
            object.__setattr__(section, f.name, typed)
    if not problems and hasattr(section, "rules"):
        problems = section.rules()
    return problems

"""The one writer of measured results: a JSON file of figures (a benchmark's, an evaluation's), written atomically.

Every benchmark (``scripts/bench/``) and evaluation (``ca2vdm eval ...``) hands its payload to :func:`write_results`
instead of writing JSON by hand, so every result file has the same formatting (two-space indent, a final newline),
appears whole or not at all, and never replaces an input, a folder, a device, a pipe or a socket
(:func:`~ca2vdm.io.paths.check_writable_file`, :func:`~ca2vdm.io.paths.check_not_an_input`). Call
:func:`check_results_path` right after parsing too, so a bad path is refused before minutes of measurement.
Torch-free.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ca2vdm.io.atomic import write_text_atomic
from ca2vdm.io.paths import check_not_an_input, check_writable_file


def check_results_path(path: str | os.PathLike, inputs: list[str | os.PathLike] = (), name: str = "out") -> Path:
    """``path`` as a Path if writing results there destroys nothing: a new or regular file that is none of
    ``inputs`` (nor inside an input folder); SettingError naming ``name`` otherwise."""
    path = check_writable_file(path, name)
    check_not_an_input(name, path, list(inputs))
    return path


def format_results(payload: Any) -> str:
    """The text of a results file: JSON with a two-space indent and a final newline."""
    return json.dumps(payload, indent=2) + "\n"


def write_results(path: str | os.PathLike, payload: Any, inputs: list[str | os.PathLike] = (),
                  name: str = "out") -> Path:
    """Write ``payload`` (JSON-serialisable) to ``path`` atomically, creating its folder; the path written.
    Refused as :func:`check_results_path` refuses."""
    path = check_results_path(path, inputs, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, format_results(payload))
    return path

"""Caption manifests: which caption goes with which video file, for text-conditioned training.

Accepted forms (paths relative to the video folder):

* JSONL (``captions.jsonl``): one object a line, ``{"file": "relative/path.mp4", "caption": "..."}``;
* CSV with a header naming the columns: ours (``file,caption``), OpenVid-1M's (``video,caption``) or WebVid's
  (``videoid,name`` and optionally ``page_dir``: the file is ``page_dir/videoid.mp4``, as its downloaders store it).

A row that cannot be used (not JSON, no file, an empty caption) is skipped and listed with its line number and the
reason; the manifest as a whole is refused only when no row is usable, the columns are not one of the above, or it
is not UTF-8 text (a UTF-8 byte-order mark, as spreadsheets write, is fine). A caption the model cannot read (over
its tokens) is skipped where the data set knows the model (:class:`~ca2vdm.data.clips.VideoFolderDataset`).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ca2vdm.errors import DataError

DEFAULT_CAPTIONS = "captions.jsonl"
# CSV column sets: (file column, caption column); WebVid's file is page_dir/videoid.mp4
NOT_AN_OBJECT = object()
CSV_COLUMNS = {"file": ("file", "caption"), "openvid": ("video", "caption"), "webvid": ("videoid", "name")}


def _csv_rows(text: str, manifest: Path) -> list[tuple[int, str | None, str | None]]:
    reader = csv.DictReader(text.splitlines())
    columns = set(reader.fieldnames or ())
    form = next((name for name, cols in CSV_COLUMNS.items() if set(cols) <= columns), None)
    if form is None:
        raise DataError(f"caption manifest {manifest} has columns {sorted(columns)}; it needs file,caption (or "
                        "OpenVid's video,caption, or WebVid's videoid,name)")
    file_col, caption_col = CSV_COLUMNS[form]
    rows = []
    for line, row in enumerate(reader, start=2):
        name = row.get(file_col)
        if form == "webvid" and name:
            name = "/".join(p for p in (row.get("page_dir") or "", f"{name}.mp4") if p)
        rows.append((line, name, row.get(caption_col)))
    return rows


def _jsonl_rows(text: str) -> list[tuple[int, object, object]]:
    """(line, file, caption) of each non-blank line; file is ``NOT_AN_OBJECT`` where the line is no JSON object."""
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            row = None
        rows.append((line, row.get("file"), row.get("caption")) if isinstance(row, dict) else
                    (line, NOT_AN_OBJECT, None))
    return rows


def load_captions(manifest: str | Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """({relative file path: caption}, skipped rows as (where, reason)) from a JSONL or CSV caption manifest."""
    manifest = Path(manifest)
    try:
        text = manifest.read_text(encoding="utf-8-sig")  # a byte-order mark (spreadsheets write one) is dropped
    except OSError as e:
        raise DataError(f"cannot read caption manifest {manifest}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        line = manifest.read_bytes()[:e.start].count(b"\n") + 1
        raise DataError(f"caption manifest {manifest} is not UTF-8 text (byte 0x{e.object[e.start]:02x} on line "
                        f"{line}); save it as UTF-8") from None
    rows = _csv_rows(text, manifest) if manifest.suffix.lower() == ".csv" else _jsonl_rows(text)
    captions, skipped = {}, []
    for line, name, caption in rows:
        where = f"{manifest.name}:{line}"
        if name is NOT_AN_OBJECT:
            skipped.append((where, "not a JSON object"))
        elif not isinstance(name, str) or not name.strip():
            skipped.append((where, "no file"))
        elif not isinstance(caption, str) or not caption.strip():
            skipped.append((where, f"{name}: no caption"))
        else:
            captions[Path(name).as_posix()] = " ".join(caption.split())
    if not captions:
        raise DataError(f"caption manifest {manifest} has no usable row ({len(skipped)} skipped, e.g. "
                        f"{'; '.join(f'{w}: {r}' for w, r in skipped[:3])}); each line must be "
                        '{"file": "relative/path.mp4", "caption": "..."}')
    return captions, skipped


def find_captions(root: Path, manifest: str | None) -> Path:
    """The caption manifest: ``manifest`` (also looked up under ``root``), else ``root/captions.jsonl``."""
    path = Path(manifest) if manifest else root / DEFAULT_CAPTIONS
    if not path.is_file() and manifest and not path.is_absolute() and (root / path).is_file():
        path = root / path
    if not path.is_file():
        raise DataError(f"a text model needs captions, but {path} does not exist; write one (lines "
                        '{"file": "relative/path.mp4", "caption": "..."}) or set data.captions to your manifest '
                        "(JSONL, or a CSV with file,caption columns as WebVid's or OpenVid's)")
    return path

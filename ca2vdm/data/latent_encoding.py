"""Encoding a video folder into latent shards (the layout :mod:`ca2vdm.data.latents` reads), streamed and resumable.

Memory stays flat in the number of videos: latents go into a shard that is written (atomically) once it holds
``shard_bytes``, and the videos of a finished shard are appended to a journal. A killed run continues with
``resume=True``: the journalled shards are kept, anything else it left is deleted, and only the videos not yet in a
journalled shard are encoded again. With several processes (``accelerate launch``) video ``i`` goes to process
``i % world``; each writes its own shards (``shard_<rank>-<n>.safetensors``) and journal, and the main process
merges the journals into ``index.json`` when all are done. The index is written last and atomically: a folder
without one is never mistaken for finished latents.

The output folder is ours alone: a new encoding needs a new or empty folder (a user's files are never overwritten),
and a folder with an unfinished encoding is continued only with ``resume=True`` and the same settings.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from ca2vdm.data.clips import VideoFolderDataset
from ca2vdm.data.latents import INDEX_NAME, TEXT_SUFFIX
from ca2vdm.encoders.codec import Codec
from ca2vdm.encoders.text import TextEncoder
from ca2vdm.errors import DataError, SettingError, opt
from ca2vdm.io.atomic import save_tensors_atomic, write_text_atomic
from ca2vdm.io.video import read_frames, resize_center_crop
from ca2vdm.runtime.signals import Stopped, StopSignals

DECODE_FRAMES = 16           # frames decoded and encoded at a time: memory does not grow with video length
SHARD_BYTES = 256 * 2 ** 20  # default size bound of a shard
STATE_NAME = ".encoding.json"  # settings of the encoding, written first: marks the folder as ours
_JOURNAL = re.compile(r"^\.journal-\d+\.jsonl$")
_OURS = re.compile(r"^(shard_\d+-\d+\.safetensors|\.journal-\d+\.jsonl|\..*\.tmp)$")
_UNITS = {"": 1, "b": 1, "kb": 2 ** 10, "k": 2 ** 10, "mb": 2 ** 20, "m": 2 ** 20, "gb": 2 ** 30, "g": 2 ** 30}


def parse_size(text: str) -> int:
    """``256MB``, ``1.5GB``, ``500k`` or a plain number of bytes -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS or float(match.group(1)) <= 0:
        raise SettingError("shard_size", text, "expected a positive size such as 256MB, 1GB or 500KB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@torch.no_grad()
def encode_video(codec: Codec, path: Path, length: int, pixel_resolution: int, device: torch.device) -> torch.Tensor:
    """Every frame of a video, resized and center-cropped to ``pixel_resolution``, encoded: (C, T, h, w) float16."""
    parts = []
    for start in range(0, length, DECODE_FRAMES):
        frames = read_frames(path, range(start, min(length, start + DECODE_FRAMES)))  # (t, H, W, 3) uint8
        pixels = resize_center_crop(frames, pixel_resolution)[None].to(device)  # (1, 3, t, R, R)
        parts.append(codec.encode(pixels)[0].half().cpu())  # (C, t, h, w)
    return torch.cat(parts, dim=1)


def encode_folder(root: str | os.PathLike, out: str | os.PathLike, codec: Codec, pixel_resolution: int,
                  manifest: str | None = None, device: torch.device | str = "cpu", progress: bool = True,
                  shard_bytes: int = SHARD_BYTES, resume: bool = False, rank: int = 0, world: int = 1,
                  barrier: Callable[[], None] = lambda: None, stop: StopSignals | None = None,
                  text_encoder: TextEncoder | None = None, text_name: str = "none",
                  captions: Path | None = None) -> dict:
    """Encode every usable video under ``root`` into shards in ``out`` (this process's share: videos ``i`` with
    ``i % world == rank``); return the index, which the main process (rank 0) writes when every share is done.
    ``barrier`` waits for all processes (``accelerate.PartialState().wait_for_everyone``). A signal caught by
    ``stop`` ends the run after the video in progress: the shard is closed and journalled (so ``resume=True``
    continues from there), then :class:`~ca2vdm.runtime.signals.Stopped` is raised with ``stats`` {"encoded", "videos"}
    (this process's finished videos and share). ``text_encoder`` (named ``text_name``) encodes each video's caption
    from the manifest ``captions``; videos without one are skipped."""
    out = Path(out)
    if codec.temporal.frames_per_latent > 1:
        raise DataError(f"the codec ({codec.metadata().get('class')}) compresses time (the first frame alone, then "
                        "groups of frames); latent shards are encoded frame by frame: use pixels or a per-frame "
                        "autoencoder")
    if pixel_resolution % codec.factor:
        raise DataError(f"pixel resolution {pixel_resolution} is not divisible by the codec's down-sampling "
                        f"factor {codec.factor}")
    videos = VideoFolderDataset(root, num_frames=1, resolution=pixel_resolution, manifest=manifest,
                                report_skipped=rank == 0, captions=captions if text_encoder else None,
                                caption_problem=text_encoder.problem if text_encoder else None)
    settings = {"root": str(Path(root).resolve()), "manifest": None if videos.manifest is None else
                str(videos.manifest), "pixel_resolution": pixel_resolution, "codec": codec.metadata()}
    text = {} if text_encoder is None else {"text_encoder": text_name, "text_dim": text_encoder.dim,
                                            "text_tokens": text_encoder.max_tokens}
    settings.update(text)
    check_output(out, settings, resume)  # every process checks before any writes: all agree
    barrier()
    if rank == 0:
        start_output(out, settings)
    barrier()
    done = finished_videos(out)
    todo = [i for i in range(len(videos.videos)) if i % world == rank and i not in done]
    shard = _ShardWriter(out, rank, shard_bytes)
    share = len(todo) + sum(1 for i in done if i % world == rank)
    for n, i in enumerate(tqdm(todo, desc="encode", unit="video", disable=not (progress and rank == 0),
                               dynamic_ncols=True)):
        if stop is not None and stop.signum is not None:  # between videos: close the shard, then stop
            shard.flush()
            raise Stopped(stop.signum, {"encoded": share - len(todo) + n, "videos": share})
        path = videos.videos[i]
        try:
            latents = encode_video(codec, path, videos.lengths[i], pixel_resolution, torch.device(device))
        except ValueError as error:  # probed fine, fails to decode: skipped and counted like the video dataset
            shard.skip(i, str(path), f"failed while encoding: {error}")
            continue
        entry = {"file": path.relative_to(videos.root).as_posix(), "key": f"video_{i:06d}",
                 "label": videos.labels[i], "frames": latents.shape[1]}
        tensors = {entry["key"]: latents}
        if text_encoder is not None:
            prompt = text_encoder.encode(videos.captions[i])
            entry.update(caption=videos.captions[i], text_tokens=int(prompt.mask.sum()))
            tensors[entry["key"] + TEXT_SUFFIX] = prompt.tokens[0].half()  # (text_tokens, text_dim)
        shard.add(i, entry, tensors)
    shard.flush()
    barrier()
    if rank == 0:
        write_index(out, {"codec": codec.metadata(), "pixel_resolution": pixel_resolution,
                          "resolution": pixel_resolution // codec.factor, "channels": codec.channels,
                          "num_classes": videos.num_classes, "manifest": settings["manifest"], **text},
                    [list(s) for s in videos.skipped])
    barrier()
    return json.loads((out / INDEX_NAME).read_text())


def check_output(out: Path, settings: dict, resume: bool) -> None:
    """Raise DataError unless ``out`` may receive this encoding: new or empty, or (``resume``) an unfinished encoding
    of the same settings."""
    present = check_unfinished(out, settings, resume, STATE_NAME, "encoded latents", "encoding")
    foreign = [name for name in present if name != STATE_NAME and not _OURS.match(name)]
    if foreign:
        raise DataError(f"{opt('resume')} {out}: the folder also holds files this tool did not write "
                        f"({', '.join(foreign[:3])}); move them away and resume again")


def check_unfinished(out: Path, settings: dict, resume: bool, state_name: str, product: str, work: str,
                     finished_ok: bool = False) -> list[str]:
    """The checks of a folder a resumable tool fills (here, and ``ca2vdm make-ode-pairs``): DataError unless
    ``out`` is new or empty, or (``resume``) holds an unfinished ``work`` with the same ``settings`` (recorded in
    ``state_name``); a finished one (``index.json``) is never written over, unless ``finished_ok`` and ``resume``
    (a tool that re-makes damaged parts of a finished folder). Returns the names ``out`` holds."""
    if (out / INDEX_NAME).exists() and not (finished_ok and resume):
        raise DataError(f"{out} already holds {product} ({INDEX_NAME}); choose another {opt('out')} or delete it")
    if out.exists() and not out.is_dir():
        raise DataError(f"{opt('out', out)} is not a folder (a file, device, pipe or socket); pass a new folder")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not present:
        return present
    if state_name not in present:
        shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
        raise DataError(f"{opt('out', out)} already holds files this tool did not write ({shown}); choose a new or "
                        "empty folder, so that nothing of yours is overwritten")
    if not resume:
        raise DataError(f"{out} holds an unfinished {work} (a run that was stopped); pass {opt('resume')} to "
                        f"continue it without redoing its finished shards, or choose another {opt('out')}")
    recorded = json.loads((out / state_name).read_text())
    changed = [f"{k}={settings[k]!r} (started with {recorded.get(k)!r})" for k in settings if recorded.get(k) !=
               settings[k]]
    if changed:
        raise DataError(f"{opt('resume')} {out}: the {work} was started with other settings: {'; '.join(changed)}; "
                        f"resume with the settings it was started with, or choose another {opt('out')}")
    return present


def start_output(out: Path, settings: dict) -> None:
    """Create ``out`` with its settings file (a new encoding), or clean what a killed run left (shards and
    temporary files that no journal names)."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / STATE_NAME).exists():
        write_text_atomic(out / STATE_NAME, json.dumps(settings, indent=1) + "\n")
        return
    for journal in out.glob(".journal-*.jsonl"):  # drop a line torn by the kill, so new lines start clean
        write_text_atomic(journal, "".join(json.dumps(r) + "\n" for r in _journal_records(out, journal)))
    kept = {record["shard"] for record in _journal_records(out) if record["shard"]}
    for path in out.iterdir():
        if _OURS.match(path.name) and not _JOURNAL.match(path.name) and path.name not in kept:
            path.unlink()  # a shard written after its journal line was lost, or a half-written temporary file


def finished_videos(out: Path) -> set[int]:
    """Indices of the videos a journal records as encoded (or skipped)."""
    return {video["index"] for record in _journal_records(out) for video in record["videos"] + record["skipped"]}


def write_index(out: Path, header: dict, probe_skipped: list[list[str]]) -> None:
    """Merge every process's journal into ``index.json`` (atomically, last), then drop the journals."""
    records = _journal_records(out)
    entries = sorted((v for r in records for v in r["videos"]), key=lambda v: v["index"])
    skipped = sorted((v for r in records for v in r["skipped"]), key=lambda v: v["index"])
    index = {**header, "videos": [{k: v for k, v in e.items() if k != "index"} for e in entries],
             "skipped": probe_skipped + [[s["file"], s["reason"]] for s in skipped]}
    write_text_atomic(out / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    for path in [*out.glob(".journal-*.jsonl"), out / STATE_NAME]:
        path.unlink()


class _ShardWriter:
    """One process's shards: latents gathered up to ``limit`` bytes, then written and journalled."""

    def __init__(self, out: Path, rank: int, limit: int):
        self.out, self.rank, self.limit = out, rank, limit
        self.journal = out / f".journal-{rank}.jsonl"
        self.count = sum(1 for r in _journal_records(out, self.journal) if r["shard"])
        self.tensors, self.videos, self.skipped, self.bytes = {}, [], [], 0

    def add(self, index: int, entry: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Queue a video's latents (C, T, h, w) (and its prompt's vectors); write the shard once it holds ``limit``
        bytes."""
        self.tensors.update({k: v.contiguous() for k, v in tensors.items()})
        self.videos.append({"index": index, **entry, "shard": self._name()})
        self.bytes += sum(v.numel() * v.element_size() for v in tensors.values())
        if self.bytes >= self.limit:
            self.flush()

    def skip(self, index: int, file: str, reason: str) -> None:
        self.skipped.append({"index": index, "file": file, "reason": reason})

    def flush(self) -> None:
        """Write the queued shard, then journal its videos (and the skipped ones): a kill between the two loses
        only this shard, which a resume deletes and encodes again."""
        if not self.videos and not self.skipped:
            return
        shard = self._name() if self.videos else None
        if shard:
            save_tensors_atomic(self.out / shard, self.tensors)
            self.count += 1
        with open(self.journal, "a") as f:
            f.write(json.dumps({"shard": shard, "videos": self.videos, "skipped": self.skipped}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.tensors, self.videos, self.skipped, self.bytes = {}, [], [], 0

    def _name(self) -> str:
        return f"shard_{self.rank}-{self.count:05d}.safetensors"


def _journal_records(out: Path, journal: Path | None = None) -> list[dict]:
    """Complete lines of every process's journal (or of ``journal``); a line torn by a kill is ignored."""
    records = []
    for path in [journal] if journal else sorted(out.glob(".journal-*.jsonl")):
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # torn by a kill: its shard is not counted and is encoded again
    return records

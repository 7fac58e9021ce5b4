"""The WebSocket protocol between the page and the server, and the checks on everything a client sends.

Client to server: a binary message is an upload (an image or video to continue; at most ``MAX_UPLOAD_BYTES``);
text messages are JSON objects with a ``type``:

* ``{"type": "start", "model": NAME, "label": INT | null, "seed": INT, "chunks": INT | null (until stopped),
  "step_cache": POLICY, "step_cache_options": {SETTING: NUMBER}, "first_frame": BOOL}``
  (and ``"prompt": TEXT | null`` for a text model, ``"switch_mode": "recache" | "keep" | "reset"``);
* ``{"type": "switch", "prompt": TEXT | null, "label": INT | null}``: condition the chunks after the current one on a
  new prompt (a text model) or label, with the generation's ``switch_mode``;
* ``{"type": "stop"}``: end the generation (or leave the queue) within one chunk;
* ``{"type": "shown", "frames": INT}``: how many frames the page has shown (the server stays at most
  ``LEAD_FRAMES`` ahead).

Server to client: JSON ``hello`` (models, policies, limits), ``upload``, ``queued`` (position, 1 = next),
``started``, ``done`` (reason, frames, download link), ``error`` (message); and one binary message per chunk:
a 4-byte big-endian header length, the JSON header (``CHUNK_FIELDS``), then the frames as RGB bytes (L, H, W, 3).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from ca2vdm.config import SEED_MAX, SWITCH_MODES, check_label, step_cache_config
from ca2vdm.errors import SettingError

MAX_UPLOAD_BYTES = 8 * 2 ** 20  # uploads above this are refused; the server's WebSocket allows 1 MiB more
LEAD_FRAMES = 16                # generate at most this many frames ahead of what the page has shown (2 s at 8 fps)
CHUNK_FIELDS = ("kind", "index", "frames", "height", "width", "seconds", "encode_seconds", "computed", "skipped",
                "total_frames", "chunks_done", "fps", "computed_total", "skipped_total", "first_frame_seconds")
START_FIELDS = {"type", "model", "label", "seed", "chunks", "step_cache", "step_cache_options", "first_frame",
                "prompt", "switch_mode"}
SWITCH_FIELDS = {"type", "prompt", "label"}
MAX_PROMPT_CHARS = 400  # a prompt's text; its token count is checked against the model (model.text_tokens)


class ProtocolError(ValueError):
    """A client message the server refuses; the message is shown on the page as it is."""


@dataclass(frozen=True)
class GenerationRequest:
    """A checked ``start`` message."""
    model: str
    label: int | None
    seed: int
    chunks: int | None          # None: until stopped (or --max-chunks)
    step_cache: str
    step_cache_options: dict    # the policy's settings given, checked and typed
    first_frame: bool
    prompt: str | None = None   # a text model's prompt
    switch_mode: str = "recache"  # what a switch does to the window


@dataclass(frozen=True)
class SwitchRequest:
    """A checked ``switch`` message: a new prompt or label from the next chunk on."""
    prompt: str | None = None
    label: int | None = None


def parse_message(text: str) -> dict:
    """A text message as a JSON object with a known ``type``; ProtocolError for anything else."""
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError(f"malformed message (not JSON): {text[:80]!r}; send a JSON object with a 'type'") from None
    if not isinstance(message, dict) or message.get("type") not in ("start", "stop", "shown", "switch"):
        kind = message.get("type") if isinstance(message, dict) else type(message).__name__
        raise ProtocolError(f"malformed message: unknown type {kind!r}; send 'start', 'switch', 'stop' or 'shown'")
    return message


def _integer(message: dict, key: str, what: str) -> int | None:
    value = message.get(key)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ProtocolError(f"{what} must be a whole number, got {value!r}")
    return value


def parse_start(message: dict, models: dict[str, dict], policies: dict[str, dict],
                max_chunks: int | None) -> GenerationRequest:
    """Check a ``start`` message against the models the server offers (``describe()`` by name), the step-caching
    policies (name -> settings with their defaults) and ``--max-chunks``; ProtocolError naming the field and the
    fix."""
    unknown = sorted(set(message) - START_FIELDS)
    if unknown:
        raise ProtocolError(f"unknown field(s) {', '.join(unknown)} in 'start'; allowed: "
                            f"{', '.join(sorted(START_FIELDS))}")
    name = message.get("model")
    if name not in models:
        raise ProtocolError(f"model {name!r} is not offered by this server; choose one of: {', '.join(models)}")
    label = _integer(message, "label", "label")
    prompt = _prompt(message, models[name], label)
    try:
        check_label(label, len(models[name]["labels"]))
    except SettingError as e:
        raise ProtocolError(str(e)) from None
    seed = _integer(message, "seed", "seed")
    seed = 0 if seed is None else seed
    if not 0 <= seed <= SEED_MAX:
        raise ProtocolError(f"seed must be in 0 .. 2**64 - 1, got {seed}")
    chunks = _integer(message, "chunks", "chunks")
    if chunks is not None and chunks < 1:
        raise ProtocolError(f"chunks must be at least 1 (or empty: until stopped), got {chunks}")
    if chunks is not None and max_chunks is not None and chunks > max_chunks:
        raise ProtocolError(f"chunks {chunks} is beyond this server's limit of {max_chunks} (--max-chunks); "
                            f"ask for at most {max_chunks}")
    policy = message.get("step_cache", "none")
    if policy not in policies:
        raise ProtocolError(f"unknown step cache {policy!r}; choose one of: {', '.join(policies)}")
    options = _step_cache_options(policy, message.get("step_cache_options", {}))
    first_frame = message.get("first_frame", False)
    if not isinstance(first_frame, bool):
        raise ProtocolError(f"first_frame must be true or false, got {first_frame!r}")
    switch_mode = message.get("switch_mode", "recache")
    if switch_mode not in SWITCH_MODES:
        raise ProtocolError(f"switch_mode must be one of {', '.join(SWITCH_MODES)}, got {switch_mode!r}")
    return GenerationRequest(name, label, seed, chunks, policy, options, first_frame, prompt, switch_mode)


def _prompt(message: dict, model: dict, label: int | None) -> str | None:
    """The prompt of a message: text for a text model (not with a label), nothing for a label model."""
    prompt = message.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise ProtocolError(f"prompt must be a non-empty text (or null for none), got {prompt!r}")
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise ProtocolError(f"the prompt is {len(prompt)} characters long; at most {MAX_PROMPT_CHARS}: shorten it")
    if prompt is not None and not model.get("prompts"):
        raise ProtocolError(f"model {model['name']} is conditioned on labels, not prompts; choose a label")
    if label is not None and model.get("prompts"):
        raise ProtocolError(f"model {model['name']} is conditioned on prompts, not labels; type a prompt")
    return None if prompt is None else prompt.strip()


def parse_switch(message: dict, model: dict) -> SwitchRequest:
    """Check a ``switch`` message against the model of the running generation (``describe()``)."""
    unknown = sorted(set(message) - SWITCH_FIELDS)
    if unknown:
        raise ProtocolError(f"unknown field(s) {', '.join(unknown)} in 'switch'; allowed: "
                            f"{', '.join(sorted(SWITCH_FIELDS))}")
    label = _integer(message, "label", "label")
    prompt = _prompt(message, model, label)
    try:
        check_label(label, len(model["labels"]))
    except SettingError as e:
        raise ProtocolError(str(e)) from None
    if (prompt is None) == (label is None):
        raise ProtocolError("'switch' needs a new prompt or a new label")
    return SwitchRequest(prompt, label)


def _step_cache_options(policy: str, options) -> dict:
    """The settings given for ``policy``, checked as the command line and the API check them."""
    if not isinstance(options, dict):
        raise ProtocolError(f"step_cache_options must be an object of settings, got {options!r}")
    try:
        config = step_cache_config(policy, options)
    except SettingError as e:
        raise ProtocolError(str(e)) from None
    return {} if config is None else {k: v for k, v in config.options().items() if k in options}


def parse_shown(message: dict) -> int:
    """The frame count of a ``shown`` message."""
    frames = _integer(message, "frames", "shown frames")
    if frames is None or frames < 0:
        raise ProtocolError(f"'shown' needs frames >= 0, got {message.get('frames')!r}")
    return frames


def chunk_message(header: dict, pixels: np.ndarray) -> bytes:
    """One binary message: header length, JSON header, then the (L, H, W, 3) uint8 frames."""
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head + np.ascontiguousarray(pixels).tobytes()


def read_chunk_message(data: bytes) -> tuple[dict, np.ndarray]:
    """The inverse of :func:`chunk_message` (for clients written in Python: tests and the benchmark)."""
    (length,) = struct.unpack(">I", data[:4])
    header = json.loads(data[4:4 + length])
    pixels = np.frombuffer(data[4 + length:], dtype=np.uint8)
    return header, pixels.reshape(header["frames"], header["height"], header["width"], 3)

"""The WebSocket protocol between the page and the server, and the checks on everything a client sends.

Client to server: a binary message is an upload (an image or video to continue; at most ``MAX_UPLOAD_BYTES``);
text messages (at most ``MAX_MESSAGE_CHARS``) are JSON objects with a ``type``, each validated by its pydantic
model below (:data:`ClientMessage`, a union discriminated on ``type``: typed fields with their ranges):

* ``{"type": "start", "model": NAME, "label": INT | null, "seed": INT, "chunks": INT | null (until stopped),
  "step_cache": POLICY, "step_cache_options": {SETTING: NUMBER}, "first_frame": BOOL}`` (and ``"prompt": TEXT |
  null`` for a text model, ``"switch_mode": "recache" | "keep" | "reset" | "flush"``);
* ``{"type": "switch", "prompt": TEXT | null, "label": INT | null, "at": INT | null}``: condition the chunks from
  chunk ``at`` (null: the next one the server starts) on a new prompt (a text model) or label, with the
  generation's ``switch_mode``;
* ``{"type": "stop"}``: end the generation (or leave the queue) within one chunk;
* ``{"type": "shown", "frames": INT}``: how many frames the page has shown (the server stays at most
  ``LEAD_FRAMES`` ahead, and counts no more than it has sent).

Any other JSON (another shape, a wrong type, a value out of range, a number too large) is one
:class:`ProtocolError` naming the field and what it accepts; the page shows it and can generate again.

Server to client: JSON ``hello`` (models, policies, limits), ``upload``, ``queued`` (position, 1 = next),
``started``, ``switched`` (a switch was accepted: ``at``, the chunk it applies from, and its ``prompt`` or ``label``;
a refused switch gets an ``error``: every switch gets one reply), ``done`` (reason, frames, download link),
``error`` (message); and one binary message per chunk:
a 4-byte big-endian header length, the JSON header (``CHUNK_FIELDS``), then the frames as RGB bytes (L, H, W, 3).
"""
from __future__ import annotations

import json
import struct
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from ca2vdm.config import SEED_MAX, STEP_CACHE_NAMES, SWITCH_MODES, step_cache_config
from ca2vdm.config.conditioning import check_condition, check_switch_request, condition_kind
from ca2vdm.errors import SettingError

MAX_UPLOAD_BYTES = 8 * 2 ** 20  # uploads above this are refused; the server's WebSocket allows 1 MiB more
MAX_MESSAGE_CHARS = 64 * 2 ** 10  # text messages above this are refused unread (a start message is ~300 characters)
LEAD_FRAMES = 16                # generate at most this many frames ahead of what the page has shown (2 s at 8 fps)
CHUNK_FIELDS = ("kind", "index", "frames", "height", "width", "seconds", "encode_seconds", "computed", "skipped",
                "total_frames", "chunks_done", "fps", "computed_total", "skipped_total", "first_frame_seconds")
MAX_FRAMES = 2 ** 53            # a frame count a page can hold exactly (JavaScript's largest safe integer)
MAX_PROMPT_CHARS = 400          # a prompt's text; its token count is checked against the model (model.text_tokens)
MAX_PENDING_SWITCHES = 4        # a page's switches waiting for their chunks
SWITCH_BURST, SWITCH_RATE = 4, 2.0  # a page's switches: at most SWITCH_BURST at once, then SWITCH_RATE a second


class ProtocolError(ValueError):
    """A client message the server refuses; the message is shown on the page as it is."""


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # JSON true/false is not a number (pydantic's lax int would take it as 1/0)
        raise ValueError("true/false is not a number")
    return value


Whole = Annotated[int, BeforeValidator(_not_bool)]  # an int, an integral float (3.0) or the digits of one ("3")
Prompt = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROMPT_CHARS)]
PROMPT_HELP = f"a text of 1 .. {MAX_PROMPT_CHARS} characters (not blank), or null for no prompt"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StartMessage(_Message):
    """Start a generation (checked further against the server's models and limits by :func:`parse_start`)."""
    type: Literal["start"]
    model: StrictStr = Field(description="the name of a model this server offers (text)")
    label: Annotated[Whole, Field(ge=0)] | None = Field(None, description="a whole number >= 0 (one of the model's "
                                                                          "labels), or null for no label")
    seed: Annotated[Whole, Field(ge=0, le=SEED_MAX)] = Field(0, description="a whole number in 0 .. 2**64 - 1")
    chunks: Annotated[Whole, Field(ge=1)] | None = Field(None, description="a whole number >= 1, or null (until "
                                                                           "stopped)")
    step_cache: Literal[STEP_CACHE_NAMES] = Field("none", description="one of " + ", ".join(STEP_CACHE_NAMES))
    step_cache_options: dict[str, Any] = Field(default_factory=dict, description="an object of the step cache's "
                                               "settings (name: value)")
    first_frame: StrictBool = Field(False, description="true or false")
    prompt: Prompt | None = Field(None, description=PROMPT_HELP)
    switch_mode: Literal[SWITCH_MODES] = Field("recache", description="one of " + ", ".join(SWITCH_MODES) + " (what "
                                              "a switch does to the cached window)")


class SwitchMessage(_Message):
    """A new prompt or label for a running generation (checked further against its model by :func:`parse_switch`)."""
    type: Literal["switch"]
    prompt: Prompt | None = Field(None, description=PROMPT_HELP)
    label: Annotated[Whole, Field(ge=0)] | None = Field(None, description="a whole number >= 0 (one of the model's "
                                                                          "labels), or null for none")
    at: Annotated[Whole, Field(ge=0, le=MAX_FRAMES)] | None = Field(None, description="a chunk number in 0 .. 2**53 "
                                                                    "(0-based), or null for the next chunk")


class StopMessage(_Message):
    """End the generation, or leave the queue."""
    type: Literal["stop"]


class ShownMessage(_Message):
    """How many frames the page has shown."""
    type: Literal["shown"]
    frames: Annotated[Whole, Field(ge=0, le=MAX_FRAMES)] = Field(description="a whole number in 0 .. 2**53 "
                                                                             "(frames the page has shown)")


MESSAGES = {"start": StartMessage, "switch": SwitchMessage, "stop": StopMessage, "shown": ShownMessage}
ClientMessage = Annotated[Union[StartMessage, SwitchMessage, StopMessage, ShownMessage], Field(discriminator="type")]
_CLIENT_MESSAGE = TypeAdapter(ClientMessage)
TYPES = "'start', 'switch', 'stop' or 'shown'"


def parse_message(text: str) -> StartMessage | SwitchMessage | StopMessage | ShownMessage:
    """A text message as one of the client messages; ProtocolError naming the field and what it accepts."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolError(f"the message is {len(text)} characters long, over the limit of {MAX_MESSAGE_CHARS}; "
                            f"send a JSON object with a 'type' ({TYPES})")
    try:
        return _CLIENT_MESSAGE.validate_json(text)
    except ValidationError as e:
        raise ProtocolError(_problem(e.errors()[0], text)) from None


def _problem(error: dict, text: str) -> str:
    """One line for pydantic's first error: the field, the value given and what the field accepts."""
    kind, loc = error["type"], error["loc"]
    if kind == "json_invalid":
        return (f"malformed message (not JSON: {error['ctx']['error']}): {_shown(text)}; send a JSON object with a "
                "'type'")
    if kind.startswith("union_tag") or not loc:
        given = error["input"].get("type") if isinstance(error["input"], dict) else None
        what = f"unknown type {_shown(given)}" if isinstance(error["input"], dict) else \
            f"a JSON {_json_kind(error['input'])}, not an object"
        return f"malformed message: {what}; send a JSON object whose 'type' is {TYPES}"
    message_type, field = loc[0], str(loc[1])
    model = MESSAGES[message_type]
    if kind == "extra_forbidden":
        return (f"unknown field {field} in '{message_type}'; its fields: "
                f"{', '.join(name for name in model.model_fields)}")
    accepts = model.model_fields[field].description
    if kind == "missing":
        return f"'{message_type}' needs {field}: {accepts}"
    return f"{field}={_shown(error['input'])}: must be {accepts}"


def _shown(value: Any, limit: int = 40) -> str:
    """A value as JSON, cut short (with its length) when long."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def parse_start(message: StartMessage, models: dict[str, dict], max_chunks: int | None) -> StartMessage:
    """Check a start message against the models the server offers (``describe()`` by name) and ``--max-chunks``;
    return it with its step-cache settings checked and typed (as the command line and the API check them)."""
    if message.model not in models:
        raise ProtocolError(f"model={_shown(message.model)}: not offered by this server; choose one of: "
                            f"{', '.join(models)}")
    model = models[message.model]
    try:
        check_condition(_kind(model), len(model["labels"]), message.label, message.prompt)
    except SettingError as e:
        raise ProtocolError(str(e)) from None
    try:
        config = step_cache_config(message.step_cache, message.step_cache_options)
    except SettingError as e:
        raise ProtocolError(str(e)) from None
    if message.chunks is not None and max_chunks is not None and message.chunks > max_chunks:
        raise ProtocolError(f"chunks={message.chunks}: beyond this server's limit of {max_chunks} (--max-chunks); "
                            f"ask for at most {max_chunks}")
    given = set(message.step_cache_options)
    options = {} if config is None else {k: v for k, v in config.options().items() if k in given}
    return message.model_copy(update={"step_cache_options": options})


def parse_switch(message: SwitchMessage, model: dict, last_chunk: int | None, mode: str) -> SwitchMessage:
    """Check a switch against the model of the running generation (``describe()``), its switch ``mode`` and its last
    chunk (None: until stopped) by the library's rule; whether chunk ``at`` is still to come is decided with the worker
    (``RunControl.request_switch``)."""
    if (message.prompt is None) == (message.label is None):
        raise ProtocolError("'switch' needs a new prompt or a new label (one of them)")
    try:
        check_switch_request(_kind(model), len(model["labels"]), message.label, message.prompt, mode)
    except SettingError as e:
        raise ProtocolError(str(e)) from None
    if message.at is not None and last_chunk is not None and message.at > last_chunk:
        raise ProtocolError(f"at={message.at}: past the last chunk of this generation ({last_chunk}); switch at an "
                            "earlier chunk, or null for the next one")
    return message


def _kind(model: dict) -> str:
    """The kind of condition an offered model (``describe()``) takes."""
    return condition_kind(len(model["labels"]), bool(model.get("prompts")))


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

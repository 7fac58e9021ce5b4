"""One page's WebSocket: its messages, its upload, its place in the device's queue, its generation and its mp4.

Everything a session owns lives in its own temporary folder, deleted when the page goes away. Bad messages get an
``error`` reply and the session (and the server) go on.
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from fastapi import WebSocket

from ca2vdm.errors import SettingError
from ca2vdm.io.video import VideoWriter
from ca2vdm.serve.catalog import FPS, step_cache_settings
from ca2vdm.serve.frames import PixelChunk
from ca2vdm.serve.protocol import (
    LEAD_FRAMES,
    MAX_UPLOAD_BYTES,
    ProtocolError,
    ShownMessage,
    StartMessage,
    StopMessage,
    SwitchMessage,
    chunk_message,
    parse_message,
    parse_start,
    parse_switch,
)
from ca2vdm.serve.run import Cancelled, Figures, RunControl, Stalled, produce
from ca2vdm.serve.scheduler import DeviceQueue, QueueFull
from ca2vdm.serve.uploads import save_upload

log = logging.getLogger(__name__)
Source = Callable[..., Iterator[PixelChunk]]  # frames.pixel_chunks, or a stand-in in tests
SETTINGS = step_cache_settings()  # each policy's settings with their types, ranges and help, for the page
ACK_TIMEOUT = 30.0     # a page that shows no frame for this long while the server waits for it is dropped
QUEUE_TIMEOUT = 600.0  # a page waiting longer than this for the device is told to try again


@dataclass
class ServerState:
    """What every session shares: the offered models, where frames come from, the device's queue, the limits."""
    models: dict                # name -> catalog.Offered (or anything with describe())
    source: Source
    queue: DeviceQueue
    max_chunks: int | None
    policies: dict[str, dict]  # step-cache policy -> its settings and their defaults
    temp_root: Path | None     # made when the application starts serving
    device: str = "cpu"
    ack_timeout: float | None = ACK_TIMEOUT  # seconds a generation waits for a page that shows no frame
    queue_timeout: float | None = QUEUE_TIMEOUT  # seconds a page may wait in the queue for the device
    downloads: dict[str, tuple[Path, str]] = field(default_factory=dict)  # token -> (file, name to save it as)

    def hello(self) -> dict:
        """The first message to a page: what it may ask for, and where the frames are made."""
        return {"type": "hello", "models": [m.describe() for m in self.models.values()],
                "policies": [{"name": name, "options": options, "settings": SETTINGS[name]}
                             for name, options in self.policies.items()],
                "max_chunks": self.max_chunks,
                "max_upload_bytes": MAX_UPLOAD_BYTES, "lead_frames": LEAD_FRAMES, "device": self.device,
                "threads": torch.get_num_threads()}


class Session:
    """Serve one WebSocket until it closes (:meth:`serve`), then release everything (:meth:`close`)."""

    def __init__(self, ws: WebSocket, server: ServerState):
        self.ws, self.server = ws, server
        self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=server.temp_root))
        self.upload: Path | None = None
        self.task: asyncio.Task | None = None
        self.control: RunControl | None = None
        self.request: StartMessage | None = None  # what started the running (or queued) generation
        self.queued = False
        self.token: str | None = None
        self.connected = True
        self._send_lock = asyncio.Lock()

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    # -- messages from the page ------------------------------------------------------------------------------
    async def serve(self) -> None:
        await self.send(self.server.hello())
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self.connected = False
                return
            try:
                if message.get("bytes") is not None:
                    await self.on_upload(message["bytes"])
                else:
                    await self.on_text(message.get("text") or "")
            except ProtocolError as e:
                await self.send({"type": "error", "message": str(e)})
            except Exception as e:  # a bug of ours: the page is told, and stays connected
                log.exception("a client message could not be handled")
                await self.send({"type": "error", "message": f"the server could not handle that message "
                                                             f"({type(e).__name__}); please report it"})

    async def on_upload(self, data: bytes) -> None:
        if self.busy:
            raise ProtocolError("a generation is running in this tab; upload after it has ended (or press Stop)")
        self.upload = None
        try:
            self.upload, kind = await asyncio.to_thread(save_upload, data, self.folder)
        except OSError as e:
            raise ProtocolError(f"the upload could not be stored on the server: {e}") from None
        await self.send({"type": "upload", "kind": kind, "bytes": len(data)})

    async def on_text(self, text: str) -> None:
        message = parse_message(text)
        if isinstance(message, StopMessage):
            self.stop()
        elif isinstance(message, ShownMessage):
            if self.control is not None:
                self.control.set_shown(message.frames)
        elif isinstance(message, SwitchMessage):
            if not self.busy or self.request is None:
                raise ProtocolError("no generation is running in this tab; a switch changes a running one (press "
                                    "Generate first)")
            offered, request = self.server.models[self.request.model], self.request
            limit = request.chunks if request.chunks is not None else self.server.max_chunks
            last = None if limit is None else limit - 1
            switch = parse_switch(message, offered.describe(), last, request.switch_mode)
            self._check_prompt(offered, switch.prompt)
            at = self.control.request_switch(switch, last)
            await self.send({"type": "switched", "at": at, "prompt": switch.prompt, "label": switch.label})
        else:
            if self.busy:
                raise ProtocolError("a generation is already running in this tab; press Stop first")
            models = {name: m.describe() for name, m in self.server.models.items()}
            request = parse_start(message, models, self.server.max_chunks)
            self._check_prompt(self.server.models[request.model], request.prompt)
            self._check_switch_mode(self.server.models[request.model], request.switch_mode)
            if request.first_frame and self.upload is None:
                raise ProtocolError("first_frame is set but no image or video was uploaded (or it was refused); "
                                    "upload one first")
            upload, self.upload = (self.upload, None) if request.first_frame else (None, self.upload)
            self.control, self.request = RunControl(ack_timeout=self.server.ack_timeout), request
            self.task = asyncio.create_task(self.run(request, upload, self.control))

    @staticmethod
    def _check_prompt(offered, prompt: str | None) -> None:
        """A prompt longer than the model reads is refused now, not when its chunk comes."""
        check = getattr(offered, "check_prompt", None)  # tests' stand-in models may have none
        try:
            if check is not None:
                check(prompt)
        except SettingError as e:
            raise ProtocolError(str(e)) from None

    @staticmethod
    def _check_switch_mode(offered, mode: str) -> None:
        """A switch mode the model's sampler cannot carry out (keep outside cache mode kv) is refused at the start,
        as the command line refuses it before its first chunk."""
        pipe = getattr(offered, "pipe", None)  # tests' stand-in models have none
        try:
            if pipe is not None:
                pipe.sampler.check_switch_mode(mode)
        except SettingError as e:
            raise ProtocolError(str(e)) from None

    def stop(self) -> None:
        """End this page's generation within one chunk, or take it out of the queue."""
        if self.busy:
            self.control.stop()
            if self.queued:
                self.task.cancel()

    # -- the generation ---------------------------------------------------------------------------------------
    async def run(self, request: StartMessage, upload: Path | None, control: RunControl) -> None:
        try:
            self.queued = True
            try:
                await self.server.queue.acquire(self.tell_position, self.server.queue_timeout)
            except QueueFull as e:
                await self.send({"type": "error", "message": str(e)})
                return
            except asyncio.CancelledError:
                await self.send({"type": "done", "reason": "stopped", "frames": 0, "chunks": 0, "download": None})
                return
            finally:
                self.queued = False
            try:
                await self.generate(request, upload, control)
            except Exception as e:  # before the worker started (e.g. the mp4 cannot be created): tell the page
                log.exception("generation could not start")
                await self.send({"type": "error", "message": f"generation failed: {e}"})
                await self.send({"type": "done", "reason": "error", "frames": 0, "chunks": 0, "download": None})
            finally:
                control.stop()  # a no-op unless this task was cancelled (the server shutting down)
                self.server.queue.release()
        finally:
            if upload is not None:
                upload.unlink(missing_ok=True)

    async def tell_position(self, position: int) -> None:
        await self.send({"type": "queued", "position": position})

    async def generate(self, request: StartMessage, upload: Path | None, control: RunControl) -> None:
        """Run the generation on a worker thread, sending each chunk as soon as it is ready; then ``done``."""
        loop, items = asyncio.get_running_loop(), asyncio.Queue()
        self.drop_download()
        limit = request.chunks if request.chunks is not None else self.server.max_chunks
        path = self.folder / "video.mp4"
        writer, figures = VideoWriter(path, fps=FPS, overwrite=True), Figures()
        await self.send({"type": "started", "model": request.model, "chunks": limit, "fps": FPS,
                         "until_stopped": request.chunks is None})

        def hand_over(item) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:  # the event loop has closed (the server shut down): nobody is listening
                control.stop()

        def emit(header: dict, pixels) -> None:
            hand_over(chunk_message(header, pixels))

        def work() -> None:
            outcome: str | Exception = "limit" if request.chunks is None and limit is not None else "finished"
            try:
                chunks = self.server.source(
                    self.server.models[request.model], label=request.label, seed=request.seed, chunks=limit,
                    step_cache=request.step_cache, step_cache_options=request.step_cache_options,
                    first_frame=upload, poll=control.poll, prompt=request.prompt,
                    switch_mode=request.switch_mode, switches=control.take_switches)
                produce(chunks, writer, control, emit, figures)
            except Stalled:
                outcome = "stalled"
            except Cancelled:
                outcome = "stopped"
            except Exception as e:  # reported on the page; the server goes on
                log.exception("generation failed")
                outcome = e
            try:
                writer.close() if writer.frames_written else writer.abort()
            except Exception as e:
                outcome = e
            hand_over(outcome)

        threading.Thread(target=work, name="ca2vdm-generate", daemon=True).start()
        while isinstance(item := await items.get(), bytes):
            await self.send(item)
        if item == "stalled":
            await self.send({"type": "error", "message": f"this tab showed no new frame for "
                             f"{self.server.ack_timeout:g} s (a hidden tab, or a connection too slow for the video): "
                             "the generation was ended to free the device for others; press Generate to start again"})
        if isinstance(item, Exception):
            problem = str(item) if isinstance(item, ValueError) else f"{type(item).__name__}: {item}"
            await self.send({"type": "error", "message": f"generation failed: {problem}"})
        download = None
        if writer.frames_written and path.exists() and self.connected:
            self.token = secrets.token_urlsafe(16)
            self.server.downloads[self.token] = (path, f"ca2vdm-{_safe(request.model)}-seed{request.seed}.mp4")
            download = f"/download/{self.token}"
        await self.send({"type": "done", "reason": item if isinstance(item, str) else "error",
                         "frames": writer.frames_written, "chunks": figures.chunks_done, "download": download,
                         "filename": download and self.server.downloads[self.token][1], "fps": figures.fps,
                         "first_frame_seconds": figures.first_frame_seconds,
                         "seconds": time.perf_counter() - figures.tic})

    # -- sending and clean-up ---------------------------------------------------------------------------------
    async def send(self, message: dict | bytes) -> None:
        """Send to the page; once it has gone, stop the generation instead."""
        if not self.connected:
            return
        try:
            async with self._send_lock:
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                else:
                    await self.ws.send_json(message)
        except Exception:  # the page went away mid-send
            self.connected = False
            if self.control is not None:
                self.control.stop()

    def drop_download(self) -> None:
        if self.token is not None:
            path, _ = self.server.downloads.pop(self.token)
            path.unlink(missing_ok=True)
            self.token = None

    def close(self) -> None:
        """The page has gone: stop its generation (within one chunk); its files go once the generation has ended.
        Nothing here awaits, so a cancelled handler still cleans up."""
        self.connected = False
        if self.busy:
            self.stop()
            self.task.add_done_callback(lambda _: self._clean_up())
        else:
            self._clean_up()

    def _clean_up(self) -> None:
        self.drop_download()
        shutil.rmtree(self.folder, ignore_errors=True)


def _safe(name: str) -> str:
    """A model name as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)

"""The FastAPI application: the page, its WebSocket and the mp4 downloads."""
from __future__ import annotations

import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, WebSocket
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ca2vdm.serve.catalog import step_cache_choices
from ca2vdm.serve.frames import pixel_chunks
from ca2vdm.serve.scheduler import DeviceQueue
from ca2vdm.serve.session import ACK_TIMEOUT, QUEUE_TIMEOUT, ServerState, Session, Source

STATIC = Path(__file__).parent / "static"


def create_app(models: dict, max_chunks: int | None = None, max_queue: int = 4, device: str = "cpu",
               source: Source = pixel_chunks, ack_timeout: float | None = ACK_TIMEOUT,
               queue_timeout: float | None = QUEUE_TIMEOUT) -> FastAPI:
    """The demo server for ``models`` (name -> ``catalog.Offered``, see ``catalog.load_catalog``, all on ``device``),
    with at most ``max_chunks`` per generation and ``max_queue`` generations waiting for the device (each at most
    ``queue_timeout`` seconds); a generation whose page shows no new frame for ``ack_timeout`` seconds is ended.
    ``source`` makes the frames (``frames.pixel_chunks``; tests pass a stand-in). Temporary files live in one
    folder, made when the application starts serving and removed when it shuts down (a server that fails to start
    leaves none)."""
    state = ServerState(models, source, DeviceQueue(max_queue), max_chunks, step_cache_choices(), None, device,
                        ack_timeout=ack_timeout, queue_timeout=queue_timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.temp_root = Path(tempfile.mkdtemp(prefix="ca2vdm-serve-"))
        try:
            yield
        finally:
            shutil.rmtree(state.temp_root, ignore_errors=True)

    app = FastAPI(title="ca2vdm live demo", lifespan=lifespan)
    app.state.serve = state

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/download/{token}")
    async def download(token: str) -> FileResponse:
        if token not in state.downloads:
            raise HTTPException(404, "no such video: it was replaced by a newer generation or its page was closed")
        path, name = state.downloads[token]
        return FileResponse(path, media_type="video/mp4", filename=name)

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        session = Session(ws, state)
        try:
            await session.serve()
        finally:
            session.close()

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

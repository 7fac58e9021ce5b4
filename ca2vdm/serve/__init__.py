"""The live web demo: a FastAPI + WebSocket server that streams each chunk's frames to a page as it is denoised.

``catalog`` (the offered checkpoints), ``frames`` (the pipeline as uint8 chunks), ``protocol`` (messages and checks),
``uploads``, ``scheduler`` (one generation per device, a bounded queue), ``run`` (the worker thread), ``session``
(one page), ``app`` (routes), ``connections`` (uvicorn's settings: a header deadline, keep-alive, a connection limit)
and ``static/`` (the page). Started by ``ca2vdm-serve`` (:mod:`ca2vdm.cli.serve`).
Imports :mod:`ca2vdm.generation` and the layers below; ``create_app`` and ``load_catalog`` load on first use.
"""
from importlib import import_module

_EXPORTS = {"create_app": "ca2vdm.serve.app", "load_catalog": "ca2vdm.serve.catalog"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ca2vdm.serve' has no attribute {name!r}")


__all__ = list(_EXPORTS)

"""The live web demo: a FastAPI + WebSocket server that streams each chunk's frames to a page as it is denoised.

``catalog`` (the offered checkpoints), ``frames`` (the pipeline as uint8 chunks), ``protocol`` (messages and checks),
``uploads``, ``scheduler`` (one generation per device, a bounded queue), ``run`` (the worker thread), ``session``
(one page), ``app`` (routes) and ``static/`` (the page). Started by ``infer/serve.py``.
"""
from .app import create_app
from .catalog import load_catalog

__all__ = ["create_app", "load_catalog"]

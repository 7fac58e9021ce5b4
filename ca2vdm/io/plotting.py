"""Plots of the benchmark scripts are optional: matplotlib is the ``plot`` extra (``pip install -e ".[plot]"``,
installed by ``scripts/setup.sh``). Every script writes its JSON first and then draws through :func:`plot_or_skip`,
which prints one line instead of a traceback when matplotlib is missing, so minutes of measurement are never lost
to a missing plotting library."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def plot_or_skip(plot: Callable[..., None], *args, path: str | Path) -> bool:
    """``plot(*args, path)`` with matplotlib's file-only Agg backend; True if drawn. Without matplotlib: print
    ``skipped the plot PATH: ...`` and return False."""
    try:
        import matplotlib
    except ImportError:
        print(f"skipped the plot {path}: matplotlib is not installed (pip install -e \".[plot]\", or bash "
              "scripts/setup.sh); the JSON holds every figure")
        return False
    matplotlib.use("Agg")
    plot(*args, path)
    return True

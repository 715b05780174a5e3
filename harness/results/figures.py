"""Figures of the report: matplotlib without a display, and PNGs written atomically."""

from __future__ import annotations

import io
from pathlib import Path

from harness.core.files import atomic_write_bytes

DPI = 110


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write as PNG (atomically) and close a figure; returns `path`."""
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=DPI, format="png")
    pyplot().close(fig)
    return atomic_write_bytes(path, png.getvalue())

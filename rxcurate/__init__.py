"""rxcurate: curate and publish high-content-screening microscopy datasets."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("rxcurate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load"]


def load(target: str, version: str | None = None, part: str = "images", **kwargs: Any) -> Any:
    """Load one part of a published version: ``images`` -> ``datasets.Dataset`` (``streaming=True``: an
    ``IterableDataset``), ``metadata`` / ``embeddings/<name>`` -> pandas DataFrame, ``wells`` ->
    :class:`rxcurate.consume.wells.Wells` (``(array[6, H, W] uint8, metadata row)`` per well). See
    :func:`rxcurate.consume.pull.load` (imported lazily so ``import rxcurate`` stays light)."""
    from rxcurate.consume.pull import load as _load  # lazy: `import rxcurate` stays light

    return _load(target, version, part, **kwargs)

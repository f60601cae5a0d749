"""rxcurate: curate and publish high-content-screening microscopy datasets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rxcurate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

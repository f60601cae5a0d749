"""Well-level access to a release: one ``(channels, H, W)`` uint8 array per well with its metadata row.

A release stores one grayscale JPEG 2000 image per ``__key__`` = ``<experiment>/Plate<plate>/<address>_s<site>_<ch>``
in ``data/train-*.parquet`` (sorted by ``__key__``, so the images of a well are adjacent). :class:`Wells` streams the
shards one row group at a time (never a whole shard, let alone all of them, in memory), decodes each well's channels
with ``imagecodecs.jpeg2k_decode`` and yields ``(array[len(channels), H, W] uint8, metadata row as dict)``, channels in
release order (1..6 for RxRx3), for one site (1 by default). :meth:`Wells.torch` wraps it as a torch
``IterableDataset`` of ``(tensor[C, H, W] uint8, well_id)`` that splits wells across DataLoader workers.

Open a local release folder (``Wells(folder)``) or a published version (``rxcurate.load(target, part="wells")``,
which pulls the images and metadata into the verified cache first).

Layer: consumers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from rxcurate.errors import PullError
from rxcurate.layout import METADATA_PARQUET, read_release_json, shard_paths

KEY_COLUMN = "__key__"
# the metadata columns that name a well's images, per layout: experiment, plate, address (+ site for RxRx1 rows)
_KEY_PARTS = {"rxrx3": ("experiment_name", "plate", "address"), "rxrx1": ("experiment", "plate", "well")}


def well_prefix(experiment: str, plate: Any, address: str, site: int) -> str:
    """``<experiment>/Plate<plate>/<address>_s<site>``: the ``__key__`` of a well's image less ``_<channel>``."""
    return f"{experiment}/Plate{int(plate)}/{address}_s{int(site)}"


class Wells:
    """The wells of a release folder, iterated in ``__key__`` order (see the module doc)."""

    def __init__(self, folder: str | os.PathLike[str], *, site: int = 1) -> None:
        self.folder = Path(folder)
        release = read_release_json(self.folder)
        image = release.image
        self.layout = release.layout or "rxrx3"
        self.column = str(image.get("column", "jp2"))
        self.channels = [int(c) for c in image.get("channels", [])]
        sites = [int(s) for s in image.get("sites", [1])]
        if site not in sites:
            raise PullError(f"{self.folder}: site {site} is not in this release (sites {sites})")
        self.site = site
        shape = image.get("shape") or [0, 0]
        self.shape = (len(self.channels), int(shape[0]), int(shape[1]))
        self.shards = shard_paths(self.folder)
        if not self.shards or not self.channels:
            raise PullError(f"{self.folder}: no image shards (data/*.parquet) or no channels in release.json: pull "
                            "the images part (rxcurate pull TARGET --parts images,metadata)")
        meta_path = self.folder / METADATA_PARQUET
        if not meta_path.is_file():
            raise PullError(f"{meta_path} is missing: pull the metadata part (rxcurate pull TARGET --parts metadata)")
        metadata = pd.read_parquet(meta_path)
        if self.layout == "rxrx1":
            metadata = metadata[metadata["site"].astype(int) == site]
        exp, plate, addr = _KEY_PARTS.get(self.layout, _KEY_PARTS["rxrx3"])
        rows = metadata.astype(object).where(metadata.notna(), None).to_dict("records")
        self.metadata: dict[str, dict[str, Any]] = {
            well_prefix(str(r[exp]), r[plate], str(r[addr]), site): {str(k): v for k, v in r.items()} for r in rows}

    def __len__(self) -> int:
        return len(self.metadata)

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        return self.iter()

    def iter(self, keep: Callable[[int], bool] | None = None) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        """``(array[C, H, W] uint8, metadata row)`` per well; with ``keep``, only the wells whose index (in
        ``__key__`` order) it accepts are decoded and yielded (the others are skipped undecoded)."""
        index = -1
        for prefix, images in self._grouped():
            index += 1
            if keep is not None and not keep(index):
                continue
            yield self._decode(prefix, images), dict(self.metadata[prefix])

    def _grouped(self) -> Iterator[tuple[str, dict[int, bytes]]]:
        """``(well prefix, {channel: jp2 bytes})`` per metadata well, streaming row group by row group."""
        current: str | None = None
        images: dict[int, bytes] = {}
        for path in self.shards:
            f = pq.ParquetFile(path)
            for g in range(f.num_row_groups):
                t = f.read_row_group(g, columns=[KEY_COLUMN, self.column])
                for key, cell in zip(t.column(KEY_COLUMN).to_pylist(), t.column(self.column).to_pylist(),
                                     strict=True):
                    prefix, _, channel = str(key).rpartition("_")
                    if prefix not in self.metadata:
                        continue  # another site's image
                    if prefix != current:
                        if current is not None:
                            yield current, images
                        current, images = prefix, {}
                    images[int(channel)] = bytes(cell["bytes"] if isinstance(cell, dict) else cell)
        if current is not None:
            yield current, images

    def _decode(self, prefix: str, images: dict[int, bytes]) -> np.ndarray:
        missing = [c for c in self.channels if c not in images]
        if missing:
            raise PullError(f"{self.folder}: well {prefix} has no image for channel(s) {missing} in the shards")
        out = np.empty(self.shape, dtype=np.uint8)
        for i, c in enumerate(self.channels):
            img = imagecodecs.jpeg2k_decode(images[c])
            if img.shape != self.shape[1:] or img.dtype != np.uint8:
                raise PullError(f"{self.folder}: {prefix}_{c} decodes to {img.dtype} {img.shape}, release.json "
                                f"declares uint8 {list(self.shape[1:])}")
            out[i] = img
        return out

    def torch(self) -> Any:
        """A ``torch.utils.data.IterableDataset`` of ``(tensor[C, H, W] uint8, well_id)``; with DataLoader
        workers each worker decodes a disjoint share of the wells."""
        return wells_dataset(self)


def wells_dataset(wells: Wells) -> Any:
    """See :meth:`Wells.torch`."""
    import torch  # heavy: only for the torch wrapper
    from torch.utils.data import IterableDataset, get_worker_info  # heavy: only for the torch wrapper

    class WellsDataset(IterableDataset):
        def __init__(self) -> None:
            super().__init__()
            self.wells = wells

        def __len__(self) -> int:
            return len(self.wells)

        def __iter__(self) -> Iterator[tuple[Any, str]]:
            info = get_worker_info()
            keep = None if info is None else (lambda i: i % info.num_workers == info.id)
            for array, row in self.wells.iter(keep):
                yield torch.from_numpy(array), str(row["well_id"])

    return WellsDataset()

"""Parquet image shards: ``data/train-XXXXX-of-YYYYY.parquet`` with ``__key__`` and ``jp2`` columns.

``jp2`` is the ``datasets`` Image storage struct ``{bytes: binary, path: string}`` (path = ``<__key__>.jp2``).
The Arrow schema carries the ``huggingface`` metadata key with the features, so ``datasets`` decodes ``jp2`` as an
``Image`` without a dataset card. Image bytes are stored without Parquet compression (JPEG 2000 does not compress
further), without dictionary encoding and without statistics; ``__key__`` is zstd-compressed with statistics.
Shards and row groups are cut by image bytes (whole wells per shard, whole images per row group).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rxcurate.io import atomic_path

SHARD_PREFIX = "train"
SHARD_GLOB = f"{SHARD_PREFIX}-*-of-*.parquet"
IMAGE_COLUMN = "jp2"
KEY_COLUMN = "__key__"
# Exactly what datasets.Features({"__key__": Value("string"), "jp2": Image()}).to_dict() gives.
FEATURES = {KEY_COLUMN: {"dtype": "string", "_type": "Value"}, IMAGE_COLUMN: {"_type": "Image"}}
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SCHEMA = pa.schema(
    [(KEY_COLUMN, pa.string()), (IMAGE_COLUMN, IMAGE_STRUCT)],
    metadata={b"huggingface": json.dumps({"info": {"features": FEATURES}}).encode()},
)
PARQUET_OPTIONS = {
    "compression": {KEY_COLUMN: "zstd", f"{IMAGE_COLUMN}.bytes": "none", f"{IMAGE_COLUMN}.path": "zstd"},
    "use_dictionary": False,
    "write_statistics": [KEY_COLUMN],
}


def shard_name(index: int, count: int) -> str:
    return f"{SHARD_PREFIX}-{index:05d}-of-{count:05d}.parquet"


def pack(sizes: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Greedy contiguous ranges [start, stop) whose sizes sum to <= budget (an item larger than it stands alone)."""
    ranges: list[tuple[int, int]] = []
    start, total = 0, 0
    for i, s in enumerate(sizes):
        if i > start and total + s > budget:
            ranges.append((start, i))
            start, total = i, 0
        total += s
    if len(sizes) > start:
        ranges.append((start, len(sizes)))
    return ranges


def shard_table(keys: pa.Array | pa.ChunkedArray | Sequence[str], blobs: pa.Array | pa.ChunkedArray | Sequence[bytes],
                extension: str = "jp2") -> pa.Table:
    """A one-chunk table in the shard schema; ``path`` = ``<key>.<extension>``."""
    keys = _one_chunk(keys, pa.string())
    blobs = _one_chunk(blobs, pa.binary())
    paths = pc.binary_join_element_wise(keys, f".{extension}", "")
    images = pa.StructArray.from_arrays([blobs, paths], fields=list(IMAGE_STRUCT))
    return pa.Table.from_arrays([keys, images], schema=SCHEMA)


def _one_chunk(values, typ: pa.DataType) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks().cast(typ) if values.num_chunks != 1 else values.chunk(0).cast(typ)
    if isinstance(values, pa.Array):
        return values.cast(typ)
    return pa.array(list(values), type=typ)


def write_shard(dest: Path, keys, blobs, row_group_bytes: int, extension: str = "jp2") -> None:
    """Write one shard atomically; row groups are cut at ``row_group_bytes`` of image data.

    Each row group is written from one contiguous chunk, so the bytes do not depend on how the inputs were chunked.
    """
    if isinstance(blobs, pa.ChunkedArray | pa.Array):
        sizes = pc.binary_length(blobs).to_pylist()
    else:
        sizes = [len(b) for b in blobs]
    keys_c = keys if isinstance(keys, pa.ChunkedArray | pa.Array) else pa.array(list(keys), type=pa.string())
    blobs_c = blobs if isinstance(blobs, pa.ChunkedArray | pa.Array) else pa.array(list(blobs), type=pa.binary())
    with atomic_path(dest) as tmp:
        with pq.ParquetWriter(tmp, SCHEMA, **PARQUET_OPTIONS) as writer:
            for start, stop in pack(sizes, row_group_bytes):
                n = stop - start
                writer.write_table(shard_table(keys_c.slice(start, n), blobs_c.slice(start, n), extension),
                                   row_group_size=n)

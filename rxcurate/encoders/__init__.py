"""Encoder registry: ``baseline`` (weight-free features), ``openphenom`` (CA-MAE ViT-S/16), ``timm:<model>``.

Every encoder maps uint8 tiles ``[N, C, T, T]`` to float32 vectors (see :class:`Encoder`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rxcurate.encoders.base import FINAL, Encoder, resolve_blocks, resolve_device
from rxcurate.errors import EmbedError
from rxcurate.layout import embedding_set_name

__all__ = [
    "FINAL",
    "Encoder",
    "encoder_dirname",
    "get_encoder",
    "list_encoders",
    "resolve_blocks",
    "resolve_device",
]

_DESCRIPTIONS = {
    "baseline": "deterministic weight-free features (intensity, objects, texture, frequency, channel correlations)",
    "openphenom": "OpenPhenom channel-agnostic MAE ViT-S/16, 384-d (needs --weights model.safetensors)",
    "timm:<model>": "any timm ViT or CNN with in_chans = the screen's channels (optional extra: rxcurate[timm])",
}


def list_encoders() -> list[str]:
    """Registry names (``timm:<model>`` stands for any timm model name)."""
    return list(_DESCRIPTIONS)


def describe_encoders() -> dict[str, str]:
    return dict(_DESCRIPTIONS)


encoder_dirname = embedding_set_name  # the folder of an encoder's embeddings: rxcurate.layout names it


def get_encoder(
    name: str,
    *,
    channels: int,
    weights: str | Path | None = None,
    allow_random: bool = False,
    device: str | torch.device = "cpu",
    tile_size: int = 256,
    precision: str = "auto",
    seed: int = 0,
    downsample: int = 1,
) -> Encoder:
    """Build an encoder for ``channels``-channel tiles of side ``tile_size`` on ``device``.

    ``precision`` ``auto`` = bfloat16 autocast for neural encoders on CUDA, float32 otherwise (``bfloat16`` may also be
    forced on CPU; the baseline always computes in float32). ``weights`` is a local
    file; without it, neural encoders refuse unless ``allow_random`` (seeded by ``seed``; for tests).
    ``downsample`` k > 1: the network is built for ``tile_size / k`` px and each tile is averaged over k x k pixel
    blocks before it (see :meth:`Encoder.encode`).
    """
    if not isinstance(downsample, int) or downsample < 1 or tile_size % downsample:
        raise EmbedError(f"downsample {downsample!r}: give an integer >= 1 that divides the tile size {tile_size} "
                         "(e.g. downsample 4 with tile 256)")
    if downsample > 1:
        enc = get_encoder(name, channels=channels, weights=weights, allow_random=allow_random, device=device,
                          tile_size=tile_size // downsample, precision=precision, seed=seed)
        enc.downsample = downsample
        return enc
    dev = resolve_device(device)
    if channels < 1:
        raise EmbedError(f"channels must be >= 1, got {channels}")
    if tile_size < 8:
        raise EmbedError(f"--tile {tile_size}: tiles must be at least 8 px")
    if precision not in ("auto", "float32", "bfloat16"):
        raise EmbedError(f"precision: bad value {precision!r}; valid: auto, float32, bfloat16")
    neural_precision = ("bfloat16" if dev.type == "cuda" else "float32") if precision == "auto" else precision
    if name == "baseline":
        if weights is not None:
            raise EmbedError("encoder baseline is weight-free: drop --weights")
        from rxcurate.encoders.baseline import BaselineEncoder  # torch: loaded only when an encoder is built

        return BaselineEncoder(channels=channels, tile_size=tile_size, device=dev)
    if name == "openphenom":
        from rxcurate.encoders.openphenom import OpenPhenomEncoder  # torch: loaded only when an encoder is built

        return OpenPhenomEncoder(channels=channels, tile_size=tile_size, weights=weights, allow_random=allow_random,
                                 device=dev, precision=neural_precision, seed=seed)
    if name.startswith("timm:"):
        from rxcurate.encoders.timm_encoder import TimmEncoder  # torch (+ timm): only when an encoder is built

        return TimmEncoder(name.removeprefix("timm:"), channels=channels, tile_size=tile_size, weights=weights,
                           allow_random=allow_random, device=dev, precision=neural_precision, seed=seed)
    raise EmbedError(f"--encoder: unknown encoder {name!r}; valid: baseline, openphenom, timm:<model> "
                     "(e.g. timm:vit_small_patch16_224)")

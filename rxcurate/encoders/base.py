"""The encoder interface shared by every featuriser, and helpers for weights and block selection."""

from __future__ import annotations

import abc
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rxcurate.errors import EmbedError
from rxcurate.io import sha256_file

FINAL = "final"  # key of an encoder's default output in :meth:`Encoder.encode`


class Encoder(abc.ABC):
    """A featuriser of uint8 image tiles.

    Attributes:
        name: registry name (``baseline``, ``openphenom``, ``timm:<model>``).
        channels: number of channels the encoder accepts; None = any (channel-agnostic).
        tile_size: side of the square tiles it encodes.
        dim: length of the ``final`` output vector.
        block_names: intermediate outputs :meth:`encode` can return (``block01``...), empty for non-transformers.
        weights_sha256: sha256 of the weights file, None for weight-free or random-initialised encoders.
        weights_desc: human description of the weights (file name, ``random(seed=0)``, ``none``).
        precision: ``float32`` or ``bfloat16`` (autocast, CUDA only).
        downsample: k > 1 averages k x k pixel blocks of each input tile (``tile_size * k`` px) before the network,
            which is built for ``tile_size`` px.
    """

    name: str
    channels: int | None
    tile_size: int
    dim: int
    block_names: tuple[str, ...] = ()
    weights_sha256: str | None = None
    weights_desc: str = "none"
    precision: str = "float32"
    device: torch.device = torch.device("cpu")
    downsample: int = 1

    @abc.abstractmethod
    def _encode(self, x: torch.Tensor, blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        """Encode a validated uint8 batch on ``self.device``; return float tensors [N, D] keyed by output."""

    def encode(self, x: torch.Tensor, blocks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Encode uint8 tiles ``[N, C, T, T]`` into float32 ``[N, D]`` tensors.

        Returns ``{"final": ...}`` plus one entry per requested block name.
        """
        self.check_input(x)
        blocks = list(blocks or [])
        unknown = [b for b in blocks if b not in self.block_names]
        if unknown:
            valid = list(self.block_names) or "none"
            raise EmbedError(f"encoder {self.name} has no block(s) {unknown}; valid: {valid}")
        x = x.to(self.device, non_blocking=True)
        with torch.inference_mode():
            if self.downsample > 1:
                x = F.avg_pool2d(x.float(), self.downsample).round_().to(torch.uint8)
            out = self._encode(x, blocks)
        return {k: v.float() for k, v in out.items()}

    def check_input(self, x: torch.Tensor) -> None:
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise EmbedError(f"{self.name} expects uint8 tiles [N, C, T, T], got {tuple(x.shape)} {x.dtype}")
        if self.channels is not None and x.shape[1] != self.channels:
            raise EmbedError(f"{self.name} was built for {self.channels} channels, got {x.shape[1]}")
        side = self.tile_size * self.downsample
        if x.shape[2] != side or x.shape[3] != side:
            raise EmbedError(f"{self.name} was built for {side}x{side} tiles, got "
                             f"{x.shape[2]}x{x.shape[3]} (set --tile to match)")

    def flops_per_tile(self, channels: int) -> float | None:
        """Analytical forward FLOPs (multiply-add = 2) for one tile, None where unknown."""
        return None

    def info(self) -> dict[str, Any]:
        out = {
            "encoder": self.name,
            "dim": self.dim,
            "tile_size": self.tile_size * self.downsample,
            "channels": self.channels,
            "weights": self.weights_desc,
            "weights_sha256": self.weights_sha256,
            "precision": self.precision,
        }
        if self.downsample > 1:
            out["downsample"] = self.downsample
        return out


def self_standardize(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> [0, 1] -> per-image, per-channel instance normalisation (as the OpenPhenom MAE's input norm)."""
    return F.instance_norm(x.float() / 255.0, eps=1e-5)


def block_name(index: int) -> str:
    """1-based transformer block number -> output name (``block06``)."""
    return f"block{index:02d}"


def resolve_blocks(encoder: Encoder, spec: str | Sequence[str] | None) -> list[str]:
    """Parse ``--blocks``: ``3,6,last``, ``all`` or a list of names/numbers -> sorted unique block names."""
    if spec is None or spec == "" or (not isinstance(spec, str) and len(spec) == 0):
        return []
    names = encoder.block_names
    if not names:
        raise EmbedError(f"--blocks: encoder {encoder.name} has no transformer blocks; use it without --blocks "
                         "(blocks apply to openphenom and timm vision transformers)")
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    chosen: set[int] = set()
    for item in items:
        low = item.lower()
        if low == "all":
            chosen.update(range(len(names)))
        elif low == "last":
            chosen.add(len(names) - 1)
        elif low in names:
            chosen.add(names.index(low))
        elif low.isdigit() and 1 <= int(low) <= len(names):
            chosen.add(int(low) - 1)
        else:
            raise EmbedError(f"--blocks: bad block {item!r}; give 1-based block numbers 1..{len(names)}, 'last' or "
                             "'all', e.g. --blocks 3,6,last")
    return [names[i] for i in sorted(chosen)]


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise EmbedError("--device cuda: no CUDA device is available here; use --device cpu (or auto)")
    if text != "cpu" and not text.startswith("cuda"):
        raise EmbedError(f"--device: bad value {text!r}; valid: auto, cpu, cuda")
    return torch.device(text)


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n < 1 << 31 and head[8:9] == b"{"


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file: safetensors, or a torch checkpoint (the published OpenPhenom ``model.safetensors`` is
    in fact a ``torch.save`` pickle of ``{"state_dict": ...}``). Loaded without executing code (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise EmbedError(f"--weights: file {path} does not exist (give a local .safetensors or .pt file)")
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file  # torch: only when weights are loaded

            sd: Any = load_file(str(path), device="cpu")
        else:
            # a file object: torch >= 2.13 hands *paths* ending in .safetensors to the safetensors reader
            with open(path, "rb") as f:
                sd = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad weights file
        raise EmbedError(f"--weights: cannot read {path} as safetensors or a torch checkpoint: {exc}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EmbedError(f"--weights: {path} does not hold a state dict of tensors")
    return dict(sd)


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], *, what: str, hint: str = "") -> None:
    """``module.load_state_dict(state, strict=True)`` with an :class:`EmbedError` naming every mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        def cut(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {cut(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {cut(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {cut(shapes)}")
        raise EmbedError(f"--weights do not match the {what} architecture; " + "; ".join(parts) + (
            f". {hint}" if hint else ""))
    module.load_state_dict(state, strict=True)


def weights_sha(path: str | Path) -> str:
    return sha256_file(path)

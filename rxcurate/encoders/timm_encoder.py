"""``timm:<model>``: any timm vision transformer or CNN, built for the screen's channel count.

timm is optional (``pip install 'rxcurate[timm]'`` plus a torchvision build matching your torch). The model is built
with ``in_chans`` = the screen's channels, ``num_classes=0`` (pooled features) and, where the model takes it,
``img_size`` = the tile size; inputs are self-standardised like OpenPhenom's (uint8 -> [0, 1] -> per-channel
instance norm). Weights come from a local file (``--weights``); nothing is downloaded. Intermediate ``blocks`` (for
models with a ``blocks`` sequence, e.g. ViTs) are read with forward hooks in the same pass and mean-pooled over
tokens (prefix tokens excluded) or over space for 4-D feature maps.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from rxcurate.encoders.base import (
    FINAL,
    Encoder,
    block_name,
    load_state_dict_file,
    load_strict,
    self_standardize,
    weights_sha,
)
from rxcurate.errors import EmbedError

INSTALL_HINT = ("install it with: pip install 'rxcurate[timm]' together with a torchvision build matching your "
                "torch (e.g. pip install torchvision==<the release paired with torch {torch}> from the index you "
                "got torch from)")


def import_timm() -> ModuleType:
    """Import timm or raise :class:`EmbedError` saying how to install it."""
    try:
        return importlib.import_module("timm")
    except Exception as exc:  # noqa: BLE001 - ImportError, or torchvision failing to load beside this torch
        hint = INSTALL_HINT.format(torch=torch.__version__.split("+")[0])
        raise EmbedError(f"encoder timm:<model> needs timm, which cannot be imported here ({exc.__class__.__name__}: "
                         f"{exc}); {hint}") from None


def _pool(out: Any, prefix_tokens: int) -> torch.Tensor:
    t = out[0] if isinstance(out, (tuple, list)) else out
    if t.ndim == 3:
        return t[:, prefix_tokens:].float().mean(dim=1)
    if t.ndim == 4:
        return t.float().mean(dim=(2, 3))
    if t.ndim == 2:
        return t.float()
    raise EmbedError(f"cannot pool a block output of shape {tuple(t.shape)}")


class TimmEncoder(Encoder):
    """Registry entry ``timm:<model>``."""

    def __init__(
        self,
        model_name: str,
        *,
        channels: int,
        tile_size: int = 256,
        weights: str | Path | None = None,
        allow_random: bool = False,
        device: torch.device = torch.device("cpu"),
        precision: str = "float32",
        seed: int = 0,
    ) -> None:
        if not model_name:
            raise EmbedError("--encoder timm:<model> needs a model name, e.g. timm:vit_small_patch16_224")
        if weights is None and not allow_random:
            raise EmbedError(f"timm:{model_name} needs weights: pass --weights FILE (a local .safetensors/.pt state "
                             "dict; nothing is downloaded); --allow-random-weights gives meaningless embeddings")
        timm = import_timm()
        kwargs: dict[str, Any] = dict(pretrained=False, in_chans=channels, num_classes=0)
        try:
            with torch.random.fork_rng(devices=[]):  # timm initialises with the global generator: seed a copy
                torch.manual_seed(seed)
                try:
                    model = timm.create_model(model_name, img_size=tile_size, **kwargs)
                except TypeError:  # CNNs take no img_size
                    model = timm.create_model(model_name, **kwargs)
        except RuntimeError as exc:
            raise EmbedError(f"timm:{model_name}: {exc} (list names with python -c \"import timm; "
                             f"print(timm.list_models('vit_*'))\")") from None
        self.name = f"timm:{model_name}"
        self.channels = channels
        self.tile_size = tile_size
        self.device = device
        self.precision = precision
        self.module: nn.Module = model
        if weights is not None:
            state = load_state_dict_file(weights)
            state = {k.removeprefix("module."): v for k, v in state.items()}
            state = {k: v for k, v in state.items() if not k.startswith("head.")}  # num_classes=0: no classifier
            load_strict(model, state, what=self.name)
            self.weights_sha256 = weights_sha(weights)
            self.weights_desc = Path(weights).name
        else:
            self.weights_desc = f"random(seed={seed})"
        blocks = getattr(model, "blocks", None)
        self._blocks: list[nn.Module] = list(blocks) if isinstance(blocks, (nn.Sequential, nn.ModuleList)) else []
        self.block_names = tuple(block_name(i + 1) for i in range(len(self._blocks)))
        self._prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self.dim = int(getattr(model, "num_features", 0) or 0)
        model.eval().to(device)
        if not self.dim:
            with torch.inference_mode():
                probe = torch.zeros(1, channels, tile_size, tile_size, dtype=torch.uint8, device=device)
                self.dim = int(model(self_standardize(probe)).shape[-1])

    def _encode(self, x: torch.Tensor, blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for name in blocks:
            module = self._blocks[self.block_names.index(name)]

            def hook(_m: nn.Module, _inp: Any, out: Any, name: str = name) -> None:
                captured[name] = _pool(out, self._prefix)

            handles.append(module.register_forward_hook(hook))
        try:
            use_bf16 = self.precision == "bfloat16"
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                final = self.module(self_standardize(x))
        finally:
            for h in handles:
                h.remove()
        if final.ndim != 2:
            final = _pool(final, self._prefix)
        return {FINAL: final.float(), **captured}

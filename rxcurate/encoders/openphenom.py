"""OpenPhenom: the channel-agnostic MAE ViT-S/16 of "Masked Autoencoders for Microscopy are Scalable Learners of
Cellular Biology" (Kraus et al., CVPR 2024), written from the public description so its published weights load.

Architecture (matching the published checkpoint's parameter names and shapes, under ``encoder.vit_backbone.``):
- input: uint8 -> [0, 1] -> per-channel instance normalisation (no affine);
- channel-agnostic patch embedding: one ``Conv2d(1, 384, 16, stride 16)`` applied to every channel separately,
  tokens ordered channel-major (all 256 patches of channel 1, then channel 2, ...);
- a class token and fixed 2-D sin-cos position embeddings (the same grid code for every channel; the table holds
  ``max_in_chans`` = 11 channel blocks, so up to 11 channels);
- 12 "parallel scaling" blocks (ViT-22B style: one input LayerNorm, one fused projection to MLP hidden + q, k, v
  without qkv bias, q/k LayerNorm, attention and MLP summed, LayerScale), LayerNorm eps 1e-6, exact GELU;
- output (as the public ``predict``): the mean over all patch tokens (class token excluded) after the last block,
  with no final norm (``fc_norm`` is in the checkpoint but only applied by the classification head).

The fused projection reproduces the bias layout the weights were trained with: older timm (the ``maes_microscopy``
code pins timm 0.9.7) added ``cat(zeros(3 * dim), mlp_bias)`` to the ``[mlp | q | k | v]`` projection output, so
the learned ``mlp_bias`` lands on the last part of the MLP hidden units and on q, k, v. Newer timm (>= 1.0.25) adds
it to the MLP hidden units only; that would change the published model's outputs.

Weights: ``--weights model.safetensors`` (the published file is a torch pickle of ``{"state_dict": ...}`` despite
its name; both real safetensors and torch checkpoints are read without executing code). The MAE decoder's keys
(``decoder.*``, ``encoder_decoder_proj.*``, ``decoder_pred.*``) are not needed for embeddings and are dropped; the
encoder then loads with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
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

EMBED_DIM = 384
DEPTH = 12
NUM_HEADS = 6
PATCH = 16
NATIVE_TILE = 256
MAX_IN_CHANS = 11
MLP_RATIO = 4
LN_EPS = 1e-6
DECODER_PREFIXES = ("decoder.", "encoder_decoder_proj.", "decoder_pred.")
RANDOM_LAYERSCALE = 0.1


def sincos_position_table(dim: int, grid: int, modalities: int, scale: float = 10000.0) -> torch.Tensor:
    """``[1, 1 + modalities * grid^2, dim]``: a zero row for the class token, then the 2-D sin-cos code of a
    ``grid x grid`` patch grid (row-major; [sin h, cos h, sin w, cos w] with dim/4 frequencies each) per modality."""
    pos = torch.arange(grid, dtype=torch.float32)
    hh, ww = torch.meshgrid(pos, pos, indexing="ij")
    quarter = dim // 4
    freqs = 1.0 / scale ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    h = hh.reshape(-1, 1) * freqs
    w = ww.reshape(-1, 1) * freqs
    code = torch.cat([h.sin(), h.cos(), w.sin(), w.cos()], dim=1)  # [grid^2, dim]
    table = code.repeat(modalities, 1)
    return torch.cat([torch.zeros(1, dim), table], dim=0).unsqueeze(0)


class _LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _ParallelBlock(nn.Module):
    """Attention and MLP in parallel from one LayerNorm and one fused input projection (no qkv bias)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.hidden = dim * mlp_ratio
        self.in_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.in_proj = nn.Linear(dim, self.hidden + 3 * dim, bias=False)
        self.mlp_bias = nn.Parameter(torch.zeros(self.hidden))
        self.q_norm = nn.LayerNorm(self.head_dim, eps=LN_EPS)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=LN_EPS)
        self.attn_out_proj = nn.Linear(dim, dim)
        self.mlp_out_proj = nn.Linear(self.hidden, dim)
        self.ls = _LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # Legacy bias layout (see module docstring): zeros for the first 3*d outputs, mlp_bias for the rest.
        bias = torch.cat([self.mlp_bias.new_zeros(3 * d), self.mlp_bias])
        y = F.linear(self.in_norm(x), self.in_proj.weight, bias)
        x_mlp, q, k, v = torch.split(y, [self.hidden, d, d, d], dim=-1)
        q = self.q_norm(q.view(b, n, self.heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(k.view(b, n, self.heads, self.head_dim)).transpose(1, 2)
        v = v.view(b, n, self.heads, self.head_dim).transpose(1, 2)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        out = self.attn_out_proj(attn) + self.mlp_out_proj(F.gelu(x_mlp))
        return x + self.ls(out)


class _PatchEmbed(nn.Module):
    """One single-channel patch projection shared by all channels; tokens channel-major."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.proj(x.reshape(b * c, 1, h, w))  # [B*C, D, g, g]
        d = t.shape[1]
        return t.reshape(b, c, d, -1).transpose(2, 3).reshape(b, -1, d)  # [B, C*g*g, D]


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        grid = NATIVE_TILE // PATCH
        self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        self.pos_embed = nn.Parameter(sincos_position_table(EMBED_DIM, grid, MAX_IN_CHANS), requires_grad=False)
        self.patch_embed = _PatchEmbed(EMBED_DIM, PATCH)
        self.blocks = nn.Sequential(*[_ParallelBlock(EMBED_DIM, NUM_HEADS, MLP_RATIO) for _ in range(DEPTH)])
        # Present in the checkpoint (timm's avg-pool head norm) but not used by the published predict().
        self.fc_norm = nn.LayerNorm(EMBED_DIM, eps=LN_EPS)

    def position_index(self, channels: int, grid: int) -> torch.Tensor:
        """Rows of ``pos_embed`` for a ``grid x grid`` tile: the top-left sub-grid of each channel block."""
        native = NATIVE_TILE // PATCH
        rc = (torch.arange(grid).reshape(-1, 1) * native + torch.arange(grid)).reshape(-1)
        per_channel = [1 + c * native * native + rc for c in range(channels)]
        return torch.cat([torch.zeros(1, dtype=torch.long), *per_channel])

    def forward(self, x: torch.Tensor, want: set[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Normalised images -> (final pooled output, {block index (0-based): pooled tokens})."""
        c, grid = x.shape[1], x.shape[2] // PATCH
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1).to(t.dtype), t], dim=1)
        idx = self.position_index(c, grid).to(x.device)
        t = t + self.pos_embed[:, idx].to(t.dtype)
        pooled: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in want:
                pooled[i] = t[:, 1:].float().mean(dim=1)
        return t[:, 1:].float().mean(dim=1), pooled


class _MAEEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vit_backbone = _Backbone()


class OpenPhenomNet(nn.Module):
    """The encoder half of the OpenPhenom MAE; state dict keys ``encoder.vit_backbone.*``."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _MAEEncoder()

    def forward(self, x: torch.Tensor, want: set[int] | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        return self.encoder.vit_backbone(x, want or set())


def random_init_(net: OpenPhenomNet, seed: int) -> None:
    """Deterministic random weights for tests (position table kept; LayerScale 0.1 so blocks differ visibly)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(net.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("pos_embed"):
                continue
            if name.endswith("ls.gamma"):
                p.fill_(RANDOM_LAYERSCALE)
            elif "norm" in name.split(".")[-2]:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


class OpenPhenomEncoder(Encoder):
    """Registry entry ``openphenom``: 384-d mean patch-token embedding of 256x256 (or smaller, multiple of 16) tiles."""

    def __init__(
        self,
        *,
        channels: int | None = None,
        tile_size: int = NATIVE_TILE,
        weights: str | Path | None = None,
        allow_random: bool = False,
        device: torch.device = torch.device("cpu"),
        precision: str = "float32",
        seed: int = 0,
    ) -> None:
        if tile_size % PATCH or not PATCH <= tile_size <= NATIVE_TILE:
            raise EmbedError(f"--tile {tile_size}: openphenom needs a multiple of {PATCH} up to {NATIVE_TILE} "
                             f"(its native tile is {NATIVE_TILE})")
        if channels is not None and not 1 <= channels <= MAX_IN_CHANS:
            raise EmbedError(f"openphenom supports 1..{MAX_IN_CHANS} channels, the screen has {channels}")
        self.name = "openphenom"
        self.channels = None  # channel-agnostic
        self.tile_size = tile_size
        self.dim = EMBED_DIM
        self.block_names = tuple(block_name(i + 1) for i in range(DEPTH))
        self.device = device
        self.precision = precision
        self.module = OpenPhenomNet()
        if weights is not None:
            state = load_state_dict_file(weights)
            state = {k: v for k, v in state.items() if not k.startswith(DECODER_PREFIXES)}
            load_strict(self.module, state, what="OpenPhenom encoder",
                        hint="Expected an OpenPhenom MAE checkpoint with keys like "
                             "encoder.vit_backbone.blocks.0.in_proj.weight")
            self.weights_sha256 = weights_sha(weights)
            self.weights_desc = Path(weights).name
        elif allow_random:
            random_init_(self.module, seed)
            self.weights_desc = f"random(seed={seed})"
        else:
            raise EmbedError("openphenom needs its weights: pass --weights model.safetensors (the file published "
                             "with OpenPhenom); --allow-random-weights gives meaningless embeddings, for tests only")
        self.module.eval().to(device)

    def _encode(self, x: torch.Tensor, blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        want = {self.block_names.index(b) for b in blocks}
        z = self_standardize(x)
        use_bf16 = self.precision == "bfloat16"
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            final, pooled = self.module(z, want)
        out = {FINAL: final}
        out.update({self.block_names[i]: v for i, v in pooled.items()})
        return out

    def flops_per_tile(self, channels: int) -> float:
        grid = self.tile_size // PATCH
        tokens = 1 + channels * grid * grid
        d, hidden = EMBED_DIM, EMBED_DIM * MLP_RATIO
        per_block = 2 * tokens * d * (hidden + 3 * d) + 2 * tokens * d * d + 2 * tokens * hidden * d
        per_block += 2 * 2 * tokens * tokens * d  # q @ k^T and attn @ v
        patch = 2 * channels * grid * grid * d * PATCH * PATCH
        return float(DEPTH * per_block + patch)

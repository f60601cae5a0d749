"""``baseline``: a deterministic, weight-free featuriser of cell-painting tiles (torch, fast on CPU).

Per channel (22 features), on intensities scaled to [0, 1]:
- intensity: mean, std and the 5/25/50/75/95/99 % quantiles (exact, from the uint8 histogram);
- objects: Otsu threshold, foreground fraction, foreground and background mean, density of bright blobs (local
  3x3 maxima above the threshold of the Gaussian-smoothed image at half resolution, per 10,000 px of the tile) and
  foreground pixels per blob (log);
- texture: RMS gradient (forward differences) and RMS of the fine residual (image minus its Gaussian-smoothed
  version, sigma 1.5 px);
- frequency: RMS amplitude in six radial bands of the spectrum (cycles/px edges 1/64, 1/32, 1/16, 1/8, 1/4);
plus the Pearson correlation of every channel pair. Most features scale linearly with a channel's gain, so batch
effects stay (close to) affine and downstream centre-scaling/TVN can remove them.

One FFT per image serves the texture, frequency and smoothing features: texture and band energies are weighted
sums of the power spectrum (Parseval; periodic boundary), and the smoothed half-resolution image is the inverse
transform of the Gaussian-filtered low-frequency quarter of the spectrum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from rxcurate.encoders.base import FINAL, Encoder
from rxcurate.errors import EmbedError

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BAND_EDGES = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4)
SMOOTH_SIGMA = 1.5
PEAK_WINDOW = 3  # at half resolution
CHUNK = 16  # tiles per internal step (bounds memory)
PER_CHANNEL = [
    "mean", "std", *[f"q{int(q * 100):02d}" for q in QUANTILES],
    "otsu", "fg_frac", "fg_mean", "bg_mean", "blob_density", "log_px_per_blob",
    "grad_rms", "fine_rms", *[f"band{i}" for i in range(len(BAND_EDGES) + 1)],
]


def feature_names(channels: int) -> list[str]:
    names = [f"ch{c + 1}_{f}" for c in range(channels) for f in PER_CHANNEL]
    names += [f"corr_ch{i + 1}_ch{j + 1}" for i in range(channels) for j in range(i + 1, channels)]
    return names


def _max_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Separable ``size x size`` max filter of [M, H, W] (edges padded with -inf)."""
    r = size // 2
    h, w = x.shape[-2:]
    p = F.pad(x, (r, r, 0, 0), value=float("-inf"))
    out = p[..., :, 0:w]
    for i in range(1, size):
        out = torch.maximum(out, p[..., :, i : i + w])
    p = F.pad(out, (0, 0, r, r), value=float("-inf"))
    out = p[..., 0:h, :]
    for i in range(1, size):
        out = torch.maximum(out, p[..., i : i + h, :])
    return out


def _histogram_features(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [M, P] -> (features [M, 12], Otsu threshold in [0, 1] [M])."""
    m = x.shape[0]
    ones = torch.ones(1, 1, device=x.device).expand(m, x.shape[1])
    hist = torch.zeros(m, 256, device=x.device).scatter_add_(1, x.long(), ones).double()  # exact counts < 2^24
    p = hist / hist.sum(dim=1, keepdim=True)
    v = torch.arange(256, device=x.device, dtype=torch.float64) / 255.0
    mean = (p * v).sum(1)
    std = ((p * v * v).sum(1) - mean**2).clamp_min(0).sqrt()
    cdf = p.cumsum(1)
    qs = [(cdf < q - 1e-12).sum(1).clamp(max=255).double() / 255.0 for q in QUANTILES]
    # Otsu: maximise between-class variance over thresholds t (foreground = value > t); first maximum wins.
    mu = (p * v).cumsum(1)
    omega = cdf
    between = (mean.unsqueeze(1) * omega - mu) ** 2 / (omega * (1 - omega)).clamp_min(1e-12)
    between = torch.where((omega > 0) & (omega < 1), between, torch.zeros_like(between))
    k = between.argmax(1)
    w_bg = omega.gather(1, k.unsqueeze(1)).squeeze(1)
    mu_bg = mu.gather(1, k.unsqueeze(1)).squeeze(1)
    fg_frac = 1 - w_bg
    fg_mean = torch.where(fg_frac > 0, (mean - mu_bg) / fg_frac.clamp_min(1e-12), mean)
    bg_mean = torch.where(w_bg > 0, mu_bg / w_bg.clamp_min(1e-12), mean)
    thr = k.double() / 255.0
    feats = torch.stack([mean, std, *qs, thr, fg_frac, fg_mean, bg_mean], dim=1)
    return feats.float(), thr.float()


class BaselineEncoder(Encoder):
    """Registry entry ``baseline`` (any channel count, any even tile size >= 8)."""

    def __init__(self, *, channels: int, tile_size: int = 256, device: torch.device = torch.device("cpu")) -> None:
        if tile_size % 2:
            raise EmbedError(f"--tile {tile_size}: the baseline encoder needs an even tile size (e.g. 256)")
        self.name = "baseline"
        self.channels = channels
        self.tile_size = tile_size
        self.dim = len(PER_CHANNEL) * channels + channels * (channels - 1) // 2
        self.device = device
        self.weights_desc = "none (weight-free)"
        n = tile_size
        fy = torch.fft.fftfreq(n, dtype=torch.float64).unsqueeze(1)
        fx = torch.fft.rfftfreq(n, dtype=torch.float64).unsqueeze(0)
        radius = torch.sqrt(fy**2 + fx**2)
        gauss = torch.exp(-2 * math.pi**2 * SMOOTH_SIGMA**2 * radius**2)  # transfer function of the smoothing
        # each rfft column stands for itself and its mirror, except the DC and Nyquist columns
        mult = torch.full((1, fx.shape[1]), 2.0, dtype=torch.float64)
        mult[0, 0] = 1.0
        mult[0, -1] = 1.0
        band = torch.bucketize(radius, torch.tensor(BAND_EDGES, dtype=torch.float64)).expand(n, -1)
        dc = torch.zeros_like(radius, dtype=torch.bool).expand(n, -1).clone()
        dc[0, 0] = True
        cols = []
        norm = float(n * n) ** 2  # Parseval: mean |r|^2 = sum_k |R_k|^2 / N^2 with N = n*n pixels
        for b in range(len(BAND_EDGES) + 1):  # mean power per (full-spectrum) bin of the band, per pixel
            sel = ((band == b) & ~dc).double() * mult
            cols.append(sel / (sel.sum().clamp_min(1.0) * n * n))
        grad = 4 * torch.sin(math.pi * fy) ** 2 + 4 * torch.sin(math.pi * fx) ** 2
        cols.append(grad.expand(n, -1) * mult / norm)
        cols.append(((1 - gauss) ** 2).expand(n, -1) * mult / norm)
        self._spectral = torch.stack([c.reshape(-1) for c in cols], 1).float().to(device)  # [n*(n/2+1), 8]
        half = n // 2
        top, bottom = (half + 1) // 2, half // 2
        rows = torch.cat([torch.arange(top), torch.arange(n - bottom, n)])
        self._low_rows = rows.to(device)
        self._low_cols = half // 2 + 1
        self._low_gain = (gauss[rows, : self._low_cols] / 4.0).float().to(device)  # /4: irfft of a 4x smaller grid

    def _encode(self, x: torch.Tensor, blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        parts = [self._features(x[i : i + CHUNK]) for i in range(0, x.shape[0], CHUNK)]
        return {FINAL: torch.cat(parts)}

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        m = n * c
        hist_feats, thr = _histogram_features(x.reshape(m, h * w))
        xf = x.reshape(m, h, w).float() / 255.0

        spec = torch.fft.rfft2(xf)
        power = (spec.real.square() + spec.imag.square()).reshape(m, -1)
        spectral = (power @ self._spectral).clamp_min(0).sqrt()  # [m, 8]: 6 bands, gradient, fine residual
        bands, grad, fine = spectral[:, :6], spectral[:, 6], spectral[:, 7]

        # objects: bright local maxima of the smoothed image at half resolution
        low = spec[:, self._low_rows, : self._low_cols] * self._low_gain
        smooth = torch.fft.irfft2(low, s=(h // 2, w // 2))
        peaks = (smooth == _max_filter(smooth, PEAK_WINDOW)) & (smooth > thr.reshape(m, 1, 1))
        n_peaks = peaks.reshape(m, -1).sum(1).float()
        blob_density = n_peaks / (h * w) * 1e4
        fg_px = hist_feats[:, 9] * (h * w)
        px_per_blob = torch.log1p(fg_px / n_peaks.clamp_min(1.0))

        per_channel = torch.cat(
            [hist_feats, blob_density[:, None], px_per_blob[:, None], grad[:, None], fine[:, None], bands], 1
        ).reshape(n, c * len(PER_CHANNEL))

        # cross-channel correlations
        flat = xf.reshape(n, c, h * w)
        z = flat - flat.mean(2, keepdim=True)
        norm = z.square().sum(2).sqrt()
        corr = (z @ z.transpose(1, 2)) / (norm.unsqueeze(2) * norm.unsqueeze(1)).clamp_min(1e-12)
        iu = torch.triu_indices(c, c, offset=1, device=x.device)
        return torch.cat([per_channel, corr[:, iu[0], iu[1]]], 1)

"""Render a well's phenotype into six-channel microscopy-like images (pure compute).

Cells are Gaussian blobs placed at random positions: the phenotype sets how many there are, their size,
each channel's brightness and each channel's texture (high-frequency modulation inside cells). Nuisances are
applied on top: channel gain/offset (batch effects), an illumination gradient and read/shot noise.
Channel 1 is the nucleus stain (small blobs); channels 2-6 are cytoplasmic/organelle stains (larger blobs).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

# Per-channel peak brightness and background in a 16-bit range.
PEAK = np.array([9000.0, 6000.0, 7000.0, 5000.0, 6500.0, 4000.0])
BACKGROUND = np.array([400.0, 350.0, 380.0, 300.0, 360.0, 320.0])
READ_NOISE = 25.0
SIZE_FACTOR = np.array([0.55, 1.0, 1.1, 1.25, 0.9, 1.4])  # blob size relative to the cell size, per channel


def render_site(
    phenotype: np.ndarray,
    gain: np.ndarray,
    offset: np.ndarray,
    illum: np.ndarray,
    *,
    size: int,
    cells: int,
    sigma: float,
    rng: np.random.Generator,
    bits: int = 16,
) -> np.ndarray:
    """Return ``uint16`` (bits=16) or ``uint8`` (bits=8) images of shape [6, size, size]."""
    ph = np.clip(phenotype, -3.0, 3.0)
    n_cells = max(3, int(round(cells * np.exp(0.45 * ph[0]))))
    cell_sigma = sigma * float(np.exp(0.22 * ph[1]))
    ys = rng.uniform(0, size, size=n_cells)
    xs = rng.uniform(0, size, size=n_cells)
    amp = np.exp(rng.normal(scale=0.2, size=n_cells))
    iy = np.clip(ys.astype(np.int64), 0, size - 1)
    ix = np.clip(xs.astype(np.int64), 0, size - 1)
    impulses = np.zeros((size, size), dtype=np.float32)
    np.add.at(impulses, (iy, ix), amp.astype(np.float32))
    # one high-frequency texture field per well, mixed per channel
    hf = gaussian_filter(rng.normal(size=(size, size)).astype(np.float32), sigma=max(0.7, sigma / 4.0))
    hf /= float(hf.std()) + 1e-6
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    field = 1.0 + illum[0] * (illum[1] * xx + illum[2] * yy) * 2.0

    out = np.empty((6, size, size), dtype=np.float32)
    for c in range(6):
        s = cell_sigma * SIZE_FACTOR[c]
        blob = gaussian_filter(impulses, sigma=s, truncate=3.0) * (2.0 * np.pi * s * s)
        tex = min(0.9, 0.25 * float(np.exp(0.8 * ph[8 + c])))
        blob *= np.clip(1.0 + tex * hf, 0.0, None)
        signal = PEAK[c] * float(np.exp(0.6 * ph[2 + c])) * blob
        img = (BACKGROUND[c] * (1.0 + offset[c]) + signal) * gain[c] * field
        img += rng.normal(scale=1.0, size=img.shape).astype(np.float32) * np.sqrt(READ_NOISE**2 + 0.5 * np.abs(img))
        out[c] = img
    if bits == 16:
        return np.clip(np.rint(out), 0, 65535).astype(np.uint16)
    return np.clip(np.rint(out / 64.0), 0, 255).astype(np.uint8)

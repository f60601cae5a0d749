"""Image transform of the compress stage, as pure functions: crop, 16/8-bit -> 8-bit conversion, encode, decode.

Conversion methods (``transform.convert``):

- ``percentile`` (per image): ``lo, hi = percentile(crop, [low, high])`` (numpy's linear interpolation), then
  ``round((x - lo) * 255 / (hi - lo))`` clipped to 0..255; a flat image (hi == lo) becomes 0.
- ``window`` (fixed, per channel): the same scaling with fixed ``lo, hi`` for the image's channel. Keeps
  intensities comparable across wells and plates.
- ``shift``: ``x >> shift`` clipped to 255 (``shift: 8`` keeps the top byte of 16-bit data).
- ``none``: the source must already be uint8.

Rounding is round-half-to-even (``numpy.rint``) in float32. Codecs:

- ``jpeg2000`` (default): OpenJPEG through Pillow, JP2 container, 9/7 irreversible wavelet, one quality layer, LRCP.
  ``rate`` is OpenJPEG's fixed compression ratio (bytes <= h*w/rate; 512x512 at 20 -> 12.8 KiB, as RxRx3-core),
  ``psnr`` a fixed quality in dB (variable size), ``lossless`` the reversible 5/3 wavelet. Pillow is used because
  ``imagecodecs.jpeg2k_encode`` exposes only the fixed-quality (PSNR) mode, not a fixed rate. Resolution levels are
  capped so the coarsest level keeps at least one pixel on the image's short side.
- ``htj2k``: High-Throughput JPEG 2000 (OpenJPH via imagecodecs, J2K codestream), ``qstep`` or ``lossless``.

Every image is decoded with OpenJPEG (``imagecodecs.jpeg2k_decode``), the decoder Pillow and ``datasets`` use,
so the compression report measures what users get.
"""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
from PIL import Image

from rxcurate.errors import ManifestError
from rxcurate.manifest import Codec, Convert, Crop, Manifest

__all__ = ["crop_image", "to_uint8", "encode", "decode", "psnr", "max_abs_error", "transform_image",
           "check_crop_fits"]


def crop_image(img: np.ndarray, crop: Crop | None) -> np.ndarray:
    """Centre (or ``origin``) crop; raise ValueError when the crop does not fit."""
    if crop is None:
        return img
    h, w = img.shape
    if crop.origin is None:
        y0, x0 = (h - crop.height) // 2, (w - crop.width) // 2
    else:
        y0, x0 = crop.origin
    if y0 < 0 or x0 < 0 or y0 + crop.height > h or x0 + crop.width > w:
        raise ValueError(f"a {crop.height}x{crop.width} crop at row {y0}, column {x0} does not fit a {h}x{w} image")
    return img[y0 : y0 + crop.height, x0 : x0 + crop.width]


def _scale(img: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, int, int]:
    n_low = int(np.count_nonzero(img < lo))
    n_high = int(np.count_nonzero(img > hi))
    if hi <= lo:
        return np.zeros(img.shape, dtype=np.uint8), n_low, n_high
    x = img.astype(np.float32)
    x -= np.float32(lo)
    x *= np.float32(255.0 / (hi - lo))
    np.rint(x, out=x)
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8), n_low, n_high


def to_uint8(img: np.ndarray, convert: Convert, channel: int) -> tuple[np.ndarray, int, int]:
    """Convert to uint8; return (image, pixels clipped low, pixels clipped high)."""
    if convert.method == "none":
        if img.dtype != np.uint8:
            raise ValueError(f"convert method 'none' needs 8-bit images, got {img.dtype}")
        return np.ascontiguousarray(img), 0, 0
    if convert.method == "shift":
        x = img >> convert.shift if convert.shift else img
        n_high = int(np.count_nonzero(x > 255))
        return np.minimum(x, 255).astype(np.uint8), 0, n_high
    if convert.method == "percentile":
        lo, hi = np.percentile(img, [convert.low[0], convert.high[0]])
        return _scale(img, float(lo), float(hi))
    if convert.method == "window":
        return _scale(img, convert.low[channel - 1], convert.high[channel - 1])
    raise ValueError(f"unknown convert method {convert.method!r}")


def _resolutions(codec: Codec, shape: tuple[int, ...]) -> int:
    side = min(shape[0], shape[1])
    return max(1, min(codec.resolutions, side.bit_length()))


def encode(img8: np.ndarray, codec: Codec) -> bytes:
    """Encode one 2-D uint8 image; deterministic for a given library version."""
    if codec.name == "jpeg2000":
        buf = io.BytesIO()
        opts: dict = {"num_resolutions": _resolutions(codec, img8.shape)}
        if codec.mode == "lossless":
            opts["irreversible"] = False
        else:
            opts.update(irreversible=True, quality_mode="rates" if codec.mode == "rate" else "dB",
                        quality_layers=[float(codec.value or 0)])
        Image.fromarray(img8).save(buf, format="JPEG2000", **opts)
        return buf.getvalue()
    if codec.name == "htj2k":
        if codec.mode == "lossless":
            return bytes(imagecodecs.htj2k_encode(img8, reversible=True))
        return bytes(imagecodecs.htj2k_encode(img8, level=float(codec.value or 0)))
    raise ValueError(f"unknown codec {codec.name!r}")


def decode(data: bytes) -> np.ndarray:
    """Decode JPEG 2000 (JP2 or J2K, incl. HTJ2K) with OpenJPEG, as Pillow does."""
    return imagecodecs.jpeg2k_decode(data)


def psnr(ref: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB for 8-bit images; ``inf`` when identical."""
    diff = ref.astype(np.float64) - test.astype(np.float64)
    mse = float(np.mean(diff * diff))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 * 255.0 / mse))


def max_abs_error(ref: np.ndarray, test: np.ndarray) -> int:
    return int(np.max(np.abs(ref.astype(np.int16) - test.astype(np.int16))))


def transform_image(img: np.ndarray, crop: Crop | None, convert: Convert, codec: Codec,
                    channel: int) -> tuple[bytes, np.ndarray, int, int]:
    """Crop, convert and encode one image: (encoded bytes, the uncompressed 8-bit crop, clipped low, clipped high)."""
    img8, n_low, n_high = to_uint8(crop_image(img, crop), convert, channel)
    return encode(img8, codec), img8, n_low, n_high


def check_crop_fits(manifest: Manifest, image_shape: list[int] | tuple[int, int]) -> None:
    """The manifest's ``transform.crop`` fits images of ``image_shape`` (h, w); a ManifestError naming a size that
    does (select checks the source images, compress the lockfile's recorded shape)."""
    crop = manifest.transform.crop
    if crop is None:
        return
    h, w = image_shape
    oy, ox = crop.origin if crop.origin is not None else ((h - crop.height) // 2, (w - crop.width) // 2)
    if crop.height > h or crop.width > w or oy + crop.height > h or ox + crop.width > w:
        raise ManifestError(f"{manifest.path}: transform.crop {crop.to_dict()} does not fit the source images "
                            f"({w}x{h}): use a size <= {min(h, w)} (e.g. crop: {{size: {min(h, w, 512)}}})")

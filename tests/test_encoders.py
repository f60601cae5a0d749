"""Encoders: registry, baseline features, the OpenPhenom architecture (reference outputs, strict weights), timm."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from rxcurate.encoders import FINAL, encoder_dirname, get_encoder, list_encoders, resolve_blocks
from rxcurate.encoders.baseline import PER_CHANNEL, feature_names
from rxcurate.encoders.openphenom import OpenPhenomNet, sincos_position_table
from rxcurate.errors import EmbedError


def _tiles(n: int, c: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, size=(n, c, t, t), dtype=np.uint8))


# ------------------------------------------------------------------------------------------------------ registry


def test_registry_lists_and_rejects_unknown():
    assert {"baseline", "openphenom", "timm:<model>"} <= set(list_encoders())
    with pytest.raises(EmbedError, match="valid: baseline, openphenom, timm"):
        get_encoder("resnet", channels=6)
    assert encoder_dirname("timm:vit_small_patch16_224") == "timm-vit_small_patch16_224"


def test_device_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(EmbedError, match="--device cpu"):
        get_encoder("baseline", channels=6, device="cuda")
    assert get_encoder("baseline", channels=6, device="auto").device.type == "cpu"


def test_encode_validates_input():
    enc = get_encoder("baseline", channels=6, tile_size=32)
    with pytest.raises(EmbedError, match="uint8"):
        enc.encode(_tiles(2, 6, 32).float())
    with pytest.raises(EmbedError, match="6 channels"):
        enc.encode(_tiles(2, 5, 32))
    with pytest.raises(EmbedError, match="--tile"):
        enc.encode(_tiles(2, 6, 16))
    with pytest.raises(EmbedError, match="even tile size"):
        get_encoder("baseline", channels=6, tile_size=33)


def test_baseline_spectral_features_equal_their_pixel_definitions():
    """Texture features computed from the spectrum equal the direct (periodic-boundary) pixel computations."""
    import math

    names = feature_names(1)
    x = _tiles(3, 1, 64, seed=4)
    f = get_encoder("baseline", channels=1, tile_size=64).encode(x)[FINAL]
    xf = x[:, 0].double() / 255
    dx, dy = torch.roll(xf, -1, 2) - xf, torch.roll(xf, -1, 1) - xf
    grad = (dx.square().mean((1, 2)) + dy.square().mean((1, 2))).sqrt()
    fy, fx = torch.fft.fftfreq(64).unsqueeze(1), torch.fft.rfftfreq(64).unsqueeze(0)
    smooth = torch.fft.irfft2(torch.fft.rfft2(xf) * torch.exp(-2 * math.pi**2 * 1.5**2 * (fy**2 + fx**2)), s=(64, 64))
    fine = (xf - smooth).square().mean((1, 2)).sqrt()
    torch.testing.assert_close(f[:, names.index("ch1_grad_rms")].double(), grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(f[:, names.index("ch1_fine_rms")].double(), fine, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(f[:, names.index("ch1_mean")].double(), xf.mean((1, 2)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f[:, names.index("ch1_q50")].double(), xf.flatten(1).quantile(0.5, 1,
                                                                                          interpolation="lower"))


def test_resolve_blocks():
    enc = get_encoder("openphenom", channels=6, tile_size=32, allow_random=True)
    assert resolve_blocks(enc, "3,6,last") == ["block03", "block06", "block12"]
    assert resolve_blocks(enc, "last,3,block03") == ["block03", "block12"]
    assert resolve_blocks(enc, "all") == [f"block{i:02d}" for i in range(1, 13)]
    assert resolve_blocks(enc, None) == []
    with pytest.raises(EmbedError, match="1..12"):
        resolve_blocks(enc, "13")
    with pytest.raises(EmbedError, match="no transformer blocks"):
        resolve_blocks(get_encoder("baseline", channels=6, tile_size=32), "last")


# ------------------------------------------------------------------------------------------------------ baseline


def test_baseline_shape_names_and_determinism():
    enc = get_encoder("baseline", channels=6, tile_size=32)
    x = _tiles(5, 6, 32)
    a = enc.encode(x)[FINAL]
    assert a.shape == (5, enc.dim) and a.dtype == torch.float32
    assert enc.dim == len(feature_names(6)) == 6 * len(PER_CHANNEL) + 15
    assert torch.isfinite(a).all()
    assert torch.equal(a, enc.encode(x)[FINAL])
    # a tile's features do not depend on the rest of its batch
    single = torch.cat([enc.encode(x[i : i + 1])[FINAL] for i in range(5)])
    torch.testing.assert_close(single, a, rtol=1e-5, atol=1e-6)
    # any channel count; constant images stay finite
    flat = torch.full((2, 3, 32, 32), 7, dtype=torch.uint8)
    out = get_encoder("baseline", channels=3, tile_size=32).encode(flat)[FINAL]
    assert out.shape == (2, 3 * len(PER_CHANNEL) + 3) and torch.isfinite(out).all()


def test_baseline_exposes_planted_phenotypes():
    """Cell count, a channel's brightness and a channel's texture, rendered as in the synthetic screens, move the
    matching baseline features far beyond their spread within a group (under random per-image channel gains)."""
    from rxcurate.synth.render import render_site

    rng = np.random.default_rng(0)
    names = feature_names(6)

    def render(ph: np.ndarray, n: int) -> torch.Tensor:
        out = []
        for _ in range(n):
            gain = np.exp(rng.normal(scale=0.05, size=6))
            img = render_site(ph, gain, np.zeros(6), np.array([0.0, 0.0, 0.0]), size=128, cells=25, sigma=2.5,
                              rng=rng, bits=16)
            out.append(np.clip(img / 40.0, 0, 255).astype(np.uint8))
        return torch.from_numpy(np.stack(out))

    enc = get_encoder("baseline", channels=6, tile_size=128)
    base = np.zeros(14)
    control = enc.encode(render(base, 8))[FINAL].numpy()

    def separation(ph: np.ndarray, feature: str) -> float:
        j = names.index(feature)
        treated = enc.encode(render(ph, 8))[FINAL].numpy()[:, j]
        pooled = np.sqrt((control[:, j].var(ddof=1) + treated.var(ddof=1)) / 2) + 1e-12
        return abs(treated.mean() - control[:, j].mean()) / pooled

    more_cells = base.copy()
    more_cells[0] = 2.0
    brighter = base.copy()
    brighter[2 + 3] = 1.5  # channel 4 intensity
    textured = base.copy()
    textured[8 + 1] = 1.5  # channel 2 texture
    assert separation(more_cells, "ch1_blob_density") > 3
    assert separation(brighter, "ch4_mean") > 3
    assert separation(textured, "ch2_fine_rms") > 3


# ----------------------------------------------------------------------------------------------------- openphenom

# Outputs of the reference implementation (timm 0.9.7 ViT + recursionpharma/maes_microscopy's channel-agnostic
# patch embedding and sin-cos positions, the public predict(): mean of the non-class tokens of forward_features)
# for the weights random_init_(seed=0) and the input below; computed once outside this repository.
REFERENCE_FINAL = [0.074863, 0.035819, -0.056493, 0.056596, 0.112353, 0.188271, 0.250639, 0.057964]
REFERENCE_BLOCK06 = [0.091766, 0.068786, 0.014125, 0.051348, 0.136742, 0.183954, 0.206874, 0.045384]
REFERENCE_FINAL_NORM = 12.274229


def test_openphenom_matches_reference_outputs():
    enc = get_encoder("openphenom", channels=3, tile_size=256, allow_random=True, seed=0)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(1, 3, 256, 256), dtype=np.uint8))
    out = enc.encode(x, ["block06"])
    assert out[FINAL].shape == (1, 384)
    np.testing.assert_allclose(out[FINAL][0, :8].numpy(), REFERENCE_FINAL, atol=2e-5)
    np.testing.assert_allclose(out["block06"][0, :8].numpy(), REFERENCE_BLOCK06, atol=2e-5)
    assert abs(float(out[FINAL].norm()) - REFERENCE_FINAL_NORM) < 1e-3


def test_openphenom_parameter_names_and_shapes():
    sd = OpenPhenomNet().state_dict()
    assert sum(v.numel() for v in sd.values()) == 22_459_776
    p = "encoder.vit_backbone."
    assert tuple(sd[p + "pos_embed"].shape) == (1, 1 + 11 * 256, 384)
    assert tuple(sd[p + "patch_embed.proj.weight"].shape) == (384, 1, 16, 16)
    assert tuple(sd[p + "blocks.11.in_proj.weight"].shape) == (4 * 384 + 3 * 384, 384)
    assert tuple(sd[p + "blocks.0.mlp_bias"].shape) == (1536,)
    assert tuple(sd[p + "blocks.0.q_norm.weight"].shape) == (64,)
    assert p + "blocks.0.ls.gamma" in sd and p + "fc_norm.weight" in sd and p + "norm.weight" not in sd
    table = sincos_position_table(384, 16, 11)
    assert torch.equal(table[0, 0], torch.zeros(384))
    assert torch.equal(table[0, 1:257], table[0, 257:513])  # same code for every channel


def test_openphenom_refuses_without_weights_and_checks_tile():
    with pytest.raises(EmbedError, match="--weights model.safetensors"):
        get_encoder("openphenom", channels=6)
    with pytest.raises(EmbedError, match="multiple of 16"):
        get_encoder("openphenom", channels=6, tile_size=40, allow_random=True)
    with pytest.raises(EmbedError, match="1..11 channels"):
        get_encoder("openphenom", channels=12, tile_size=32, allow_random=True)


def test_openphenom_random_init_is_seeded_and_channel_agnostic():
    a = get_encoder("openphenom", channels=6, tile_size=32, allow_random=True, seed=0)
    b = get_encoder("openphenom", channels=6, tile_size=32, allow_random=True, seed=0)
    c = get_encoder("openphenom", channels=6, tile_size=32, allow_random=True, seed=1)
    x = _tiles(3, 6, 32)
    assert torch.equal(a.encode(x)[FINAL], b.encode(x)[FINAL])
    assert not torch.allclose(a.encode(x)[FINAL], c.encode(x)[FINAL])
    assert a.channels is None and a.encode(_tiles(2, 3, 32))[FINAL].shape == (2, 384)
    out = a.encode(x, ["block01", "block12"])
    assert set(out) == {FINAL, "block01", "block12"}
    torch.testing.assert_close(out["block12"], out[FINAL], rtol=0, atol=0)
    assert not torch.allclose(out["block01"], out["block12"])
    with pytest.raises(EmbedError, match="no block"):
        a.encode(x, ["block13"])


def test_openphenom_bf16_autocast_path_runs_and_agrees():
    """The CUDA path's bf16 autocast, exercised with CPU autocast: float32 outputs close to the float32 model."""
    x = _tiles(3, 6, 32)
    fp32 = get_encoder("openphenom", channels=6, tile_size=32, allow_random=True, precision="float32")
    bf16 = get_encoder("openphenom", channels=6, tile_size=32, allow_random=True, precision="bfloat16")
    a, b = fp32.encode(x, ["block06"]), bf16.encode(x, ["block06"])
    assert bf16.precision == "bfloat16" and b[FINAL].dtype == torch.float32 and b["block06"].dtype == torch.float32
    assert not torch.equal(a[FINAL], b[FINAL])  # autocast really ran in bf16
    for key in (FINAL, "block06"):
        cos = torch.nn.functional.cosine_similarity(a[key], b[key])
        assert (cos > 0.99).all(), cos
    assert get_encoder("openphenom", channels=6, tile_size=32, allow_random=True).precision == "float32"  # auto, CPU


def test_openphenom_flops():
    enc = get_encoder("openphenom", channels=6, tile_size=32, allow_random=True)
    enc256 = get_encoder("openphenom", channels=6, tile_size=256, allow_random=True)
    tokens = 1 + 6 * 256
    expected = 12 * (24 * tokens * 384**2 + 4 * tokens**2 * 384) + 2 * 6 * 256 * 384 * 256
    assert enc256.flops_per_tile(6) == pytest.approx(expected)
    assert enc.flops_per_tile(6) < enc256.flops_per_tile(6) / 50


def test_openphenom_strict_round_trip_and_published_format(tmp_path):
    src = get_encoder("openphenom", channels=6, tile_size=32, allow_random=True, seed=3)
    sd = src.module.state_dict()
    x = _tiles(2, 6, 32)
    want = src.encode(x)[FINAL]

    st = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    loaded = get_encoder("openphenom", channels=6, tile_size=32, weights=st)
    assert torch.equal(loaded.encode(x)[FINAL], want)
    assert loaded.weights_sha256 and len(loaded.weights_sha256) == 64 and loaded.weights_desc == st.name

    # The published OpenPhenom file: a torch pickle {"state_dict": ...} named model.safetensors, with the decoder.
    full = dict(sd)
    full["decoder.mask_token"] = torch.zeros(1, 1, 512)
    full["encoder_decoder_proj.weight"] = torch.zeros(512, 384)
    full["decoder_pred.bias"] = torch.zeros(256)
    published = tmp_path / "model.safetensors"
    torch.save({"state_dict": full}, published)
    loaded2 = get_encoder("openphenom", channels=6, tile_size=32, weights=published)
    assert torch.equal(loaded2.encode(x)[FINAL], want)


def test_openphenom_rejects_mismatched_weights(tmp_path):
    sd = get_encoder("openphenom", channels=6, tile_size=32, allow_random=True).module.state_dict()
    bad = dict(sd)
    bad.pop("encoder.vit_backbone.blocks.3.q_norm.weight")
    bad["encoder.vit_backbone.head.weight"] = torch.zeros(10, 384)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in bad.items()}, str(path))
    with pytest.raises(EmbedError) as err:
        get_encoder("openphenom", channels=6, weights=path)
    msg = str(err.value)
    assert "missing keys: encoder.vit_backbone.blocks.3.q_norm.weight" in msg
    assert "unexpected keys: encoder.vit_backbone.head.weight" in msg

    shaped = dict(sd)
    shaped["encoder.vit_backbone.cls_token"] = torch.zeros(1, 1, 768)
    save_file({k: v.contiguous() for k, v in shaped.items()}, str(path))
    with pytest.raises(EmbedError, match=r"cls_token: file \(1, 1, 768\) vs model \(1, 1, 384\)"):
        get_encoder("openphenom", channels=6, weights=path)

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EmbedError, match="cannot read"):
        get_encoder("openphenom", channels=6, weights=tmp_path / "junk.pt")
    with pytest.raises(EmbedError, match="does not exist"):
        get_encoder("openphenom", channels=6, weights=tmp_path / "absent.safetensors")


# ----------------------------------------------------------------------------------------------------------- timm

TIMM_IMPORTABLE = importlib.util.find_spec("timm") is not None


@pytest.mark.skipif(TIMM_IMPORTABLE, reason="timm is installed here: the missing-timm message cannot be exercised")
def test_timm_missing_says_how_to_install():
    with pytest.raises(EmbedError, match=r"pip install 'rxcurate\[timm\]'.*torchvision"):
        get_encoder("timm:vit_tiny_patch16_224", channels=6, tile_size=32, allow_random=True)


class _FakeViT(nn.Module):
    """A tiny ViT-shaped model standing in for a timm model (test double; real timm is optional)."""

    def __init__(self, in_chans: int, img_size: int) -> None:
        super().__init__()
        self.num_prefix_tokens = 1
        self.num_features = 8
        self.patch = nn.Conv2d(in_chans, 8, kernel_size=8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.blocks = nn.Sequential(*[nn.Linear(8, 8) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)
        t = self.blocks(t)
        return t[:, 0]


@pytest.fixture
def fake_timm(monkeypatch):
    calls = []

    def create_model(name, pretrained=False, in_chans=3, num_classes=1000, img_size=224):
        calls.append(dict(name=name, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes,
                          img_size=img_size))
        return _FakeViT(in_chans, img_size)

    mod = types.ModuleType("timm")
    mod.create_model = create_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", mod)
    return calls


def test_timm_encoder_with_a_test_double(fake_timm, tmp_path):
    with pytest.raises(EmbedError, match="--weights"):
        get_encoder("timm:fake_vit", channels=5, tile_size=32)
    enc = get_encoder("timm:fake_vit", channels=5, tile_size=32, allow_random=True)
    assert fake_timm[-1] == dict(name="fake_vit", pretrained=False, in_chans=5, num_classes=0, img_size=32)
    assert enc.dim == 8 and enc.block_names == ("block01", "block02", "block03")
    x = _tiles(4, 5, 32)
    out = enc.encode(x, ["block02"])
    assert out[FINAL].shape == (4, 8) and out["block02"].shape == (4, 8)
    with torch.no_grad():  # block02 = mean of the patch tokens after the second block
        m = enc.module
        from rxcurate.encoders.base import self_standardize

        t = m.patch(self_standardize(x)).flatten(2).transpose(1, 2)
        t = torch.cat([m.cls.expand(4, -1, -1), t], 1)
        t = m.blocks[1](m.blocks[0](t))
    torch.testing.assert_close(out["block02"], t[:, 1:].mean(1))
    assert not m.blocks[1]._forward_hooks  # hooks removed after the pass

    # local weights load strictly; the classifier head is dropped
    sd = dict(enc.module.state_dict())
    sd["head.weight"] = torch.zeros(3, 8)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    again = get_encoder("timm:fake_vit", channels=5, tile_size=32, weights=path)
    assert torch.equal(again.encode(x)[FINAL], enc.encode(x)[FINAL])


@pytest.mark.skipif(not TIMM_IMPORTABLE, reason="timm is not installed (it needs a torchvision build matching the "
                    "CPU torch, which cannot load here); install rxcurate[timm] to run this test")
def test_real_timm_vit_blocks():
    enc = get_encoder("timm:vit_tiny_patch16_224", channels=6, tile_size=32, allow_random=True)
    out = enc.encode(_tiles(2, 6, 32), ["block01", enc.block_names[-1]])
    assert out[FINAL].shape == (2, enc.dim) and out["block01"].shape[0] == 2

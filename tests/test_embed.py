"""The embed stage on tiny fake release folders (shards in the compress stage's format)."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import rxcurate.embed as embed_mod
from rxcurate.cli import app, main
from rxcurate.embed import cut_tiles, run_embed
from rxcurate.encoders import FINAL, get_encoder
from rxcurate.errors import EmbedError
from rxcurate.io import read_json

ADDRESSES = ["A01", "A02", "B01", "B02", "C01", "C02", "D01", "D02"]


def make_release(root: Path, *, n_wells: int = 6, sites: int = 1, channels: int = 6, size: int = 64,
                 n_shards: int = 3, row_group: int = 5, seed: int = 0, duplicate: tuple[int, int] | None = None,
                 checksums: bool = True) -> Path:
    """A release folder as `rxcurate compress` writes it: data/train-XXXXX-of-YYYYY.parquet (`__key__`, jp2
    {bytes, path}, sorted by key, split at arbitrary rows, even inside a site) and metadata.parquet."""
    rng = np.random.default_rng(seed)
    wells = [("gene-001", 1, a) for a in ADDRESSES[:n_wells]]
    images: dict[tuple[int, int, int], bytes] = {}
    for w in range(n_wells):
        for s in range(1, sites + 1):
            for c in range(1, channels + 1):
                img = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
                images[(w, s, c)] = imagecodecs.jpeg2k_encode(img)
    if duplicate is not None:
        a, b = duplicate
        for (w, s, c), data in list(images.items()):
            if w == a:
                images[(b, s, c)] = data
    rows = []
    for (w, s, c), data in images.items():
        exp, plate, addr = wells[w]
        rows.append((f"{exp}/Plate{plate}/{addr}_s{s}_{c}", data))
    rows.sort(key=lambda r: r[0])
    cuts = np.linspace(0, len(rows), n_shards + 1).astype(int)
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    jp2_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for i in range(n_shards):
        part = rows[cuts[i] : cuts[i + 1]]
        table = pa.table({
            "__key__": pa.array([k for k, _ in part], pa.string()),
            "jp2": pa.array([{"bytes": d, "path": k.replace("/", "_") + ".jp2"} for k, d in part], jp2_type),
        })
        pq.write_table(table, data_dir / f"train-{i:05d}-of-{n_shards:05d}.parquet", row_group_size=row_group)
    well_ids = sorted(f"{e}_{p}_{a}" for e, p, a in wells)
    pq.write_table(pa.table({"well_id": well_ids, "gene": ["G"] * len(well_ids)}), root / "metadata.parquet")
    if checksums:
        (root / "checksums.json").write_text('{"files": "fake"}\n')
    return root


def _manual_means(root: Path, encoder, tile: int) -> dict[str, np.ndarray]:
    """Well means computed the slow, obvious way: decode every image, tile, encode, average."""
    keys, blobs = [], []
    for shard in sorted((root / "data").glob("*.parquet")):
        t = pq.read_table(shard)
        keys += t.column("__key__").to_pylist()
        blobs += [r["bytes"] for r in t.column("jp2").to_pylist()]
    sites: dict[tuple[str, int], dict[int, np.ndarray]] = {}
    for k, b in zip(keys, blobs, strict=True):
        exp, plate, rest = k.split("/")
        addr, s, c = rest.split("_")
        well = f"{exp}_{plate.removeprefix('Plate')}_{addr}"
        sites.setdefault((well, int(s[1:])), {})[int(c)] = imagecodecs.jpeg2k_decode(b)
    per_well: dict[str, list[np.ndarray]] = {}
    for (well, _), chans in sorted(sites.items()):
        stack = np.stack([chans[c] for c in sorted(chans)])
        vec = encoder.encode(torch.from_numpy(cut_tiles(stack, tile)))[FINAL].numpy()
        per_well.setdefault(well, []).append(vec)
    return {w: np.concatenate(v).astype(np.float64).mean(0) for w, v in per_well.items()}


@pytest.fixture
def release(tmp_path) -> Path:
    return make_release(tmp_path / "rel")


def test_cut_tiles_grid():
    img = np.arange(3 * 70 * 66, dtype=np.uint8).reshape(3, 70, 66)
    tiles = cut_tiles(img, 32)
    assert tiles.shape == (4, 3, 32, 32)
    assert np.array_equal(tiles[0], img[:, 3:35, 1:33]) and np.array_equal(tiles[3], img[:, 35:67, 33:65])


def test_baseline_embeddings_schema_values_and_info(release):
    paths = run_embed(release, "baseline", tile=32, num_workers=0, device="cpu")
    assert paths == [release / "embeddings" / "baseline" / "embeddings.parquet"]
    table = pq.read_table(paths[0])
    enc = get_encoder("baseline", channels=6, tile_size=32)
    assert table.column_names == ["well_id"] + [f"feature_{i}" for i in range(enc.dim)]
    assert table.schema.field("well_id").type == pa.string()
    assert all(table.schema.field(f"feature_{i}").type == pa.float32() for i in range(enc.dim))
    wells = table.column("well_id").to_pylist()
    assert wells == sorted(wells) and len(wells) == 6
    x = np.stack([table.column(f"feature_{i}").to_numpy() for i in range(enc.dim)], 1)
    manual = _manual_means(release, enc, 32)
    np.testing.assert_allclose(x, np.stack([manual[w] for w in wells]), rtol=1e-6, atol=1e-7)

    info = read_json(paths[0].parent / "info.json")
    assert info["encoder"] == "baseline" and info["dim"] == enc.dim and info["output"] == "final"
    assert info["tiles"]["size"] == 32 and info["tiles"]["per_image"] == 4 and info["tiles"]["image_size"] == [64, 64]
    assert info["channels"] == [1, 2, 3, 4, 5, 6] and info["wells"] == 6 and info["blocks"] == []
    assert info["weights_sha256"] is None and info["duplicate_vectors"] == [] and info["rxcurate_version"]
    assert not (release / ".embed-state").exists()


def test_sites_straddling_shards_workers_and_determinism(tmp_path):
    a = make_release(tmp_path / "a", sites=2, n_shards=4, row_group=4)
    b = make_release(tmp_path / "b", sites=2, n_shards=4, row_group=4)
    pa_ = run_embed(a, "baseline", tile=32, num_workers=0, batch_size=8, device="cpu")[0]
    pb = run_embed(b, "baseline", tile=32, num_workers=2, batch_size=8, device="cpu")[0]
    assert pa_.read_bytes() == pb.read_bytes()
    assert (pa_.parent / "info.json").read_bytes() == (pb.parent / "info.json").read_bytes()
    info = read_json(pa_.parent / "info.json")
    assert info["sites_per_well"] == {"min": 2, "max": 2} and info["tiles"]["per_well"] == {"min": 8, "max": 8}
    table = pq.read_table(pa_)
    enc = get_encoder("baseline", channels=6, tile_size=32)
    manual = _manual_means(a, enc, 32)
    x = np.stack([table.column(f"feature_{i}").to_numpy() for i in range(enc.dim)], 1)
    np.testing.assert_allclose(x, np.stack([manual[w] for w in table.column("well_id").to_pylist()]), rtol=1e-6,
                               atol=1e-7)


def test_keep_tiles(release):
    path = run_embed(release, "baseline", tile=32, num_workers=0, keep_tiles=True, device="cpu")[0]
    tiles = pq.read_table(path.parent / "tiles.parquet").to_pandas()
    assert list(tiles.columns[:3]) == ["well_id", "site", "tile"] and len(tiles) == 6 * 4
    wells = pq.read_table(path).to_pandas().set_index("well_id")
    means = tiles.drop(columns=["site", "tile"]).groupby("well_id").mean()
    np.testing.assert_allclose(means.loc[wells.index].to_numpy(), wells.to_numpy(), rtol=1e-5, atol=1e-6)


def test_openphenom_blocks_written_as_separate_sets(release):
    paths = run_embed(release, "openphenom", tile=32, num_workers=0, allow_random=True, blocks="1,last",
                      device="cpu")
    base = release / "embeddings" / "openphenom"
    assert paths == [base / "embeddings.parquet", base / "block01" / "embeddings.parquet",
                     base / "block12" / "embeddings.parquet"]
    tables = [pq.read_table(p) for p in paths]
    assert all(t.num_columns == 1 + 384 and t.num_rows == 6 for t in tables)
    final, b1, b12 = (t.drop(["well_id"]).to_pandas().to_numpy() for t in tables)
    np.testing.assert_array_equal(final, b12)  # the default output is the last block's mean token
    assert not np.allclose(final, b1)
    info = read_json(base / "block01" / "info.json")
    assert info["output"] == "block01" and info["blocks"] == ["block01", "block12"]
    assert info["weights"] == "random(seed=0)"


def test_resume_after_interruption(tmp_path, monkeypatch):
    clean = make_release(tmp_path / "clean", n_shards=3)
    broken = make_release(tmp_path / "broken", n_shards=3)
    want = run_embed(clean, "baseline", tile=32, num_workers=0, batch_size=4, device="cpu")[0]

    real_save = embed_mod._save_unit
    saved: list[Path] = []

    def crash_after_first(path, arrays):
        real_save(path, arrays)
        saved.append(path)
        raise KeyboardInterrupt  # as if killed right after the first shard's checkpoint

    monkeypatch.setattr(embed_mod, "_save_unit", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_embed(broken, "baseline", tile=32, num_workers=0, batch_size=4, device="cpu")
    assert len(saved) == 1 and saved[0].is_file()
    assert not (broken / "embeddings").exists()

    calls: list[Path] = []

    def count(path, arrays):
        calls.append(path)
        real_save(path, arrays)

    monkeypatch.setattr(embed_mod, "_save_unit", count)
    got = run_embed(broken, "baseline", tile=32, num_workers=0, batch_size=4, device="cpu")[0]
    assert len(calls) == 2 and saved[0] not in calls  # only the two missing shards were computed
    assert got.read_bytes() == want.read_bytes()
    assert (got.parent / "info.json").read_bytes() == (want.parent / "info.json").read_bytes()
    assert pq.read_table(got).num_rows == 6
    assert not (broken / ".embed-state").exists()


def test_up_to_date_rerun_skips_work(release, monkeypatch):
    first = run_embed(release, "baseline", tile=32, num_workers=0, device="cpu")[0]
    before = first.read_bytes()

    def no_work(*a, **k):
        raise AssertionError("recomputed an up-to-date output")

    monkeypatch.setattr(embed_mod, "_embed_pending", no_work)
    assert run_embed(release, "baseline", tile=32, num_workers=0, device="cpu")[0].read_bytes() == before
    # a different configuration is recomputed
    with pytest.raises(AssertionError, match="recomputed"):
        run_embed(release, "baseline", tile=16, num_workers=0, device="cpu")


def test_duplicate_vectors_reported_and_strict(tmp_path, capsys):
    rel = make_release(tmp_path / "dup", duplicate=(1, 4))
    with pytest.raises(EmbedError, match="identical vectors.*gene-001_1_A02=gene-001_1_C01"):
        run_embed(rel, "baseline", tile=32, num_workers=0, strict=True, device="cpu")
    assert not (rel / "embeddings").exists()
    path = run_embed(rel, "baseline", tile=32, num_workers=0, device="cpu")[0]
    info = read_json(path.parent / "info.json")
    assert info["duplicate_vectors"] == [["gene-001_1_A02", "gene-001_1_C01"]] and info["duplicate_vector_pairs"] == 1
    assert "identical vectors" in capsys.readouterr().err
    clean = run_embed(make_release(tmp_path / "ok"), "baseline", tile=32, num_workers=0, device="cpu")[0]
    assert read_json(clean.parent / "info.json")["duplicate_vectors"] == []


def test_duplicate_pairs_groups_and_cap():
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    x[4] = x[1]
    x[5] = x[1]
    assert embed_mod.duplicate_pairs(list("abcdef"), x) == ([["b", "e"], ["b", "f"], ["e", "f"]], 3)
    same = np.zeros((3000, 4), np.float32)  # a broken encoder: every vector equal; counted, listing capped
    pairs, total = embed_mod.duplicate_pairs([f"w{i:04d}" for i in range(3000)], same, limit=7)
    assert total == 3000 * 2999 // 2 and len(pairs) == 7 and pairs[0] == ["w0000", "w0001"]


def test_nan_embeddings_are_an_error(release, monkeypatch):
    from rxcurate.encoders.baseline import BaselineEncoder

    real = BaselineEncoder._encode

    def poisoned(self, x, blocks):
        out = real(self, x, blocks)
        out[FINAL][:, 0] = float("nan")
        return out

    monkeypatch.setattr(BaselineEncoder, "_encode", poisoned)
    with pytest.raises(EmbedError, match="NaN/inf"):
        run_embed(release, "baseline", tile=32, num_workers=0, device="cpu")
    assert not (release / "embeddings").exists()


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(EmbedError, match="rxcurate compress"):
        run_embed(tmp_path / "absent", "baseline")
    rel = make_release(tmp_path / "r")
    with pytest.raises(EmbedError, match="smaller than --tile 256: pass --tile 64"):
        run_embed(rel, "baseline", num_workers=0)
    with pytest.raises(EmbedError, match="--weights"):
        run_embed(rel, "openphenom", tile=32, num_workers=0)
    with pytest.raises(EmbedError, match="no transformer blocks"):
        run_embed(rel, "baseline", tile=32, blocks="last", num_workers=0)

    # metadata lists a well the shards lack
    meta = pq.read_table(rel / "metadata.parquet").to_pydict()
    pq.write_table(pa.table({"well_id": meta["well_id"] + ["gene-001_1_Z01"]}), rel / "metadata.parquet")
    with pytest.raises(EmbedError, match="no images in the shards.*gene-001_1_Z01"):
        run_embed(rel, "baseline", tile=32, num_workers=0)

    # a site missing a channel
    rel2 = make_release(tmp_path / "r2", n_shards=1)
    shard = next((rel2 / "data").glob("*.parquet"))
    t = pq.read_table(shard)
    pq.write_table(t.filter(pa.compute.not_equal(t.column("__key__"), "gene-001/Plate1/A02_s1_3")), shard)
    with pytest.raises(EmbedError, match=r"well gene-001_1_A02 site 1 has channels \[1, 2, 4, 5, 6\]"):
        run_embed(rel2, "baseline", tile=32, num_workers=0)

    # a malformed key
    rel3 = make_release(tmp_path / "r3", n_shards=1)
    shard = next((rel3 / "data").glob("*.parquet"))
    t = pq.read_table(shard)
    keys = t.column("__key__").to_pylist()
    keys[0] = "gene-001/A01_1"
    pq.write_table(t.set_column(0, "__key__", pa.array(keys)), shard)
    with pytest.raises(EmbedError, match="bad __key__ 'gene-001/A01_1'.*compound-001/Plate1/AA15_s1_1"):
        run_embed(rel3, "baseline", tile=32, num_workers=0)


def test_corrupt_image_names_its_key_and_keeps_no_output(tmp_path):
    rel = make_release(tmp_path / "c", n_shards=2)
    shard = sorted((rel / "data").glob("*.parquet"))[1]
    t = pq.read_table(shard)
    cells = t.column("jp2").to_pylist()
    cells[2]["bytes"] = b"\x00garbage" * 10
    bad_key = t.column("__key__")[2].as_py()
    pq.write_table(t.set_column(1, "jp2", pa.array(cells, t.schema.field("jp2").type)), shard)
    with pytest.raises(EmbedError, match=f"key {bad_key}: cannot decode"):
        run_embed(rel, "baseline", tile=32, num_workers=1)
    assert not (rel / "embeddings").exists()


# ------------------------------------------------------------------------------------------------------------- CLI


def test_cli_help():
    result = CliRunner().invoke(app, ["embed", "--help"])
    assert result.exit_code == 0
    for flag in ("--encoder", "--weights", "--blocks", "--device", "--batch-size", "--tile", "--strict"):
        assert flag in result.output


def test_cli_embeds_and_errors_in_one_line(release, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["embed", str(release), "--encoder", "openphenom", "--tile", "32"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "--weights" in err

    with pytest.raises(SystemExit) as exc:
        main(["embed", str(tmp_path / "nope.yaml"), "--encoder", "baseline"])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err

    r = CliRunner().invoke(app, ["embed", str(release), "--encoder", "baseline", "--tile", "32", "--num-workers",
                                 "0", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(release / "embeddings" / "baseline" / "embeddings.parquet")


def test_cli_release_folder_is_the_one_compress_uses(tmp_path):
    from rxcurate.commands.embed import release_folder
    from rxcurate.manifest import load_manifest

    repo = Path(__file__).resolve().parents[1]
    for name in ("rxrx3-core.yaml", "rxrx1-core.yaml"):
        manifest = repo / "manifests" / name
        assert release_folder(manifest, None) == load_manifest(manifest).resolve_workdir(None)
    assert release_folder(tmp_path, None) == tmp_path
    assert release_folder(repo / "manifests" / "rxrx3-core.yaml", tmp_path / "w") == tmp_path / "w"


def test_cli_without_encoder_runs_the_manifest_embeddings_section(release, tmp_path, capsys):
    repo = Path(__file__).resolve().parents[1]
    text = (repo / "tests" / "data" / "manifests" / "tiny-rxrx3.yaml").read_text()
    bare = tmp_path / "bare.yaml"
    bare.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["embed", str(bare), "--workdir", str(release)])
    assert exc.value.code == 2 and "no embeddings section" in capsys.readouterr().err
    manifest = tmp_path / "with-embeddings.yaml"
    manifest.write_text(text + "embeddings:\n  - encoder: baseline\n    tile_size: 32\n    keep_tiles: true\n")
    result = CliRunner().invoke(app, ["embed", str(manifest), "--workdir", str(release), "--num-workers", "0",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = release / "embeddings" / "baseline"
    assert str(out / "embeddings.parquet") in result.output and (out / "tiles.parquet").is_file()
    assert read_json(out / "info.json")["tiles"]["size"] == 32


def test_lockfile_wells_must_match_or_be_reported_skipped(release):
    wells = pq.read_table(release / "metadata.parquet").column("well_id").to_pylist()
    pq.write_table(pa.table({"well_id": wells + ["gene-001_1_Z09"]}), release / "lockfile.parquet")
    with pytest.raises(EmbedError, match="neither in metadata.parquet nor reported skipped.*gene-001_1_Z09"):
        run_embed(release, "baseline", tile=32, num_workers=0)
    (release / "compression_report.json").write_text(
        '{"skipped_wells": [{"well_id": "gene-001_1_Z09", "error": "corrupt"}]}')
    assert pq.read_table(run_embed(release, "baseline", tile=32, num_workers=0)[0]).num_rows == len(wells)
    pq.write_table(pa.table({"well_id": wells[1:]}), release / "lockfile.parquet")
    with pytest.raises(EmbedError, match="absent from lockfile.parquet"):
        run_embed(release, "baseline", tile=32, num_workers=0)

"""The base model as a benchmark artefact: shipped bases (cl_bench/bases/) loaded by key and checked against their
sha256s, `--base-seed`, the pre-training curve and its plateau rule, and `clbench reproduce`."""

import json
from pathlib import Path

import pytest
import torch

from cl_bench.config import PretrainConfig


@pytest.fixture()
def shipped_dir(tmp_path, stream, monkeypatch):
    """A tiny base (3 steps) shipped into a temporary bases directory that load_base reads instead of the package's."""
    from cl_bench.run import shipped
    from cl_bench.run.base import ship

    d = tmp_path / "bases"
    entry = ship("mixtral-tiny", stream, PretrainConfig(steps=3, seed=1), torch.device("cpu"), d)
    monkeypatch.setattr(shipped, "BASES_DIR", d)
    return d, entry


def test_a_shipped_base_is_loaded_by_its_key_without_pretraining(shipped_dir, stream, tmp_path, monkeypatch):
    from cl_bench.run import base as base_mod

    d, entry = shipped_dir
    assert entry["name"] == "mixtral-tiny-base1" and entry["pretrain"]["seed"] == 1
    assert set(entry["files"]) >= {"model.safetensors", "config.json", "clbench.json"}
    listed = json.loads((d / "manifest.json").read_text())["bases"]
    assert [e["name"] for e in listed] == ["mixtral-tiny-base1"]

    def no_pretraining(*a, **k):
        raise AssertionError("a shipped base must not be pre-trained again")

    monkeypatch.setattr(base_mod, "_pretrain_and_save", no_pretraining)
    got = base_mod.load_base("mixtral-tiny", stream, torch.device("cpu"), tmp_path / "cache",
                             PretrainConfig(steps=3, seed=1), progress=False)
    assert got.info["source"] == "shipped" and got.info["shipped"] == "mixtral-tiny-base1"
    assert got.info["key"] == entry["key"] and got.info["weights_sha256"] == entry["weights_sha256"]
    # another base seed has another key: not the shipped one, so it is pre-trained
    with pytest.raises(AssertionError, match="must not be pre-trained"):
        base_mod.load_base("mixtral-tiny", stream, torch.device("cpu"), tmp_path / "cache",
                           PretrainConfig(steps=3, seed=2), progress=False)


def test_base_seeds_give_different_bases(shipped_dir, stream, tmp_path):
    from cl_bench.run import shipped
    from cl_bench.run.base import ship

    d, one = shipped_dir
    two = ship("mixtral-tiny", stream, PretrainConfig(steps=3, seed=2), torch.device("cpu"), d)
    assert one["key"] != two["key"] and one["weights_sha256"] != two["weights_sha256"]
    assert [e["name"] for e in shipped.manifest(d)] == ["mixtral-tiny-base1", "mixtral-tiny-base2"]


def test_a_base_shipped_in_bfloat16_is_the_rounded_weights_read_exactly(shipped_dir, stream, tmp_path, monkeypatch):
    """--store bfloat16 (for the larger scale presets): half the bytes on disk, and the base is the pre-trained
    weights rounded once, read into float32 exactly, its text accuracies measured on them."""
    from cl_bench.run import shipped
    from cl_bench.run.base import load_base, ship

    d32, entry32 = shipped_dir
    d16 = tmp_path / "bases16"
    entry16 = ship("mixtral-tiny", stream, PretrainConfig(steps=3, seed=1), torch.device("cpu"), d16, store="bfloat16")
    assert entry16["stored_dtype"] == "bfloat16" and entry32["stored_dtype"] == "float32"
    assert entry16["key"] == entry32["key"] and entry16["weights_sha256"] != entry32["weights_sha256"]
    size = {d: (d / "mixtral-tiny-base1" / "model.safetensors").stat().st_size for d in (d32, d16)}
    assert size[d16] < 0.55 * size[d32]
    cpu = torch.device("cpu")
    full = load_base("mixtral-tiny", stream, cpu, tmp_path / "c32", PretrainConfig(steps=3, seed=1), progress=False)
    monkeypatch.setattr(shipped, "BASES_DIR", d16)
    half = load_base("mixtral-tiny", stream, cpu, tmp_path / "c16", PretrainConfig(steps=3, seed=1), progress=False)
    assert half.info["source"] == "shipped" and half.info["stored_dtype"] == "bfloat16"
    a, b = full.lm.state_dict(), half.lm.state_dict()
    assert all(b[k].dtype == torch.float32 and torch.equal(b[k], a[k].to(torch.bfloat16).float()) for k in a)
    assert any(not torch.equal(b[k], a[k]) for k in a)  # rounding moved some weights
    assert 0 <= entry16["text_val"] <= 1 and half.info["pretrained_text"]["val"] == entry32["text_val"]


@pytest.mark.parametrize("how", ["changed", "missing"])
def test_a_damaged_shipped_base_is_refused_naming_the_file(shipped_dir, stream, tmp_path, how):
    from cl_bench.errors import EnvironmentProblem
    from cl_bench.run.base import load_base

    d, entry = shipped_dir
    f = d / entry["name"] / "model.safetensors"
    if how == "changed":
        data = bytearray(f.read_bytes())
        data[-1] ^= 1
        f.write_bytes(bytes(data))
    else:
        f.unlink()
    with pytest.raises(EnvironmentProblem, match=r"shipped base model mixtral-tiny-base1 is damaged \(model.safetensors"):
        load_base("mixtral-tiny", stream, torch.device("cpu"), tmp_path / "cache", PretrainConfig(steps=3, seed=1),
                  progress=False)


def test_the_package_ships_three_default_bases_that_match_their_sha256(full_stream):
    """The default run's base is in the repository: base seeds 0, 1, 2 of the default preset at the default
    pre-training, each file as its manifest says."""
    stream = full_stream
    from cl_bench.config import DEFAULT_MODEL
    from cl_bench.run import shipped
    from cl_bench.run.base import base_key

    entries = {e["name"]: e for e in shipped.manifest()}
    for seed in (0, 1, 2):
        key = base_key(DEFAULT_MODEL, stream, PretrainConfig(seed=seed))[0]
        hit = shipped.find(key)
        assert hit is not None, f"no shipped base for base seed {seed} at the default pre-training"
        path, entry = hit
        assert entry["name"] in entries and shipped.damage(path, entry) is None
    # the scale axis's larger presets: base seed 0 each, in bfloat16
    for preset in ("mixtral-small", "mixtral-medium"):
        hit = shipped.find(base_key(preset, stream, PretrainConfig(seed=0))[0])
        assert hit is not None, f"no shipped base for {preset} at the default pre-training"
        path, entry = hit
        assert entry["stored_dtype"] == "bfloat16" and shipped.damage(path, entry) is None


def test_plateau_is_the_fewest_steps_close_to_the_best():
    from cl_bench.run.base import plateau

    points = [{"steps": 100, "text_val": 0.80, "text_val_loss": 0.60},
              {"steps": 200, "text_val": 0.93, "text_val_loss": 0.30},
              {"steps": 400, "text_val": 0.94, "text_val_loss": 0.29},
              {"steps": 800, "text_val": 0.935, "text_val_loss": 0.35}]
    assert plateau(points) == 200
    points[1]["text_val_loss"] = 0.32  # accuracy close, loss not yet (0.03 above the lowest)
    assert plateau(points) == 400
    # accuracy best early, loss best late, nothing close to both: not settled, so the longest
    assert plateau([{"steps": 2, "text_val": 0.08, "text_val_loss": 3.74},
                    {"steps": 3, "text_val": 0.04, "text_val_loss": 3.68}]) == 3


def test_pretrain_curve_scores_validation_only(small, cache_dir):
    from cl_bench.run.base import pretrain_curve
    from cl_bench.streams import resolve

    small_stream = resolve.load("small-numbers", cache_dir=cache_dir, progress=False)[1]
    pts = pretrain_curve("mixtral-tiny", small_stream, [2, 4], PretrainConfig(), torch.device("cpu"))
    assert [p["steps"] for p in pts] == [2, 4] and [p["examples"] for p in pts] == [128, 256]
    assert all(0 <= p["text_val"] <= 1 and 0 <= p["text_train"] <= 1 and p["text_val_loss"] > 0 for p in pts)
    assert not any("test" in k for p in pts for k in p)


def test_base_curve_command_writes_each_length_and_goes_on_after_an_interruption(tmp_path, cache_dir, small):
    from click.testing import CliRunner

    from cl_bench.cli import main

    out = tmp_path / "curve.json"
    args = ["base", "curve", "--stream", "small-numbers", "--cache-dir", str(cache_dir), "--threads", "1", "--out", str(out)]
    r = CliRunner().invoke(main, [*args, "--step-counts", "2"])
    assert r.exit_code == 0, r.output
    first = json.loads(out.read_text())
    assert [p["steps"] for p in first["points"]] == [2] and first["plateau_steps"] == 2
    assert r.output.endswith(f"written to {out}\n"), r.output
    # again without --cache-dir: the default cache ($CLBENCH_CACHE) is the same directory
    r = CliRunner().invoke(main, [a for a in args if a not in ("--cache-dir", str(cache_dir))] + ["--step-counts", "2,3"],
                           env={"CLBENCH_CACHE": str(cache_dir)})
    assert r.exit_code == 0 and "1 length(s) measured before ([2])" in r.output, r.output
    doc = json.loads(out.read_text())
    assert [p["steps"] for p in doc["points"]] == [2, 3] and doc["points"][0] == first["points"][0]
    assert doc["threads"] == 1 and doc["pretrain"]["seed"] == 0


def test_base_ls_lists_the_shipped_bases():
    from click.testing import CliRunner

    from cl_bench.cli import main
    from cl_bench.run import shipped

    r = CliRunner().invoke(main, ["base", "ls"])
    assert r.exit_code == 0
    names = [e["name"] for e in shipped.manifest()]
    assert names and all(n in r.output for n in names)


def test_the_docs_curve_table_is_the_curve_files():
    """docs/reproducibility.md's table of the presets' pre-training curves holds the files' numbers."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs/reproducibility.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| mixtral-")]
    assert len(rows) == 3
    for row in rows:
        name = row.split("`")[1]
        doc = json.loads((root / "results/base" / name).read_text())
        assert row.startswith(f"| {doc['preset']} ") and doc["plateau_steps"] == 800
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        want = {p["steps"]: p for p in doc["points"]}
        for steps, cell in zip((400, 800, 1600), cells):
            acc, loss = (float(x) for x in cell.split(" / "))
            assert acc == pytest.approx(want[steps]["text_val"], abs=5e-4), (name, steps)
            assert loss == pytest.approx(want[steps]["text_val_loss"], rel=0.05, abs=5e-4), (name, steps)

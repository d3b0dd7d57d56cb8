"""`clbench reproduce`: a result file's configuration rerun, compared bit for bit or in seed standard deviations."""

import copy
import json

import pytest
from click.testing import CliRunner

from cl_bench.cli import main
from cl_bench.engines import reproduce as rp


def _doc(seed, acc, matrix=None):
    return {"status": "complete", "seed": seed, "run_key": f"k{seed}",
            "config": {"stream": "s", "strategy": "full-ft", "seed": seed, "results_dir": "x", "cache_dir": None,
                       "budget": {"steps": 2}, "pretrain": {"steps": 5, "seed": 0}},
            "accuracy_matrix": matrix or [[acc, 0.1], [acc, acc]], "item_results": {"rows": str(seed)},
            "metrics": {"acc": acc}}


def test_a_rerun_equal_in_every_cell_and_item_is_bit_identical():
    doc = _doc(0, 0.5)
    verdict = rp.compare(doc, copy.deepcopy(doc), 0.02, 3)
    assert verdict["identical"] and verdict["within_spread"] and verdict["acc_difference"] == 0
    assert rp.describe(verdict).startswith("bit-identical")


def test_a_difference_is_given_in_seed_standard_deviations():
    published, rerun = _doc(0, 0.50), _doc(0, 0.53)
    verdict = rp.compare(published, rerun, 0.02, 3)
    assert not verdict["identical"]
    assert verdict["difference_in_sd"] == pytest.approx(1.5) and verdict["within_spread"]
    far = rp.compare(published, _doc(0, 0.60), 0.02, 3)
    assert far["difference_in_sd"] == pytest.approx(5.0) and not far["within_spread"]
    assert "outside the published spread" in rp.describe(far)
    lone = rp.compare(published, rerun, None, 1)
    assert not lone["within_spread"] and "no seed spread" in rp.describe(lone)


def test_the_spread_comes_from_the_files_of_the_same_setting_and_other_seeds(tmp_path):
    d = tmp_path / "runs" / "s" / "full-ft"
    d.mkdir(parents=True)
    for seed, acc in ((0, 0.50), (1, 0.60), (2, 0.70)):
        (d / f"m-seed{seed}.json").write_text(json.dumps(_doc(seed, acc)))
    other = _doc(3, 0.99)
    other["config"]["budget"] = {"steps": 4}  # another setting: not part of the spread
    (d / "m-seed3.json").write_text(json.dumps(other))
    sd, n = rp.seed_spread(d / "m-seed0.json", _doc(0, 0.5))
    assert n == 3 and sd == pytest.approx(0.1)


@pytest.mark.slow
def test_reproduce_reruns_a_file_bit_identically(tmp_path, cache_dir, stream):
    res = tmp_path / "published"
    args = ["run", "--stream", "vision-audio", "--strategy", "full-ft", "--steps", "2", "--batch-size", "4",
            "--pretrain-steps", "5", "--eval-limit", "16", "--threads", "1", "--results-dir", str(res),
            "--cache-dir", str(cache_dir), "-q"]
    assert CliRunner().invoke(main, args).exit_code == 0
    (path,) = res.glob("runs/vision-audio/full-ft/*.json")
    out = CliRunner().invoke(main, ["reproduce", str(path), "--cache-dir", str(cache_dir), "-q"])
    assert out.exit_code == 0, out.output
    assert "bit-identical" in out.output
    # the rerun is never written over the file it is compared with
    out = CliRunner().invoke(main, ["reproduce", str(path), "--results-dir", str(res), "--cache-dir", str(cache_dir)])
    assert out.exit_code == 2 and "is where" in out.output

"""Inputs that used to be accepted silently: a run the plan says cannot fit or finish, empty directories, sizes in
stream files, an empty split."""

import dataclasses

import pytest

from cl_bench.config import Budget
from cl_bench.errors import UsageError
from cl_bench.models.lm import PretrainConfig
from cl_bench.run.plan import Plan, estimated_hours
from cl_bench.run.runner import RunConfig, _check_plan, run
from cl_bench.streams.files import StreamFileError, read_spec
from test_yaml_stream import write_stream


@pytest.mark.parametrize("field, message", [
    ({"results_dir": ""}, "RunConfig.results_dir is empty; give a directory, e.g. --results-dir my-results"),
    ({"results_dir": "  "}, "RunConfig.results_dir is empty; give a directory, e.g. --results-dir my-results"),
    ({"cache_dir": ""}, "RunConfig.cache_dir is empty; give a directory, or leave --cache-dir out for $CLBENCH_CACHE "
                        "or ~/.cache/clbench"),
    ({"max_hours": 0}, "RunConfig.max_hours must be > 0, got 0"),
])
def test_empty_directories_and_bounds_are_refused(field, message):
    with pytest.raises(UsageError) as e:
        RunConfig(**field)
    assert str(e.value) == message


def plan(capacity=None, device="cpu"):
    return Plan(model="m", strategy="s", device=device, dtype="float32", batch_size=32, seq_len=20,
                gradient_checkpointing=False, parameters={"active": 1_000_000}, bytes={"peak": 3 * 2**30},
                capacity_bytes=capacity)


def test_the_time_estimate_counts_six_flops_per_active_parameter_and_token():
    # 6 x 1e6 parameters x 20 tokens x 3.6e6 examples / (1e11 FLOP/s x 2 threads) = 2160 s = 0.6 h
    assert estimated_hours(plan(), 3_600_000, threads=2) == pytest.approx(0.6)
    assert estimated_hours(plan(device="cuda:0"), 3_600_000, threads=2) == pytest.approx(4.32e14 / 1e15 / 3600)


def test_a_plan_that_does_not_fit_or_takes_too_long_is_refused_unless_ignored():
    config = RunConfig(budget=Budget(steps=400, batch_size=32))
    _check_plan(plan(capacity=16 * 2**30), config, stages=2, n_threads=2)  # fits, minutes: runs
    with pytest.raises(UsageError) as e:
        _check_plan(plan(capacity=2 * 2**30), config, stages=2, n_threads=2)
    assert str(e.value) == ("the plan's peak is about 3.2 GB, more than 90% of 2.1 GB on cpu; lower --batch-size or "
                            "--eval-batch-size, add --gradient-checkpointing, or pass --ignore-plan to run anyway")
    huge = dataclasses.replace(config, budget=Budget(steps=10**12, batch_size=32))
    with pytest.raises(UsageError) as e:
        _check_plan(plan(), huge, stages=2, n_threads=2)
    assert str(e.value) == (
        "the plan estimates at least 10,666,667 hours of training (2 stages x 1,000,000,000,000 steps x 32 examples, "
        "1,000,000 active parameters, 20 tokens), over --max-hours 72; lower --steps, raise --max-hours, or pass "
        "--ignore-plan")
    _check_plan(plan(capacity=2 * 2**30), dataclasses.replace(huge, ignore_plan=True), stages=2, n_threads=2)


@pytest.mark.slow
def test_a_run_of_a_trillion_steps_is_refused_before_it_trains(small, cache_dir, tmp_path, monkeypatch):
    from cl_bench.run import base

    def never(*args, **kwargs):
        raise AssertionError("the base model was loaded before the plan refused the run")

    monkeypatch.setattr(base, "load_base", never)  # refused before the base is loaded or pre-trained
    cfg = RunConfig(stream="small-numbers", strategy="align-only", device="cpu",
                    budget=Budget(steps=10**12, batch_size=8), pretrain=PretrainConfig(steps=20),
                    results_dir=str(tmp_path / "r"), cache_dir=str(cache_dir))
    with pytest.raises(UsageError, match=r"^the plan estimates at least [\d,]+ hours of training \(2 stages x "
                                         r"1,000,000,000,000 steps x 8 examples"):
        run(cfg, progress=False, echo=lambda s: None)
    assert not list((tmp_path / "r").rglob("*.json"))


@pytest.mark.parametrize("size", [100000, 0, True, "8"])
def test_a_stream_file_image_size_is_bounded(tmp_path, size):
    path = write_stream(tmp_path / "data", t1={"image_size": size})
    with pytest.raises(StreamFileError) as e:
        read_spec(path)
    assert f"tasks[1].image_size: must be an integer from 1 to 1024 (pixels a side), got {size!r}" in str(e.value)


@pytest.mark.parametrize("how", ["header-only", "empty-file", "empty-folder"])
def test_an_empty_split_in_a_stream_file_is_named(tmp_path, how):
    from cl_bench.streams import resolve

    path = write_stream(tmp_path / "data")
    root = tmp_path / "data"
    if how == "header-only":
        (root / "tones-test.csv").write_text("path,number\n")
        where, split, file = "tasks[2]", "test", root / "tones-test.csv"
    elif how == "empty-file":
        (root / "text" / "val.csv").write_text("")
        where, split, file = "tasks[0]", "val", root / "text" / "val.csv"
    else:
        import shutil

        for d in (root / "digits" / "test").iterdir():
            shutil.rmtree(d)
        where, split, file = "tasks[1]", "test", root / "digits" / "test"
    with pytest.raises(StreamFileError) as e:
        resolve.load(str(path), cache_dir=tmp_path / "cache", progress=False)
    assert str(e.value) == f"{path}: {where}.data: the {split} split ({file}) is empty; every split needs items"


def test_tune_checks_its_output_path_before_any_run(tmp_path):
    from cl_bench.engines.tune import check_output

    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError) as e:
        check_output(tmp_path / "afile" / "x")
    assert str(e.value) == f"--out {tmp_path / 'afile' / 'x'}: {tmp_path / 'afile'} is a file, not a folder; choose " \
                           "another --out"
    (tmp_path / "r.json").mkdir()
    with pytest.raises(UsageError, match="r.json is a folder; choose another --out"):
        check_output(tmp_path / "r")
    check_output(tmp_path / "new" / "deeper" / "report")  # folders to be made: fine


def test_tune_refuses_a_bad_out_before_running_anything(tmp_path):
    from click.testing import CliRunner

    from cl_bench.cli import main

    (tmp_path / "afile").write_text("x")
    out = CliRunner().invoke(main, ["tune", "--strategies", "align-only", "--out", str(tmp_path / "afile" / "x"),
                                    "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])
    assert out.exit_code == 2 and "is a file, not a folder; choose another --out" in out.output
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()  # nothing ran


def test_run_refuses_an_empty_results_dir_in_one_line(tmp_path):
    from click.testing import CliRunner

    from cl_bench.cli import main

    out = CliRunner().invoke(main, ["run", "--results-dir", "", "--cache-dir", str(tmp_path / "c")])
    assert out.exit_code == 2
    assert out.output.strip().splitlines()[-1] == ("Error: RunConfig.results_dir is empty; give a directory, e.g. "
                                                   "--results-dir my-results")

"""End-to-end runs on tiny budgets: the CLI, the result file, resume, and the strategies' contracts."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import cl_bench
from cl_bench.cli import main
from cl_bench.config import Budget
from cl_bench.models.lm import PretrainConfig
from cl_bench.run.runner import RunConfig, run

TINY = dict(stream="small-numbers", budget=Budget(steps=2, batch_size=4), pretrain=PretrainConfig(steps=5, batch_size=8),
            eval_limit=64)


def tiny_config(tmp_path, cache_dir, **kw):
    return RunConfig(**{**TINY, "results_dir": str(tmp_path / "results"), "cache_dir": str(cache_dir), **kw})


@pytest.fixture
def test_strategies(register_strategies):
    register_strategies({"spy": "helpers_strategies:Spy", "crash-on-audio": "helpers_strategies:CrashOnAudio",
                         "checkpointer": "helpers_strategies:Checkpointer"})


@pytest.mark.slow
def test_cli_run_writes_a_complete_result_file(tmp_path, cache_dir, full_stream):
    res = tmp_path / "results"
    out = CliRunner().invoke(main, ["run", "--stream", "vision-audio", "--strategy", "full-ft", "--steps", "2",
                                    "--batch-size", "4", "--pretrain-steps", "5", "--cache-dir", str(cache_dir),
                                    "--results-dir", str(res), "--device", "cpu", "--eval-limit", "64", "-q"])
    assert out.exit_code == 0, out.output
    assert "accuracy matrix" in out.output and "ACC" in out.output
    files = list((res / "runs" / "vision-audio" / "full-ft").glob("*.json"))
    assert len(files) == 1
    r = json.loads(files[0].read_text())
    assert r["schema_version"] == 3 and r["status"] == "complete"
    assert r["config"]["budget"]["steps"] == 2 and r["seed"] == 0
    R = r["accuracy_matrix"]
    assert len(R) == 3 and all(len(row) == 3 for row in R)
    assert all(0.0 <= a <= 1.0 for row in R for a in row)
    assert [t["name"] for t in r["stream"]["tasks"]] == ["text", "vision", "audio"]
    assert len(r["extra_accuracy"]["text/train-plain"]) == 3
    assert set(r["metrics"]) >= {"acc", "bwt", "fwt", "forgetting", "text_retention"}
    assert r["metrics"]["acc"] == pytest.approx(sum(R[-1]) / 3, abs=1e-6)
    for s in r["stages"]:
        assert s["train_seconds"] > 0 and s["cost"]["trainable"] > 0
        assert s["cost"]["total"] == r["base_model"]["parameters"] + s["cost"]["added"]
    assert r["environment"]["packages"]["torch"] == torch.__version__.split("+")[0]
    assert r["environment"]["packages"]["clbench"] == cl_bench.__version__  # the running code's version, as in the run key
    sources = r["environment"]["sources"]  # which package provided the strategy and the stream
    assert sources["strategy"] == {"name": "full-ft", "target": "cl_bench.strategies.full_ft:FullFineTuning",
                                   "distribution": "clbench", "version": sources["strategy"]["version"]}
    assert sources["stream"]["distribution"] == "clbench" and sources["stream"]["name"] == "vision-audio"
    assert r["environment"]["device"] == "cpu"
    assert not list(res.rglob("*.tmp"))  # atomic writes leave nothing behind
    # Per-item results: every row and task decodes to its test items and gives the matrix exactly.
    from cl_bench.results import unpack_items

    sizes = [t["n_test"] for t in r["stream"]["tasks"]]
    for i, packed in enumerate(r["item_results"]["rows"]):
        for j, text in enumerate(packed):
            ok = unpack_items(text, sizes[j])
            assert int(ok.sum()) / sizes[j] == R[i][j]
    # The budget: 2 steps x 4 examples per stage, in one phase; FLOPs measured.
    for s in r["stages"]:
        t = s["training"]
        assert t["examples"] == t["budget_examples"] == 8 and t["budget_ratio"] == 1.0 and t["steps"] == 2
        assert t["flops"] > 0 and t["tokens"] > 0 and len(t["phases"]) == 1
        assert s["memory"] == {"past_train_items": {}, "past_val_items": {}, "past_train_share": {},
                               "past_val_share": {}, "task_weight_bytes": 0}
    assert r["declaration"] == {"past_train": False, "past_val": False, "task_weights": False,
                                "modality_routed": False, "task_routed": False, "budget": "equal"}
    # The routing analysis: per row and task, each MoE layer's expert shares sum to 1; no expert added.
    rows = r["routing"]["rows"]
    assert len(rows) == 3
    for row in rows:
        assert set(row["shares"]) == {"text", "vision", "audio"} and len(row["layers"]) == 4
        assert all(st == [-1, -1, -1, -1] for st in row["expert_stage"])
        for layers in row["shares"].values():
            assert len(layers) == 4 and all(sum(shares) == pytest.approx(1, abs=1e-5) for shares in layers)


@pytest.mark.slow
def test_align_only_leaves_text_exactly_unchanged(tmp_path, cache_dir, stream):
    r, _ = run(tiny_config(tmp_path, cache_dir, strategy="align-only"), progress=False)
    text = [row[0] for row in r["accuracy_matrix"]]
    assert text == [text[0]] * 3
    routed = [row["shares"]["text"] for row in r["routing"]["rows"]]  # the frozen LM routes text as before
    assert routed == [routed[0]] * 3
    assert r["routing"]["rows"][0]["shares"]["vision"] != r["routing"]["rows"][1]["shares"]["vision"]
    assert r["extra_accuracy"]["text/train-plain"] == [r["extra_accuracy"]["text/train-plain"][0]] * 3
    assert r["metrics"]["text_retention"] == 100.0
    # only the projector of the stage's modality trains
    assert r["stages"][0]["cost"]["trainable"] < r["stages"][0]["cost"]["added"]


@pytest.mark.slow
def test_strategy_never_sees_test_data(tmp_path, cache_dir, stream, test_strategies):
    from helpers_strategies import Spy

    Spy.seen.clear()
    run(tiny_config(tmp_path, cache_dir, strategy="spy"), progress=False)
    assert [e.name for e in Spy.seen] == ["vision", "audio"]
    assert all(e.test is None and not e.probes for e in Spy.seen)


@pytest.mark.slow
def test_resume_after_a_crash_gives_the_uninterrupted_result(tmp_path, cache_dir, stream, test_strategies):
    from helpers_strategies import CrashOnAudio

    cfg = tiny_config(tmp_path, cache_dir, strategy="crash-on-audio", seed=3)
    CrashOnAudio.crash = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg, progress=False)
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("*.json"))
    CrashOnAudio.crash = False
    said = []
    resumed, path = run(cfg, progress=False, echo=said.append)
    assert any("resuming after stage 1 of 2" in s for s in said)
    assert [e.name for e in CrashOnAudio.resumed_with] == ["vision"]
    assert all(e.test is None for e in CrashOnAudio.resumed_with)
    assert len(resumed["stages"]) == 2
    fresh, _ = run(cfg, progress=False, restart=True)
    assert resumed["accuracy_matrix"] == fresh["accuracy_matrix"]
    assert resumed["extra_accuracy"] == fresh["extra_accuracy"]
    assert resumed["timing"]["resumed_at_stages"] == [1] and fresh["timing"]["resumed_at_stages"] == []
    assert all(s["finished"] and "git_commit" in s for s in resumed["stages"])


@pytest.mark.slow
def test_resuming_with_other_code_is_recorded_and_warned(tmp_path, cache_dir, small, test_strategies,
                                                          monkeypatch):
    from helpers_strategies import CrashOnAudio

    from cl_bench.run import records

    cfg = tiny_config(tmp_path, cache_dir, strategy="crash-on-audio", seed=4, stream="small-numbers")
    monkeypatch.setattr(records, "_WHERE", {"git_commit": "0ld"})
    CrashOnAudio.crash = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg, progress=False)
    CrashOnAudio.crash = False
    monkeypatch.setattr(records, "_WHERE", {"git_commit": "n3w"})
    said = []
    result, _ = run(cfg, progress=False, echo=said.append)
    assert any("stages 1-1 were run by clbench 0ld, this is n3w; --restart" in s for s in said)
    assert [s["git_commit"] for s in result["stages"]] == ["0ld", "n3w"]
    assert result["timing"]["resumed_at_stages"] == [1]


@pytest.mark.slow
def test_local_checkpoint_runs_like_a_preset(tmp_path, cache_dir, stream):
    from transformers import AutoModelForCausalLM

    from cl_bench.models.lm import preset_config, word_tokenizer

    words = {w for t in stream.tasks for split in (t.train,) for s in (*split["prompt"], *split["answer"])
             for w in s.split()} - {"<input>"}
    tok = word_tokenizer(sorted(words))
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(preset_config("olmoe-tiny", len(tok), tok))
    ckpt = tmp_path / "my-olmoe"
    lm.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    r, path = run(tiny_config(tmp_path, cache_dir, model=str(ckpt)), progress=False)
    assert r["base_model"]["source"] == "checkpoint" and r["base_model"]["model_type"] == "olmoe"
    assert path.name.startswith("my-olmoe-seed0-")

    # the same checkpoint changed in place is another base: another run key, so no result is overwritten
    with torch.no_grad():
        lm.model.embed_tokens.weight.mul_(0.5)
    lm.save_pretrained(ckpt)
    r2, path2 = run(tiny_config(tmp_path, cache_dir, model=str(ckpt)), progress=False)
    assert r2["base_model"]["key"] != r["base_model"]["key"] and path2 != path and path.exists()

    # broken checkpoints: one line naming the path and the fix, no traceback
    def fails(prepare, message, code=1):  # a damaged checkpoint: the machine's files (1); no tokenizer: usage (2)
        bad = tmp_path / f"bad-{len(list(tmp_path.glob('bad-*')))}"
        shutil.copytree(ckpt, bad)
        prepare(bad)
        out = CliRunner().invoke(main, ["run", "--model", str(bad), "--cache-dir", str(cache_dir), "--steps", "1",
                                        "--results-dir", str(tmp_path / "res"), "-q"])
        assert out.exit_code == code and message in out.output and f"--model {bad}" in out.output, out.output
        assert "Traceback" not in out.output and len(out.output.strip().splitlines()) == 1

    weights = next(ckpt.glob("*.safetensors")).name
    fails(lambda d: (d / weights).write_bytes((d / weights).read_bytes()[:1000]), "the checkpoint cannot be loaded")
    fails(lambda d: (d / "config.json").write_text("{not json"), "the checkpoint cannot be loaded")
    fails(lambda d: (d / weights).unlink(), "the checkpoint cannot be loaded")
    fails(lambda d: [f.unlink() for f in d.glob("tokenizer*")], "no tokenizer files", 2)


def test_cli_errors_name_the_problem(tmp_path, cache_dir):
    runner = CliRunner()
    out = runner.invoke(main, ["run", "--strategy", "ful-ft", "--cache-dir", str(cache_dir)])
    assert out.exit_code != 0 and "Did you mean 'full-ft'" in out.output
    fresh = tmp_path / "fresh-cache"  # a missing checkpoint is said before the stream's data are built
    out = runner.invoke(main, ["run", "--model", str(tmp_path / "nope"), "--cache-dir", str(fresh),
                               "--pretrain-steps", "5", "--steps", "1", "-q"])
    assert out.exit_code == 2 and "neither a preset" in out.output and "Traceback" not in out.output
    assert [p for p in fresh.rglob("*") if p.is_file() and p.relative_to(fresh).parts[0] != "runs"] == []
    out = runner.invoke(main, ["run", "-o", "lr", "--cache-dir", str(cache_dir)])
    assert out.exit_code != 0 and "is not KEY=VALUE" in out.output
    if not torch.cuda.is_available():
        out = runner.invoke(main, ["run", "--device", "cuda", "--cache-dir", str(cache_dir)])
        assert out.exit_code != 0 and "sees no CUDA GPU" in out.output


def test_every_command_has_complete_help():
    runner = CliRunner()
    for args in ([], ["run"], ["ls"], ["validate"], ["leaderboard"], ["plot"], ["publish"]):
        out = runner.invoke(main, [*args, "--help"])
        assert out.exit_code == 0
        assert "Usage:" in out.output
    run_help = runner.invoke(main, ["run", "--help"]).output
    for opt in ("--stream", "--strategy", "--model", "--seed", "--device", "--steps", "--batch-size",
                "--pretrain-steps", "--option", "--encoder", "--results-dir", "--cache-dir", "--restart", "--eval-limit",
                "--quiet"):
        assert opt in run_help


@pytest.mark.slow
def test_publish_runs_what_is_missing_then_writes_the_leaderboard(tmp_path, cache_dir, small):
    res = tmp_path / "published"
    args = ["publish", "--stream", "small-numbers", "--strategies", "align-only,full-ft", "--seeds", "0,1", "--steps", "2", "--pretrain-steps", "5",
            "--results-dir", str(res), "--cache-dir", str(cache_dir), "--device", "cpu", "--eval-limit", "64"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert len(list((res / "runs").rglob("*.json"))) == 4
    table = (res / "leaderboard.md").read_text()
    assert "| align-only |" in table and "| full-ft |" in table
    assert all((res / f"leaderboard.{ext}").stat().st_size > 0 for ext in ("csv", "tex", "html"))
    assert (res / "figures" / "small-numbers" / "pareto.png").exists()
    again = CliRunner().invoke(main, args)  # nothing left to run: every run is reused (publish is a sweep)
    assert again.exit_code == 0 and again.output.count(": reused (") == 4
    assert "sweep: 4 cells, 0 run, 4 reused, 0 failed" in again.output
    out = CliRunner().invoke(main, [*args[:4], "ful-ft", *args[5:]])
    assert out.exit_code != 0 and "Did you mean 'full-ft'" in out.output


@pytest.mark.slow
def test_publish_runs_every_cell_on_each_model_and_reports_the_scale_axis(tmp_path, cache_dir, small):
    res = tmp_path / "published"
    args = ["publish", "--stream", "small-numbers", "--strategies", "align-only,full-ft", "--seeds", "0",
            "--models", "mixtral-tiny,mixtral-small", "--steps", "2", "--pretrain-steps", "5", "--results-dir",
            str(res), "--cache-dir", str(cache_dir), "--device", "cpu", "--eval-limit", "16"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    models = sorted(json.loads(f.read_text())["config"]["model"] for f in (res / "runs").rglob("*.json"))
    assert models == ["mixtral-small"] * 2 + ["mixtral-tiny"] * 2
    table = (res / "leaderboard.md").read_text()
    assert "budget (2 steps x 32): scale\n" in table and "| mixtral-tiny vs mixtral-small | 2 |" in table
    assert "| Strategy | ACC, mixtral-tiny (1.79M) | ACC, mixtral-small (7.86M) |" in table
    bad = CliRunner().invoke(main, ["," if a == "mixtral-tiny,mixtral-small" else a for a in args])
    assert bad.exit_code == 2 and "--models ',': give one or more base models" in bad.output


@pytest.mark.slow
def test_checkpoints_score_the_model_as_it_is_at_that_point(tmp_path, cache_dir, stream, test_strategies):
    """Strategy.checkpoint: every task's validation accuracy of the model at the moment of the call."""
    r, _ = run(tiny_config(tmp_path, cache_dir, strategy="checkpointer"), progress=False)
    for st in r["stages"]:
        cp = st["checkpoints"]
        assert list(cp) == ["before-flip", "flipped", "restored"]
        assert all(set(v) == {"text", "vision", "audio"} for v in cp.values())
        assert cp["restored"] == cp["before-flip"]  # the same model, scored the same way
        assert cp["flipped"] != cp["before-flip"]  # a changed model, scored anew
        assert all(0.0 <= a <= 1.0 for v in cp.values() for a in v.values())


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["full-ft", "ewc"])  # the engine's loop and avalanche's
def test_a_diverging_run_stops_with_the_cause_and_writes_no_result(tmp_path, cache_dir, small, strategy):
    res = tmp_path / "results"
    # 1e38: Adam moves each weight by about the learning rate, so the next forward overflows float32 whatever the
    # base (lr=1e6 only wrecks this tiny base to finite garbage under some package versions); the small stream, so
    # that EWC's Fisher over the base's training split takes seconds
    out = CliRunner().invoke(main, ["run", "--stream", "small-numbers", "--strategy", strategy, "-o", "lr=1e38",
                                    "--steps", "3",
                                    "--batch-size", "4", "--pretrain-steps", "5", "--cache-dir", str(cache_dir),
                                    "--results-dir", str(res), "--device", "cpu", "--eval-limit", "16", "-q"])
    assert out.exit_code == 1, out.output
    assert f"strategy '{strategy}' diverged in stage 1 (vision)" in out.output
    assert "likely cause: lr=1e+38 (default" in out.output and "No result file was written" in out.output
    assert not list(res.rglob("*.json"))


def test_an_option_given_twice_is_a_usage_error(cache_dir):
    out = CliRunner().invoke(main, ["run", "-o", "lr=1e-4", "-o", "lr=1e-3", "--cache-dir", str(cache_dir)])
    assert out.exit_code == 2 and "'lr' is given twice; give it once" in out.output


def test_the_leaderboard_refuses_a_diverged_result(tmp_path):
    import math
    import shutil

    from cl_bench.reporting.leaderboard import collect

    src = Path(__file__).parent / "fixtures" / "results" / "runs" / "vision-audio" / "full-ft"
    dst = tmp_path / "runs" / "vision-audio" / "full-ft"
    shutil.copytree(src, dst)
    bad = sorted(dst.glob("*.json"))[0]
    doc = json.loads(bad.read_text())
    doc["stages"][0]["train_stats"]["last_loss"] = math.nan  # what a diverged run wrote before
    bad.write_text(json.dumps(doc))
    runs, skipped = collect(tmp_path)
    assert bad not in [r.path for r in runs] and len(runs) == len(list(dst.glob("*.json"))) - 1
    assert skipped == [(bad, "stage vision: training diverged (a loss is not finite)")]


@pytest.mark.slow
def test_bad_arguments_get_one_clear_line(tmp_path, cache_dir, stream):
    runner = CliRunner()
    common = ["--stream", "small-numbers", "--cache-dir", str(cache_dir), "--results-dir", str(tmp_path / "res"),
              "--pretrain-steps", "5"]
    cases = [
        (["run", "-q", "--seed", "100000000000000000000000"], 2, "is not in the range 0<=x<=2147483647"),
        (["publish", "--seeds", "a,b"], 2, "'a' is not a seed: give comma-separated integers"),
        (["run", "-q", "--encoder", "video=tubelets", "--steps", "1"], 2,
         "--encoder video=...: stream 'small-numbers' has no video task; its modalities: image, audio"),
        (["run", "-q", "--batch-size", "100000", "--steps", "1"], 2,
         "--batch-size 100000 is larger than the smallest training split"),
    ]
    for args, code, message in cases:
        out = runner.invoke(main, [*args, *common])
        assert out.exit_code == code and message in out.output, (args, out.output)
        assert "Traceback" not in out.output
    assert not list(tmp_path.rglob("*.json"))  # no result written


@pytest.mark.slow
def test_a_users_run_goes_to_its_own_results_directory(tmp_path, cache_dir, stream, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["run", "--stream", "small-numbers", "--steps", "2", "--batch-size", "4",
                                    "--pretrain-steps", "5", "--cache-dir", str(cache_dir), "--eval-limit", "16", "-q"])
    assert out.exit_code == 0, out.output
    (f,) = (tmp_path / "my-results" / "runs" / "small-numbers" / "full-ft").glob("*.json")
    assert f"result file: my-results/runs/small-numbers/full-ft/{f.name}" in out.output
    assert "your runs go under my-results/, apart from the published results/" in out.output
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["not-json", "extra-row", "no-checkpoint", "truncated-checkpoint"])
def test_a_damaged_resume_state_names_its_directory_and_restart(tmp_path, cache_dir, small, test_strategies,
                                                                 damage):
    from helpers_strategies import CrashOnAudio

    kinds = ["not-json", "extra-row", "no-checkpoint", "truncated-checkpoint"]
    cfg = tiny_config(tmp_path, cache_dir, strategy="crash-on-audio", seed=5 + kinds.index(damage),
                      stream="small-numbers")
    before = set((cache_dir / "runs").glob("*"))
    CrashOnAudio.crash = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg, progress=False)
    CrashOnAudio.crash = False
    (work,) = {p for p in set((cache_dir / "runs").glob("*")) - before if p.is_dir()}  # its resumable state
    state = json.loads((work / "state.json").read_text())
    if damage == "not-json":
        (work / "state.json").write_text("{")
    elif damage == "extra-row":
        state["rows"].append(state["rows"][-1])
        (work / "state.json").write_text(json.dumps(state))
    elif damage == "no-checkpoint":
        (work / state["checkpoint"]).unlink()
    else:
        ck = work / state["checkpoint"]
        ck.write_bytes(ck.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"the saved state of this run in {re.escape(str(work))} is damaged .*--restart"):
        run(cfg, progress=False)
    assert not list((tmp_path / "results").rglob("*.json"))
    done, _ = run(cfg, progress=False, restart=True)
    assert done["status"] == "complete" and len(done["stages"]) == 2

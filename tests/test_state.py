"""A run's saved state: retired in one step when the run finishes, and a state that holds every stage finishes
its run without weights (a checkpoint lost in an interrupted clean-up cannot keep a run key stuck)."""

import pytest

from cl_bench.config import Budget
from cl_bench.models.lm import PretrainConfig
from cl_bench.run import state
from cl_bench.run.runner import RunConfig, run


def config(tmp_path, cache_dir, results):
    return RunConfig(stream="small-numbers", strategy="full-ft", seed=31, device="cpu",
                     budget=Budget(steps=2, batch_size=8), pretrain=PretrainConfig(steps=20), eval_limit=8,
                     results_dir=str(tmp_path / results), cache_dir=str(cache_dir))


@pytest.mark.slow
def test_a_state_holding_every_stage_finishes_without_its_checkpoint(small, cache_dir, tmp_path, monkeypatch):
    kept = []
    monkeypatch.setattr(state, "retire", kept.append)  # as if the process died before the clean-up
    first, _ = run(config(tmp_path, cache_dir, "a"), progress=False, echo=lambda s: None)
    (work,) = kept
    for ck in work.glob("stage*.pt"):
        ck.unlink()  # what an older clbench's interrupted clean-up left
    monkeypatch.undo()
    said = []
    second, _ = run(config(tmp_path, cache_dir, "b"), progress=False, echo=said.append)
    assert f"the saved state in {work} holds every stage; writing its result" in said
    for key in ("accuracy_matrix", "item_results", "extra_accuracy", "metrics", "run_key", "stages"):
        assert second[key] == first[key], key
    assert second["timing"]["resumed_at_stages"] == [2] and not work.exists()


def test_retiring_renames_the_state_away_before_deleting_it(tmp_path, monkeypatch):
    from cl_bench import faults

    work = tmp_path / "runs" / "abc"
    work.mkdir(parents=True)
    (work / "state.json").write_text("{}")
    (work / "stage2.pt").write_bytes(b"x")
    seen = []
    monkeypatch.setattr(faults, "point", lambda name: seen.append((name, sorted(p.name for p in work.parent.iterdir()))))
    state.retire(work)
    assert seen[0] == ("retire:before", ["abc"])
    assert seen[1][0] == "retire:renamed" and seen[1][1][0].startswith(".abc.retired-")  # no state under its key
    assert [n for n, _ in seen[2:]] == ["retire:deleting", "retire:deleting"]
    assert list(work.parent.iterdir()) == []

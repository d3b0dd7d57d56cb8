"""Row 0 (the evaluation before the first stage) computed once and shared across runs (cl_bench.shared): exact,
opt-in per strategy, safe under concurrent workers."""

import json
import multiprocessing
import time
from pathlib import Path


from cl_bench import registry, shared
from cl_bench.config import Budget
from cl_bench.models.lm import PretrainConfig
from cl_bench.runner import RunConfig, run
from cl_bench.strategy import Strategy


def config(cache, results, strategy, seed=0):
    return RunConfig(stream="small-numbers", strategy=strategy, seed=seed, device="cpu",
                     budget=Budget(steps=1, batch_size=8), pretrain=PretrainConfig(steps=20), results_dir=str(results),
                     cache_dir=str(cache))


def same_result(a: dict, b: dict) -> bool:
    keys = ("accuracy_matrix", "item_results", "extra_accuracy", "routing", "metrics", "run_key")
    return all(a[k] == b[k] for k in keys)


def test_every_built_in_strategys_row_0_is_the_same(every_strategy):
    """What `setup_keeps_outputs` declares, checked with sharing off (conftest's every_strategy): every built-in
    strategy, evaluating its own row 0 after its own setup, gets the same accuracies, items, probes and routing
    shares."""
    rows = {}
    for name, (doc, _) in every_strategy.items():
        assert registry.strategies.get(name).setup_keeps_outputs, name
        assert doc["timing"]["row0_source"] == "own"
        rows[name] = json.dumps([doc["accuracy_matrix"][0], doc["item_results"]["rows"][0],
                                 {k: v[0] for k, v in doc["extra_accuracy"].items()}, doc["routing"]["rows"][0]])
    assert len(rows) == len(registry.strategies.names()) and len(set(rows.values())) == 1, rows


def test_a_shared_row_0_gives_bit_identical_results(small, cache_dir, tmp_path, monkeypatch):
    # seeds no other test uses: nothing is stored for them before
    entries = set((Path(cache_dir) / "shared").glob("row0-*.json"))
    first, _ = run(config(cache_dir, tmp_path / "a", "align-only", seed=101), progress=False, echo=lambda s: None)
    assert first["timing"]["row0_source"] == "computed"
    with_cache, _ = run(config(cache_dir, tmp_path / "a", "lora", seed=101), progress=False, echo=lambda s: None)
    assert with_cache["timing"]["row0_source"] == "stored"
    monkeypatch.setenv(shared.ENV, "0")
    without, _ = run(config(cache_dir, tmp_path / "b", "lora", seed=101), progress=False, echo=lambda s: None)
    assert without["timing"]["row0_source"] == "own"
    assert same_result(with_cache, without)
    assert len(set((Path(cache_dir) / "shared").glob("row0-*.json")) - entries) == 1
    monkeypatch.delenv(shared.ENV)
    other_seed, _ = run(config(cache_dir, tmp_path / "a", "lora", seed=102), progress=False, echo=lambda s: None)
    assert other_seed["timing"]["row0_source"] == "computed"  # another seed, other projectors: another entry


class Perturbing(Strategy):
    """A plug-in whose setup changes the model (it does not declare setup_keeps_outputs)."""

    def setup(self, model, context):
        super().setup(model, context)
        import torch

        with torch.no_grad():
            model.lm.get_output_embeddings().weight.mul_(-1.0)

    def learn(self, experience):
        return {}


def test_a_strategy_that_does_not_declare_it_evaluates_its_own_row_0(small, cache_dir, tmp_path):
    shared_row, _ = run(config(cache_dir, tmp_path / "a", "align-only", seed=103), progress=False, echo=lambda s: None)
    registry.strategies.register("perturbing", "test_shared:Perturbing", origin="tests")
    try:
        doc, _ = run(config(cache_dir, tmp_path / "a", "perturbing", seed=103), progress=False, echo=lambda s: None)
    finally:
        registry.strategies.unregister("perturbing")
    assert doc["timing"]["row0_source"] == "own"
    assert doc["item_results"]["rows"][0] != shared_row["item_results"]["rows"][0]


def _slow_compute(cache: str, log: str) -> None:
    def compute():
        with open(log, "a") as f:
            f.write("computed\n")
        time.sleep(1.0)  # long enough for the other worker to arrive while this one holds the entry's lock
        return [0.5], ["AA=="], {}, None

    shared.row0(Path(cache), "k" * 16, compute, 1)


def test_concurrent_workers_compute_an_entry_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    log = tmp_path / "log"
    workers = [ctx.Process(target=_slow_compute, args=(str(tmp_path), str(log))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert log.read_text() == "computed\n"
    assert json.loads((tmp_path / "shared" / f"row0-{'k' * 16}.json").read_text())["row"] == [0.5]
    assert not list((tmp_path / "shared").glob(".*.tmp"))


def test_the_code_fingerprint_is_the_same_in_every_process():
    """Another process (another str hash salt) must find the entries this one stored."""
    import os
    import subprocess
    import sys

    prints = {subprocess.run([sys.executable, "-c", "from cl_bench import shared; print(shared.code_fingerprint())"],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in "12345"}
    assert prints == {shared.code_fingerprint()}

"""Row 0 (the evaluation before the first stage) and the fits that recur, computed once and shared across runs
(cl_bench.run.shared): exact, opt-in per strategy, safe under concurrent workers."""

import dataclasses
import json
import multiprocessing
import time
from pathlib import Path

import pytest

from cl_bench import registry

from cl_bench.run import shared
from cl_bench.config import Budget
from cl_bench.models.lm import PretrainConfig
from cl_bench.run.runner import RunConfig, run
from cl_bench.strategies.full_ft import FullFineTuning
from cl_bench.api.strategy import Strategy


def config(cache, results, strategy, seed=0):
    return RunConfig(stream="small-numbers", strategy=strategy, seed=seed, device="cpu",
                     budget=Budget(steps=1, batch_size=8), pretrain=PretrainConfig(steps=20), results_dir=str(results),
                     cache_dir=str(cache))


def same_result(a: dict, b: dict) -> bool:
    keys = ("accuracy_matrix", "item_results", "extra_accuracy", "routing", "metrics", "run_key")
    return all(a[k] == b[k] for k in keys)


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_shared_row_0_gives_bit_identical_results(small, cache_dir, tmp_path, monkeypatch):
    # seeds no other test uses: nothing is stored for them before
    entries = set((Path(cache_dir) / "shared").glob("row0-*.json"))
    first, _ = run(config(cache_dir, tmp_path / "a", "align-only", seed=101), progress=False, echo=lambda s: None)
    assert first["timing"]["row0_source"] == "computed"
    with_cache, _ = run(config(cache_dir, tmp_path / "a", "lora", seed=101), progress=False, echo=lambda s: None)
    assert with_cache["timing"]["row0_source"] == "stored"
    without, _ = run(dataclasses.replace(config(cache_dir, tmp_path / "b", "lora", seed=101), shared_cache=False),
                     progress=False, echo=lambda s: None)
    assert without["timing"]["row0_source"] == "own"
    assert same_result(with_cache, without)
    monkeypatch.setenv(shared.ENV, "0")  # the environment's override turns sharing off whatever the setting says
    overridden, _ = run(config(cache_dir, tmp_path / "c", "lora", seed=101), progress=False, echo=lambda s: None)
    assert overridden["timing"]["row0_source"] == "own" and same_result(with_cache, overridden)
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


@pytest.mark.slow
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


@pytest.mark.slow
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

    prints = {subprocess.run([sys.executable, "-c", "from cl_bench.run import shared; print(shared.code_fingerprint())"],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in "12345"}
    assert prints == {shared.code_fingerprint()}


# -- fits ------------------------------------------------------------------------------------------------------

def fit_config(cache, results, strategy, seed, steps=3, **options):
    return RunConfig(stream="small-numbers", strategy=strategy, seed=seed, device="cpu",
                     budget=Budget(steps=steps, batch_size=8), pretrain=PretrainConfig(steps=20),
                     results_dir=str(results), cache_dir=str(cache), strategy_options=options)


def sources(doc: dict) -> list[list[str]]:
    return [[f["source"] for f in s.get("shared_fits", [])] for s in doc["stages"]]


@pytest.mark.slow
def test_a_fit_shared_across_strategies_gives_bit_identical_results(small, cache_dir, tmp_path, monkeypatch):
    """full-ft's first stage at MMER's learning rate is MMER's first fine-tune; MMER's fine-tunes are single-ft's
    stages at that rate: each is computed once, and every result is the one computed without sharing."""
    quiet = dict(progress=False, echo=lambda s: None)
    lr = "3e-4"  # MMER's default; its projector rate is full-ft's and given to single-ft
    assert registry.strategies.get("mmer").Config().projector_lr == registry.strategies.get("full-ft").Config().projector_lr
    projector_lr = str(registry.strategies.get("mmer").Config().projector_lr)
    full, _ = run(fit_config(cache_dir, tmp_path / "a", "full-ft", 111, lr=lr), **quiet)
    assert sources(full) == [["computed"], ["computed"]]
    mmer, _ = run(fit_config(cache_dir, tmp_path / "a", "mmer", 111), **quiet)
    assert sources(mmer) == [["stored"], ["computed"]]  # its second fine-tune starts from the base again
    single, _ = run(fit_config(cache_dir, tmp_path / "a", "single-ft", 111, lr=lr, projector_lr=projector_lr), **quiet)
    assert sources(single) == [["stored"], ["stored"]]
    # a stored fit counts what it took when computed: its stage's training time is at least that
    for doc in (mmer, single):
        for stage in doc["stages"]:
            assert stage["train_seconds"] >= sum(f["seconds"] for f in stage["shared_fits"]) - 0.002

    monkeypatch.setenv(shared.ENV, "0")
    for name, doc, options in (("mmer", mmer, {}), ("single-ft", single, {"lr": lr, "projector_lr": projector_lr}),
                               ("full-ft", full, {"lr": lr})):
        alone, _ = run(fit_config(cache_dir, tmp_path / "b", name, 111, **options), **quiet)
        assert sources(alone) == [[], []] and "shared_fits" not in alone["stages"][0]
        assert same_result(doc, alone), name
        assert [s["train_stats"]["first_loss"] for s in doc["stages"]] == \
               [s["train_stats"]["first_loss"] for s in alone["stages"]]


@pytest.mark.slow
def test_a_run_that_differs_only_in_its_evaluation_reuses_every_fit(small, cache_dir, tmp_path):
    quiet = dict(progress=False, echo=lambda s: None)
    full, _ = run(fit_config(cache_dir, tmp_path, "align-only", 112), **quiet)
    assert sources(full) == [["computed"], ["computed"]]
    limited, _ = run(dataclasses.replace(fit_config(cache_dir, tmp_path, "align-only", 112), eval_limit=20), **quiet)
    assert sources(limited) == [["stored"], ["stored"]] and limited["run_key"] != full["run_key"]
    other_budget, _ = run(fit_config(cache_dir, tmp_path, "align-only", 112, steps=4), **quiet)
    assert sources(other_budget) == [["computed"], ["computed"]]


@pytest.mark.slow
def test_full_ft_runs_that_differ_in_lr_share_their_first_alignment_phase(small, cache_dir, tmp_path):
    quiet = dict(progress=False, echo=lambda s: None)
    first, _ = run(fit_config(cache_dir, tmp_path, "full-ft", 114, steps=4, align_fraction="0.5", lr="1e-4"), **quiet)
    assert sources(first) == [["computed", "computed"], ["computed", "computed"]]
    other, _ = run(fit_config(cache_dir, tmp_path, "full-ft", 114, steps=4, align_fraction="0.5", lr="1e-3"), **quiet)
    # the projector's alignment from the base is the same; everything after it trains at another rate
    assert sources(other) == [["stored", "computed"], ["computed", "computed"]]


class PlainSubclass(FullFineTuning):
    """A plug-in built on full-ft (it may add hooks): it does not inherit full-ft's shares_fits."""


@pytest.mark.slow
def test_a_subclass_does_not_inherit_shares_fits(small, cache_dir, tmp_path):
    registry.strategies.register("plain-subclass", "test_shared:PlainSubclass", origin="tests")
    try:
        doc, _ = run(fit_config(cache_dir, tmp_path, "plain-subclass", 113), progress=False, echo=lambda s: None)
    finally:
        registry.strategies.unregister("plain-subclass")
    assert all("shared_fits" not in s for s in doc["stages"])


def tiny_model(seed=0):
    import torch

    torch.manual_seed(seed)
    m = torch.nn.Module()
    m.lm = torch.nn.Linear(4, 4)
    m.projectors = torch.nn.ModuleDict({"image": torch.nn.Linear(3, 4), "audio": torch.nn.Linear(2, 4)})
    return m


def key_of(store, model, lr=1e-3, rng=5, **kw):
    import types

    import torch

    groups = [{"params": list(model.lm.parameters()), "lr": lr}]
    args = dict(steps=5, batch_size=8, warmup_fraction=0.03, seed=1, device=torch.device("cpu"), train_kwargs={})
    args.update(kw)
    torch.manual_seed(rng)  # the global random state the fit would start from
    return store.key(model, types.SimpleNamespace(name="vision", modality="image"), groups, **args)


def test_a_fits_key_hashes_what_determines_it(tmp_path, monkeypatch):
    import types

    import torch

    store = shared.FitStore(tmp_path, {"data": "d"})
    a = key_of(store, tiny_model())
    assert key_of(store, tiny_model()) == a  # the same weights, groups, budget and random state
    other = tiny_model()
    with torch.no_grad():
        other.projectors["audio"].weight.add_(1.0)  # not in the fit's forward pass: the same fit
    assert key_of(store, other) == a
    changes = {}
    for what in ("lm weight", "projector", "lr", "steps", "random state", "threads", "identity"):
        m = tiny_model()
        if what == "lm weight":
            with torch.no_grad():
                m.lm.weight[0, 0] = torch.nextafter(m.lm.weight[0, 0], torch.tensor(1.0))  # one ulp
        if what == "projector":
            with torch.no_grad():
                m.projectors["image"].bias.mul_(2.0)
        if what == "threads":
            threads = torch.get_num_threads()
            torch.set_num_threads(threads + 1)
        try:
            s = shared.FitStore(tmp_path, {"data": "e"}) if what == "identity" else store
            changes[what] = key_of(s, m, lr=2e-3 if what == "lr" else 1e-3, steps=6 if what == "steps" else 5,
                                   rng=6 if what == "random state" else 5)
        finally:
            if what == "threads":
                torch.set_num_threads(threads)
    assert a not in changes.values() and len(set(changes.values())) == len(changes), changes
    assert key_of(store, tiny_model(), train_kwargs={"extra_loss": lambda b: 0.0}) is None  # not plain
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1.0}]  # a parameter outside the model
    assert store.key(tiny_model(), types.SimpleNamespace(name="vision", modality="image"), groups, steps=5,
                     batch_size=8, warmup_fraction=0.0, seed=1, device=torch.device("cpu"), train_kwargs={}) is None
    capped = shared.FitStore(store.directory.parent, {"what": "capped"}, max_mb=0.00001)  # 10 bytes: the LM's 20
    assert key_of(capped, tiny_model()) is None and "not stored" in capped.take_log()[-1]["source"]  # parameters
    monkeypatch.setenv(shared.FIT_CAP_ENV, "0.00001")  # the environment's override of the setting
    overridden = shared.FitStore(store.directory.parent, {"what": "capped"})
    assert key_of(overridden, tiny_model()) is None and "not stored" in overridden.take_log()[-1]["source"]


def _slow_fit(cache: str, log: str, out: str) -> None:
    import torch

    from cl_bench.api.training import TrainStats

    model = tiny_model()
    groups = [{"params": list(model.lm.parameters()), "lr": 1.0}]

    def compute():
        with open(log, "a") as f:
            f.write("computed\n")
        time.sleep(1.0)  # long enough for the other worker to arrive while this one holds the entry's lock
        with torch.no_grad():
            model.lm.weight.add_(torch.randn(4, 4))  # a draw from the global random state, as dropout would
        return TrainStats(5, 2.0, 1.0, 1.0, 0.2, 40, 100, 1e6)

    store = shared.FitStore(Path(cache), {"data": "d"})
    stats = store.fit("f" * 32, model, groups, "vision", torch.device("cpu"), compute)
    Path(out).write_text(json.dumps({"weight": model.lm.weight.tolist(), "next": torch.rand(1).item(),
                                     "stats": stats.last_loss, "log": store.take_log()}))


@pytest.mark.slow
def test_concurrent_workers_compute_a_fit_once_and_get_the_same_state(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    log = tmp_path / "log"
    outs = [tmp_path / f"out{i}" for i in range(2)]
    workers = [ctx.Process(target=_slow_fit, args=(str(tmp_path), str(log), str(o))) for o in outs]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert log.read_text() == "computed\n"
    a, b = (json.loads(o.read_text()) for o in outs)
    # the reader got the computer's weights and the random state the fit left (its next draw is the same)
    assert a["weight"] == b["weight"] and a["next"] == b["next"] and a["stats"] == b["stats"] == 1.0
    assert sorted(x["log"][0]["source"] for x in (a, b)) == ["computed", "stored"]
    assert not list((tmp_path / "shared").glob(".*.tmp"))
    # a damaged entry is computed again
    (tmp_path / "shared" / f"fit-{'f' * 32}.pt").write_bytes(b"not a torch file")
    _slow_fit(str(tmp_path), str(log), str(outs[0]))
    assert log.read_text() == "computed\ncomputed\n"
    assert json.loads(outs[0].read_text())["weight"] == a["weight"]

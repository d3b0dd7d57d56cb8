"""--dtype, gradient checkpointing and what the optimizer holds, for every strategy.

bfloat16/float16 are GPU settings; their code path runs here on the CPU through CLBENCH_CPU_HALF_PRECISION
(the CLI refuses half precision on the CPU otherwise)."""

import torch
from click.testing import CliRunner
import pytest

from cl_bench.run import shared
from cl_bench.cli import main
from cl_bench.config import Budget
from cl_bench.models.lm import PretrainConfig
from cl_bench.run.runner import RunConfig, run
from cl_bench.run.device import CPU_HALF_ENV

MISSION = ("moextend", "mmer", "full-ft", "lora", "adapter", "align-only", "joint", "ewc", "lwf", "replay")


def config(tmp_path, cache_dir, strategy, **kw):
    return RunConfig(stream="small-numbers", strategy=strategy, device="cpu", budget=Budget(steps=4, batch_size=8),
                     pretrain=PretrainConfig(steps=20), results_dir=str(tmp_path / "res"), cache_dir=str(cache_dir),
                     **kw)


def test_half_precision_on_the_cpu_is_one_line(small, cache_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(CPU_HALF_ENV, raising=False)
    out = CliRunner().invoke(main, ["run", "--stream", "small-numbers", "--device", "cpu", "--dtype", "bfloat16",
                                    "--steps", "2", "--batch-size", "8", "--pretrain-steps", "20", "--cache-dir",
                                    str(cache_dir), "--results-dir", str(tmp_path / "res"), "-q"])
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        "Error: --dtype bfloat16 is for GPUs; on the CPU clbench runs float32: drop --dtype or run on --device cuda"]
    assert not (tmp_path / "res" / "runs" / "small-numbers").exists()


def test_the_dtype_is_keyed_only_when_not_float32():
    default, half = RunConfig().identity(), RunConfig(dtype="bfloat16").identity()
    assert "dtype" not in default and "gradient_checkpointing" not in default
    assert half["dtype"] == "bfloat16" and {k: v for k, v in half.items() if k != "dtype"} == default
    with pytest.raises(ValueError, match="RunConfig.dtype must be one of float32, bfloat16, float16"):
        RunConfig(dtype="bf16")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["moextend", "full-ft", "lwf"])
def test_bfloat16_stores_frozen_weights_in_it_and_trains_float32_master_weights(strategy, small, cache_dir, tmp_path,
                                                                               monkeypatch):
    monkeypatch.delenv(CPU_HALF_ENV, raising=False)  # the setting alone allows it (the variable is an override)
    seen = {}

    def inspect(event, s):
        if event == "end":
            seen["lm"] = {n: p.dtype for n, p in s.model.lm.named_parameters()}
            seen["projectors"] = {p.dtype for p in s.model.projectors.parameters()}

    doc, path = run(config(tmp_path, cache_dir, strategy, dtype="bfloat16", cpu_half_precision=True), progress=False,
                    echo=lambda s: None, inspect=inspect)
    assert doc["status"] == "complete" and doc["config"]["dtype"] == "bfloat16"
    assert seen["projectors"] == {torch.float32}  # trained: master weights
    added = {n for n in seen["lm"] if ".additions." in n}
    if strategy == "moextend":  # the pretrained LM frozen in bfloat16; the new experts and rows float32
        assert added and {seen["lm"][n] for n in added} == {torch.float32}
        # the routers were tuned in the extension phase (so float32) and restored to their bfloat16 values
        routers = {n for n in seen["lm"] if n.endswith(".gate.weight") and n not in added}
        assert routers and {d for n, d in seen["lm"].items() if n not in added | routers} == {torch.bfloat16}
    else:  # every LM weight trained: float32
        assert set(seen["lm"].values()) == {torch.float32}
    float32, _ = run(config(tmp_path, cache_dir, strategy), progress=False, echo=lambda s: None)
    assert float32["run_key"] != doc["run_key"]  # another precision is another run


@pytest.mark.slow
def test_float16_scales_its_loss_and_avalanche_refuses_it(small, cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(CPU_HALF_ENV, "1")
    steps = []  # (scaler enabled, its scale) at every scaled optimizer step
    original = torch.amp.GradScaler.step

    def step(self, optimizer, *a, **kw):
        steps.append((self.is_enabled(), self.get_scale()))
        return original(self, optimizer, *a, **kw)

    monkeypatch.setattr(torch.amp.GradScaler, "step", step)
    doc, _ = run(config(tmp_path, cache_dir, "full-ft", dtype="float16"), progress=False, echo=lambda s: None)
    assert doc["status"] == "complete"
    assert steps and all(enabled and scale > 1 for enabled, scale in steps)  # every step through the scaler
    assert all(0.0 <= a <= 1.0 for row in doc["accuracy_matrix"] for a in row)
    with pytest.raises(ValueError, match="float16 needs its loss scaled, .* use --dtype bfloat16"):
        run(config(tmp_path, cache_dir, "ewc", dtype="float16"), progress=False, echo=lambda s: None)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["moextend", "full-ft"])
def test_gradient_checkpointing_changes_no_result(strategy, small, cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(shared.ENV, "0")  # both runs train (a stored fit would run no layer): the test counts the calls
    weights, calls = {}, {"plain": 0, "ckpt": 0}

    def keep(label):
        def inspect(event, s):
            if event == "setup":  # the first layer's attention in training: run twice a step when recomputed
                layer = s.model.lm.model.layers[0].self_attn
                layer.register_forward_hook(lambda m, a, o: calls.__setitem__(label, calls[label] + m.training))
            if event == "end":
                weights[label] = {k: v.clone() for k, v in s.model.lm.state_dict().items()}
        return inspect

    plain, _ = run(config(tmp_path / "a", cache_dir, strategy), progress=False, echo=lambda s: None,
                   inspect=keep("plain"))
    ckpt, _ = run(config(tmp_path / "b", cache_dir, strategy, gradient_checkpointing=True), progress=False,
                  echo=lambda s: None, inspect=keep("ckpt"))
    assert calls["ckpt"] == 2 * calls["plain"] > 0
    assert ckpt["accuracy_matrix"] == plain["accuracy_matrix"]
    assert ckpt["item_results"] == plain["item_results"]
    assert weights["ckpt"].keys() == weights["plain"].keys()
    assert all(torch.equal(weights["ckpt"][k], weights["plain"][k]) for k in weights["plain"])


@pytest.mark.slow
@pytest.mark.parametrize("strategy", MISSION)
def test_optimizer_states_cover_only_trainable_parameters(strategy, every_strategy):
    """Every optimizer a strategy steps holds AdamW's two float32 states for parameters that train, and for no
    frozen one (conftest's every_strategy records each stepped optimizer)."""
    doc, stepped = every_strategy[strategy]
    assert stepped, f"{strategy}: no optimizer stepped"
    # the memory plan counted the largest phase's trainable parameters (MoExtend's within a calibration's few
    # rows: the plan extends the same layers every stage, the run the ones its routing chose)
    trained = max(o["numel"] for o in stepped)
    assert abs(doc["plan"]["parameters"]["trainable"] - trained) <= 0.001 * trained
    for o in stepped:
        # nothing frozen is handed to an optimizer; a trainable tensor that got no gradient yet (joint: a modality
        # no batch of 4 steps drew) has no state either
        assert o["frozen"] == 0 and 0 < o["with_state"] <= o["params"]
        assert o["states_match"] and o["float32"]

"""The memory plan (cl_bench.run.plan, `clbench plan`): its activation formula against what autograd saves, its
parameter counts against what the strategies train, and its peak against measured peaks (bench/moextend_cost.py's
children, at the bench's three sizes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoConfig, AutoModelForCausalLM

from cl_bench import registry
from cl_bench.cli import main
from cl_bench.run.plan import activation_elements

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"mixtral": dict(num_local_experts=8, intermediate_size=512),
          "olmoe": dict(num_experts=8, intermediate_size=512),
          "qwen2_moe": dict(num_experts=8, moe_intermediate_size=512, intermediate_size=512,
                            shared_expert_intermediate_size=384),
          "qwen3_moe": dict(num_experts=8, moe_intermediate_size=512, intermediate_size=512),
          "granitemoe": dict(num_local_experts=8, intermediate_size=512)}


def saved_elements(lm, batch: int, length: int, frozen: bool) -> int:
    """Bytes / 4 that autograd saves for the backward pass of one forward (weights not counted); `frozen`: no
    weight trains, the gradient flows to the input embeddings (as to a projector's tokens)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, lm.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    lm.train().requires_grad_(not frozen)
    embeds = lm.get_input_embeddings()(ids).detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lm(inputs_embeds=embeds, labels=ids)
    weights = {p.untyped_storage().data_ptr() for p in lm.parameters()}
    return sum(v for k, v in seen.items() if k not in weights) // 4


@pytest.mark.parametrize("model_type", sorted(SHAPES))
@pytest.mark.parametrize("hidden,layers,k", [(128, 2, 2), (256, 3, 1)])
@pytest.mark.parametrize("frozen", [False, True])
def test_the_activation_formula_matches_what_autograd_saves(model_type, hidden, layers, k, frozen):
    config = AutoConfig.for_model(model_type, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                                  num_key_value_heads=2, num_experts_per_tok=k, vocab_size=300,
                                  max_position_embeddings=128, **SHAPES[model_type])
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(config)
    lm.set_experts_implementation("eager")
    planned, saved = activation_elements(lm, 6 * 24, frozen=frozen), saved_elements(lm, 6, 24, frozen)
    assert abs(planned / saved - 1) < 0.03, (planned, saved)


def plan_json(*args) -> dict:
    out = CliRunner().invoke(main, ["plan", "--json", *args])
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


@pytest.mark.slow
def test_plan_prints_a_table_for_one_strategy_and_a_row_per_strategy_for_all(small, cache_dir):
    out = CliRunner().invoke(main, ["plan", "--stream", "small-numbers", "--strategy", "moextend", "--device", "cpu",
                                    "--cache-dir", str(cache_dir)])
    assert out.exit_code == 0, out.output
    for row in ("trainable", "added", "active per token", "gradients", "optimizer states", "activations", "peak",
                "device memory"):
        assert any(line.startswith(row) for line in out.output.splitlines()), row
    every = CliRunner().invoke(main, ["plan", "--stream", "small-numbers", "--strategy", "all", "--device", "cpu",
                                      "--cache-dir", str(cache_dir)])
    assert every.exit_code == 0, every.output
    names = [line.split()[0] for line in every.output.splitlines()[1:-1]]
    assert names == sorted(registry.strategies.names())


@pytest.mark.slow
def test_a_run_prints_its_plan_first_and_records_it(small, cache_dir, tmp_path):
    out = CliRunner().invoke(main, ["run", "--stream", "small-numbers", "--strategy", "lora", "--device", "cpu",
                                    "--steps", "2", "--batch-size", "8", "--pretrain-steps", "20", "--cache-dir",
                                    str(cache_dir), "--results-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if x.startswith("plan: "))
    assert "trainable" in line and "peak about" in line and "fits" in line
    doc = json.loads(next((tmp_path / "runs").rglob("*.json")).read_text())
    planned = plan_json("--stream", "small-numbers", "--strategy", "lora", "--device", "cpu", "--batch-size", "8",
                        "--cache-dir", str(cache_dir))
    assert doc["plan"]["parameters"] == planned["parameters"]
    assert doc["plan"]["parameters"]["added"] == doc["stages"][-1]["cost"]["added"]


def test_a_checkpoint_is_planned_from_its_config_alone(small, cache_dir, tmp_path):
    """A directory holding only config.json and a tokenizer plans (no weights read): Mixtral-8x7B's shape, 46.7B
    parameters, does not fit one 80 GB GPU under full fine-tuning in bfloat16; MoExtend trains a few percent."""
    from helpers_checkpoints import save_checkpoint


    from cl_bench.streams import resolve

    small_stream = resolve.load("small-numbers", cache_dir=cache_dir, progress=False)[1]
    save_checkpoint(tmp_path / "ckpt", "mixtral", small_stream)
    for f in (tmp_path / "ckpt").glob("*.safetensors"):
        f.unlink()
    big = AutoConfig.for_model("mixtral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=8, num_local_experts=8,
                               num_experts_per_tok=2, vocab_size=32000)
    big.save_pretrained(tmp_path / "ckpt")
    args = ["--stream", "small-numbers", "--model", str(tmp_path / "ckpt"), "--device", "cuda", "--dtype",
            "bfloat16", "--memory-gb", "80", "--cache-dir", str(cache_dir)]
    full = plan_json(*args, "--strategy", "full-ft")
    moextend = plan_json(*args, "--strategy", "moextend")
    assert 46.6e9 < full["parameters"]["lm"] < 46.8e9
    assert full["bytes"]["peak"] > 80e9 and full["capacity_bytes"] == 80e9
    assert 0 < moextend["parameters"]["trainable"] < 0.1 * full["parameters"]["trainable"]
    assert moextend["bytes"]["weights"] < 0.6 * full["bytes"]["weights"]  # frozen in bfloat16, not float32 masters
    out = CliRunner().invoke(main, ["plan", *args, "--strategy", "full-ft"])
    assert "does NOT fit" in out.output


def test_an_unsupported_family_is_one_line(small, cache_dir, tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "llama")
    out = CliRunner().invoke(main, ["plan", "--stream", "small-numbers", "--model", str(tmp_path / "llama"),
                                    "--device", "cpu", "--cache-dir", str(cache_dir)])
    assert out.exit_code == 2
    assert len(out.output.strip().splitlines()) == 1 and "llama" in out.output and "supported" in out.output


@pytest.mark.slow
@pytest.mark.parametrize("hidden", [128, 512])
def test_the_planned_peak_is_within_20_percent_of_the_measured_peak(hidden):
    """bench/moextend_cost.py's measurement (a fresh process, glibc's mmap threshold fixed) of MoExtend learning
    vision-audio's first experience, 2 steps of the default batch (32), at the bench's two smaller sizes; full
    fine-tuning at the smallest. The largest size (hidden 1024, most of a minute) and full fine-tuning at the larger
    ones (2-7 GB) are the bench's: `python bench/moextend_cost.py` measures them."""
    import os

    for strategy in ("moextend", "full-ft") if hidden == 128 else ("moextend",):
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "moextend_cost.py"), "--child", str(hidden),
                              strategy, "--steps", "2", "--batch", "32"], capture_output=True, text=True, check=True,
                             env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
        row = json.loads(out.stdout.splitlines()[-1])
        assert abs(row["planned_peak"] / row["measured_peak"] - 1) <= 0.20, (strategy, row)

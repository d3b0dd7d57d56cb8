"""The real-size path at tiny size: random checkpoints of every supported transformers MoE family, each with
its family's real tokenizer kind, saved with save_pretrained as a user's directory looks, run by `clbench run`
with each strategy whose code differs by family.

Every run loads the checkpoint and its tokenizer (cl_bench/run/base.py) and records routing on each evaluation
(cl_bench/models/routing.py finds each family's router: `gate`, or `router` in Granite-MoE), so any one run per
family covers those. The strategies run on every family, and why:
- moextend: its surgery (strategies/moextend/surgery.py) wraps each family's sparse block where the family keeps
  it (`mlp`, `block_sparse_moe`) and re-implements the family's routing: softmax-then-top-k or Granite's
  top-k-of-logits, renormalised or not (`norm_topk_prob`), Mixtral's float32 routing weights, Qwen2-MoE's
  shared expert; the routing recorder then reads the extended blocks, not the routers.
- lora: PEFT's target_parameters name the fused expert tensors under the family's block attribute
  (`block_sparse_moe.experts.*` in Granite-MoE; strategies/lora) and its attention projections.
- adapter: the bottleneck adapters are found and hooked after the block each family keeps under its own
  attribute (strategies/adapters/modules.py: MLP_SLOTS, mlp_of, decoder_layers).
- mmer: task vectors, sign election and bit-packed masks over every one of the family's named parameters
  (Granite's `block_sparse_moe.router`, Qwen2-MoE's shared expert, its gate and q/k/v biases, the q/k norms of
  OLMoE and Qwen3-MoE), written and read back as safetensors by name.
- full-ft: the plain reference, every LM parameter trained with nothing added: a failure in it and not in the
  others points at loading, training or evaluation, not at a strategy's family code.
Left out: align-only trains only the modality projector and leaves the LM frozen; joint (a copy of the whole
state dict per stage), ewc, lwf and replay (avalanche's loop over every LM parameter) train the LM as full-ft does
and look nothing up by family, so on a checkpoint they would run only what the full-ft run already covers; their
own tests (test_joint, test_avalanche_cl) run them on the preset model.
"""

import json

import pytest
import torch
from click.testing import CliRunner

from cl_bench.cli import main
from cl_bench.models.families import FAMILIES
from cl_bench.results import check_result
from helpers_checkpoints import FAMILIES as SHAPES, save_checkpoint

FAMILY_SENSITIVE = ("moextend", "lora", "adapter", "mmer", "full-ft")  # the module's docstring says why each
PRE_TOKENIZERS = {"sentencepiece": "Metaspace", "byte-bpe": "ByteLevel"}  # both BPE models


@pytest.fixture(scope="module")
def small_stream(cache_dir, small):
    from cl_bench.streams import resolve

    return resolve.load("small-numbers", cache_dir=cache_dir, progress=False)[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, small_stream):
    root = tmp_path_factory.mktemp("checkpoints")
    return {mt: save_checkpoint(root / mt, mt, small_stream) for mt in FAMILIES}


def test_the_tests_cover_every_supported_family():
    assert set(SHAPES) == set(FAMILIES)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_a_checkpoint_loads_with_its_own_tokenizer_and_the_cpu_expert_kernel(model_type, checkpoints, small_stream,
                                                                             cache_dir):
    from cl_bench.api.training import TaskData
    from cl_bench.models.encoders import build_encoder
    from cl_bench.run.base import load_base
    from cl_bench.models.multimodal import MultimodalLM

    base = load_base(str(checkpoints[model_type]), small_stream, torch.device("cpu"), cache_dir)
    assert base.info["model_type"] == model_type and base.info["source"] == "checkpoint"
    backend = json.loads(base.tokenizer.backend_tokenizer.to_str())  # the checkpoint's own tokenizer, as saved
    assert backend["model"]["type"] == "BPE" and backend["pre_tokenizer"]["type"] == PRE_TOKENIZERS[SHAPES[model_type][1]]
    assert base.lm.config._experts_implementation == "eager"  # not grouped_mm, 6-30x slower on a CPU
    model = MultimodalLM(base.lm, base.tokenizer, {"audio": build_encoder("audio")})
    data = TaskData(small_stream.experiences[1].test, model, "audio")
    answers = [len(s) - n for s, n in zip(data.seqs, data.n_prompt)]
    assert max(answers) > 1  # answers of several tokens, scored by exact match over all of them


@pytest.mark.slow
@pytest.mark.parametrize("strategy", FAMILY_SENSITIVE)
@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_every_family_sensitive_strategy_runs_on_every_family(model_type, strategy, checkpoints, small_stream,
                                                             cache_dir, tmp_path):
    res = tmp_path / "res"
    out = CliRunner().invoke(main, ["run", "--model", str(checkpoints[model_type]), "--stream", "small-numbers",
                                    "--strategy", strategy, "--steps", "2", "--batch-size", "4", "--device", "cpu",
                                    "--eval-limit", "8", "--cache-dir", str(cache_dir), "--results-dir", str(res),
                                    "-q"])
    assert out.exit_code == 0, out.output
    (f,) = res.rglob("*.json")
    doc = json.loads(f.read_text())
    assert check_result(doc) == [] and doc["status"] == "complete"
    assert doc["base_model"]["model_type"] == model_type and f.name.startswith(f"{model_type}-seed0-")


def test_an_unsupported_family_is_one_line_naming_it(tmp_path, small_stream, cache_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    from helpers_checkpoints import train_tokenizer, stream_texts

    tok = train_tokenizer("byte-bpe", stream_texts(small_stream))
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1))
    lm.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    out = CliRunner().invoke(main, ["run", "--model", str(tmp_path / "llama"), "--stream", "small-numbers",
                                    "--cache-dir", str(cache_dir), "--results-dir", str(tmp_path / "res"), "-q"])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert (f"--model {tmp_path / 'llama'}: model type 'llama' is not a supported MoE family; clbench runs "
            "mixtral, olmoe, qwen2_moe, qwen3_moe, granitemoe") in out.output


CHAT_TEMPLATE = ("{% for m in messages %}<|user|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.mark.slow
def test_prompts_follow_the_tokenizers_chat_template_when_asked(small_stream, cache_dir, tmp_path):
    """--prompt-format chat: the prompt is the user's turn of the checkpoint's own template, the answer the
    assistant's reply; a tokenizer without a template is one line; chat runs are keyed apart."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cl_bench.api.training import TaskData
    from cl_bench.models.multimodal import MultimodalLM

    directory = save_checkpoint(tmp_path / "chat", "qwen3_moe", small_stream)
    tok = AutoTokenizer.from_pretrained(directory)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(directory)
    model = MultimodalLM(AutoModelForCausalLM.from_pretrained(directory), tok, {})
    task = small_stream.base
    model.prompt_format = "chat"
    chat = TaskData(task.train, model, "text")
    text = tok.decode(chat.seqs[0])
    assert text.startswith("<|user|>\n" + task.train[0]["prompt"]) and "<|assistant|>\n" in text
    # an answer of several tokens ends with the tokenizer's EOS, learned like its words (one-token answers do not)
    eos = tok.eos_token if chat.ends else ""
    assert text.endswith("<|assistant|>\n" + task.train[0]["answer"] + eos)
    args = ["run", "--stream", "small-numbers", "--strategy", "moextend", "--model", str(directory), "--steps", "2",
            "--batch-size", "8", "--device", "cpu", "--cache-dir", str(cache_dir), "--results-dir", str(tmp_path / "r"),
            "-q"]
    out = CliRunner().invoke(main, [*args, "--prompt-format", "chat"])
    assert out.exit_code == 0, out.output
    plain = CliRunner().invoke(main, args)
    assert plain.exit_code == 0, plain.output
    files = sorted((tmp_path / "r" / "runs").rglob("*.json"))
    assert len(files) == 2  # another key
    assert {json.loads(f.read_text())["config"]["prompt_format"] for f in files} == {"chat", "plain"}
    tok.chat_template = None
    tok.save_pretrained(directory)
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    none = CliRunner().invoke(main, [*args, "--prompt-format", "chat"])
    assert none.exit_code == 2 and len(none.output.strip().splitlines()) == 1
    assert "has no chat template" in none.output

"""The public API a plug-in lives on (cl_bench.__all__): every name documented, the plug-in template importing
nothing else, task builders with chance from a task's own answers, another stream's tasks by name, footprint
helpers the plan counts, state helpers for resuming, and unknown evaluation words named."""

import ast
import dataclasses
import io
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import cl_bench
from cl_bench import Stream, TaskStream

TEMPLATE = Path(__file__).parent.parent / "examples" / "plugin-template"
BUILD_OUTPUT = {"build", "dist", "__pycache__"}  # what pip leaves in the template's folder


def test_every_public_name_loads_and_says_what_it_is():
    for name in cl_bench.__all__:
        value = getattr(cl_bench, name)
        if callable(value):
            assert (value.__doc__ or "").strip(), f"cl_bench.{name} has no docstring"


def template_files() -> list[Path]:
    return [f for f in sorted(TEMPLATE.rglob("*.py"))
            if not BUILD_OUTPUT & set(f.relative_to(TEMPLATE).parts)
            and not any(p.endswith(".egg-info") for p in f.relative_to(TEMPLATE).parts)]


def test_the_plugin_template_imports_only_public_names():
    files = template_files()
    assert {f.name for f in files} >= {"stream.py", "strategy.py", "modality.py"}
    public = set(cl_bench.__all__)
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):  # function-level imports included
            where = f"{f.relative_to(TEMPLATE)}:{node.lineno}" if hasattr(node, "lineno") else str(f)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cl_bench":
                assert node.module == "cl_bench", f"{where}: from {node.module} import ... (use cl_bench's names)"
                names = {a.name for a in node.names}
                assert names <= public, f"{where}: {sorted(names - public)} not in cl_bench.__all__"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    assert a.name.split(".")[0] != "cl_bench" or a.name == "cl_bench", f"{where}: import {a.name}"


# -- chance from a task's own answers ---------------------------------------------------------------------------
def table(answers_by_split: dict, template: str = "read") -> dict:
    return {s: {"prompt": ["what is the number ?"] * len(a), "answer": list(a), "template": [template] * len(a)}
            for s, a in answers_by_split.items()}


def test_chance_of_a_three_class_table_is_a_third():
    d = table({"train": ["0", "1", "2", "2"], "val": ["1"], "test": ["2", "2", "0"]})
    assert cl_bench.chance_level(d) == pytest.approx(1 / 3)
    # no template column: one question form
    assert cl_bench.chance_level({s: {"answer": v["answer"]} for s, v in d.items()}) == pytest.approx(1 / 3)


def test_chance_is_per_question_form_averaged_over_test_items():
    """Number questions about values 0-2: reading has 3 answers, adding 0-9 has 12; two reads and one add in the
    test split: (1/3 + 1/3 + 1/12) / 3."""
    d = {s: {"answer": [], "template": []} for s in ("train", "val", "test")}
    for a in range(3):
        for b in range(10):
            d["train"]["answer"].append(str(a + b))
            d["train"]["template"].append("add")
        d["train"]["answer"].append(str(a))
        d["train"]["template"].append("read")
    d["test"] = {"answer": ["0", "2", "5"], "template": ["read", "read", "add"]}
    assert cl_bench.chance_level(d) == pytest.approx((1 / 3 + 1 / 3 + 1 / 12) / 3)


def test_number_tasks_keep_their_chance_where_every_answer_occurs():
    """For number questions about 0-9 the answers each form has in the data are the ones it can have: the chance
    is bit for bit the one clbench recorded before (the published streams' values)."""
    from cl_bench.streams import numbers

    rows = cl_bench.number_questions([v % 10 for v in range(3000)], seed=0)
    d = {"train": {"answer": [a for *_, a in rows], "template": [t for _, t, _, _ in rows]}}
    d["val"] = d["test"] = {"answer": d["train"]["answer"][:500], "template": d["train"]["template"][:500]}
    assert cl_bench.chance_level(d) == numbers.chance_level(d["test"]["template"])


def test_a_three_class_number_task_is_not_given_the_chance_of_ten_numbers():
    from datasets import Dataset

    rows = cl_bench.number_questions([v % 3 for v in range(300)], seed=1)
    split = Dataset.from_dict({"input": [np.zeros((8, 8), np.float32)] * len(rows),
                               "template": [t for _, t, _, _ in rows], "prompt": [p for *_, p, _ in rows],
                               "answer": [a for *_, a in rows]})
    exp = cl_bench.number_experience("vision", "image", "digit-questions", {"train": split, "val": split,
                                                                            "test": split})
    assert exp.chance == pytest.approx(cl_bench.chance_level({"train": split, "val": split, "test": split}))
    assert 0.25 < exp.chance < 0.3  # not 0.08: reading a value 0-2 is a guess among 3


def test_task_experience_takes_answers_and_forms_from_its_data():
    from datasets import Dataset

    d = {s: Dataset.from_dict(v) for s, v in table({"train": ["cat", "dog", "eel"], "val": ["dog"],
                                                     "test": ["eel", "cat"]}).items()}
    exp = cl_bench.task_experience("animals", "text", "animal-questions", d)
    assert exp.answer_set == ("cat", "dog", "eel") and exp.chance == pytest.approx(1 / 3)
    assert exp.prompt_templates == {"read": "what is the number ?"}


# -- another stream's tasks, by name -----------------------------------------------------------------------------
class TinyTable(Stream):
    """Text number questions, then a three-class table of 8x8 images (registered by the tests only)."""

    name = "tiny-table"
    tasks: ClassVar[dict[str, str]] = {"vision": "image"}

    def build(self, cache_dir=None, progress=True):
        from datasets import Dataset

        def split(n, seed):
            rng = np.random.default_rng(seed)
            labels = [int(v) for v in rng.integers(0, 3, n)]
            return Dataset.from_dict({"input": [np.full((8, 8), v, np.float32) for v in labels],
                                      "prompt": ["the number is <input> . what is the number ?"] * n,
                                      "answer": [str(v) for v in labels], "template": ["read"] * n})

        vision = cl_bench.task_experience("vision", "image", "digit-questions",
                                          {"train": split(30, 0), "val": split(6, 1), "test": split(9, 2)})
        text = cl_bench.number_experience("text", "text", "number-questions", cl_bench.build_text())
        return TaskStream(self.name, text, (vision,))


@pytest.fixture
def tiny_table():
    from cl_bench import registry

    registry.streams.register("tiny-table", "test_public_api:TinyTable", origin="tests")
    yield
    registry.streams.unregister("tiny-table")


def test_stream_tasks_gives_a_registered_streams_built_tasks(tiny_table, tmp_path):
    from cl_bench.registry import UnknownName

    tasks = cl_bench.stream_tasks("tiny-table", cache_dir=tmp_path)
    assert list(tasks) == ["text", "vision"]
    assert tasks["vision"].chance == pytest.approx(1 / 3) and tasks["vision"].answer_set == ("0", "1", "2")
    assert len(tasks["vision"].test) == 9  # the built task, test split included: the plug-in's stream owns it
    with pytest.raises(UnknownName, match="tiny-tabel"):
        cl_bench.stream_tasks("tiny-tabel")


# -- footprints --------------------------------------------------------------------------------------------------
def meta_model():
    """A mixtral-tiny on the meta device with an image projector, as the plan builds it."""
    import torch

    from cl_bench.models.lm import preset_config, word_tokenizer
    from cl_bench.models.multimodal import MultimodalLM, Projector
    from cl_bench.run.plan import meta_lm

    tok = word_tokenizer([str(i) for i in range(30)])
    lm = meta_lm(preset_config("mixtral-tiny", len(tok), tok))
    with torch.device("meta"):
        model = MultimodalLM(lm, tok, {})
        model.projectors = torch.nn.ModuleDict({"image": Projector(64, lm.config.hidden_size)})
    return model


def numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.slow  # PEFT on the meta model
def test_lora_footprint_counts_what_peft_adds():
    """The helper, without PEFT, counts the built-in LoRA's adapters (PEFT's own modules) exactly."""
    from cl_bench import registry

    lora = registry.strategies.get("lora")()
    theirs_model, ours_model = meta_model(), meta_model()
    theirs = lora.footprint(theirs_model, "image")
    c = lora.config
    ours = cl_bench.lora_footprint(ours_model, "image", rank=c.rank, target_modules=c.target_modules,
                                   target_parameters=c.target_parameters, name="shared")
    assert ours.trainable == theirs.trainable and not ours.base_frozen
    assert numel(ours_model.lm) == numel(theirs_model.lm)  # the plan's totals hold the adapter
    # the same adapter in the next stage: trained again, not added again
    assert cl_bench.lora_footprint(ours_model, "image", rank=c.rank, target_modules=c.target_modules,
                                   target_parameters=c.target_parameters, name="shared").trainable == ours.trainable
    assert numel(ours_model.lm) == numel(theirs_model.lm)


def test_lora_footprint_by_hand():
    """Rank 2 on q_proj (128 -> 128) of 4 layers, and the projector (64 -> 128 -> 128, with biases)."""
    fp = cl_bench.lora_footprint(meta_model(), "image", rank=2, target_modules=["q_proj"])
    assert fp.trainable == 4 * 2 * (128 + 128) + (64 * 128 + 128) + (128 * 128 + 128)
    assert fp.largest == 128 * 128  # the projector's second weight
    experts = cl_bench.lora_footprint(meta_model(), "image", rank=2, target_modules=(),
                                      target_parameters="mlp.experts.down_proj", projector_trains=False)
    assert experts.trainable == 4 * 4 * 2 * (128 + 256)  # 4 layers x 4 experts x r x (hidden + intermediate)
    with pytest.raises(ValueError, match="'qproj' names no linear layer"):
        cl_bench.lora_footprint(meta_model(), "image", rank=4, target_modules="qproj")


@pytest.mark.parametrize("placement, per_layer", [("pfeiffer", 1), ("houlsby", 2)])
def test_adapter_footprint_counts_what_the_adapters_add(placement, per_layer):
    from cl_bench import registry

    cls = registry.strategies.get("adapter")
    adapter = cls(dataclasses.replace(cls.Config(), placement=placement))
    theirs = adapter.footprint(meta_model(), "image")
    ours = cl_bench.adapter_footprint(meta_model(), "image", reduction_factor=adapter.config.reduction_factor,
                                      per_layer=per_layer)
    assert ours.trainable == theirs.trainable and ours.base_frozen


def test_modules_footprint_counts_new_modules_once():
    import torch

    model = meta_model()
    before = numel(model.lm)
    with torch.device("meta"):
        head = torch.nn.Linear(128, 10)
    fp = cl_bench.modules_footprint(model, "image", {"head": head}, held_bytes=7)
    assert fp.trainable == 128 * 10 + 10 + numel(model.projectors["image"]) and fp.held_bytes == 7
    assert numel(model.lm) == before + 1290
    cl_bench.modules_footprint(model, "image", {"head": head})
    assert numel(model.lm) == before + 1290


class LoRAPlugin(cl_bench.Strategy):
    """A plug-in LoRA that plans itself with cl_bench.lora_footprint (registered by the tests only)."""

    def learn(self, experience):
        return {}

    def footprint(self, model, modality):
        return cl_bench.lora_footprint(model, modality, rank=8, target_modules="q_proj,k_proj,v_proj,o_proj",
                                       target_parameters="mlp.experts.gate_up_proj,mlp.experts.down_proj")


@pytest.mark.slow
def test_plan_shows_a_lora_plugin_with_its_real_trainable_count(tiny_table, tmp_path):
    from cl_bench import registry
    from cl_bench.run.config import RunConfig
    from cl_bench.run.plan import plan_run

    registry.strategies.register("lora-plugin", "test_public_api:LoRAPlugin", origin="tests")
    try:
        plans = {s: plan_run(RunConfig(stream="tiny-table", strategy=s, device="cpu", cache_dir=str(tmp_path)))
                 for s in ("lora-plugin", "lora", "full-ft")}
    finally:
        registry.strategies.unregister("lora-plugin")
    plugin, builtin, full = (plans[s].parameters for s in ("lora-plugin", "lora", "full-ft"))
    assert plugin["trainable"] == builtin["trainable"] < full["trainable"] / 5
    assert plugin["total"] == builtin["total"] and not any("full" in n for n in plans["lora-plugin"].notes)


# -- resuming ----------------------------------------------------------------------------------------------------
def test_state_helpers_carry_json_in_a_tensor():
    import torch

    value = {"stage": 2, "chosen": {"vision": [0.5, 1.0]}, "name": "é"}
    t = cl_bench.encode_state(value)
    assert t.dtype == torch.uint8 and t.dim() == 1
    assert cl_bench.decode_state(t) == value
    buf = io.BytesIO()  # a saved state is loaded with weights_only=True

    torch.save({"s": t}, buf)
    buf.seek(0)
    assert cl_bench.decode_state(torch.load(buf, weights_only=True)["s"]) == value


# -- unknown words -----------------------------------------------------------------------------------------------
def test_unknown_evaluation_words_are_named():
    from cl_bench import Experience
    from cl_bench.models.lm import UnknownWordWarning, stream_words, unknown_words

    def task(name, modality, test_prompt, test_answer):
        train = {"prompt": ["the number is <input> . what is one ?"], "answer": ["1"], "template": ["read"]}
        test = {"prompt": [test_prompt], "answer": [test_answer], "template": ["read"]}
        return Experience(name=name, modality=modality, task="q", train=train, val=train, test=test,
                          prompt_templates={"read": "what is one ?"}, answer_set=("1", "11"), chance=0.5)

    ts = TaskStream("s", task("text", "text", "what is one ?", "1"),
                    (task("vision", "image", "the number is <input>. what is eleven ?", "11"),))
    assert unknown_words(ts, ["the", "number", "is", ".", "what", "one", "?", "1"]) == {
        "eleven": ["vision test"], "11": ["vision test"]}
    with pytest.warns(UnknownWordWarning, match=r"'eleven' \(vision test\); '11' \(vision test\)"):
        words = stream_words(ts)
    assert "eleven" not in words and "<input>" not in words
    known = TaskStream("s", task("text", "text", "what is one ?", "1"),
                       (task("vision", "image", "the number is <input> . what is one ?", "1"),))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream_words(known)

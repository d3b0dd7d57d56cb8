"""Generated-answer scoring: the scorer's rules (cl_bench.analysis.scoring), greedy decoding (api.training.generate),
the run option and its key, the result file's decoded answers, and the leaderboard's label."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cl_bench.analysis.scoring import SCORER, SCORER_VERSION, normalise, rescore, score


# -- the scorer's rules, one by one ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, normal", [
    # 1. case and Unicode forms
    ("Seven", "7"), ("CAT", "cat"), ("\uff17", "7"),  # a full-width 7
    # 2. punctuation around and between words, but not what belongs to a number
    ("7.", "7"), ("(7)", "7"), ('"seven"', "7"), ("seven, eight", "7 8"), ("7, 8", "7 8"), ("...7", "7"),
    ("3.5.", "3.5"), ("-7", "-7"), (".5", ".5"), ("50%", "50%"), ("1/2", "1/2"), ("new-york", "new york"),
    # 3. whitespace
    ("  red \t  car ", "red car"),
    # 4. a leading article, when a word follows it
    ("The cat", "cat"), ("an apple", "apple"), ("a", "a"), ("the A", "a"), ("cat the", "cat the"),
    # 5. numbers: digit forms and number words up to 999
    ("007", "7"), ("+7", "7"), ("-0", "0"), ("1,000", "1000"), ("1,5", "1,5"), ("zero", "0"), ("twelve", "12"),
    ("seventy", "70"), ("twenty one", "21"), ("Twenty-One!", "21"), ("one hundred", "100"),
    ("three hundred and five", "305"), ("nine hundred ninety-nine", "999"), ("one two three", "1 2 3"),
    ("nineteen ninety", "19 90"), ("one hundred and", "100 and"), ("seven apples", "7 apples"),
    # what is deliberately left as it is
    ("the number seven", "number 7"), ("seventh", "seventh"), ("a hundred", "hundred"), ("minus seven", "minus 7"),
    ("7.0", "7.0"), ("one thousand", "1 thousand"),
])
def test_each_rule_of_the_normal_form(text, normal):
    assert normalise(text) == normal


@pytest.mark.parametrize("prediction, reference", [
    ("Seven.", "7"), (" 7 ", "7"), ("the 7", "7"), ("twenty-one", "21"), ("Twenty One", "twenty-one"),
    ("(b)", "B"), ("The Red Car!", "red car"), ("1,000", "1000"), ("007", "7"),
])
def test_answers_that_differ_only_in_form_match(prediction, reference):
    assert score(prediction, reference)


@pytest.mark.parametrize("prediction, reference", [
    ("17", "7"), ("seventy", "seven"), ("seventeen", "7"), ("71", "seventy"), ("-7", "7"), ("7.0", "7"),
    ("the number seven", "7"), ("7 8", "78"), ("50%", "50"), ("", "0"), ("7 7", "7"), ("twenty", "twenty one"),
    ("a", "the"), ("3.5", "35"),
])
def test_answers_that_differ_in_content_do_not_match(prediction, reference):
    assert not score(prediction, reference)


def test_the_scorer_is_named_and_versioned():
    assert (SCORER, SCORER_VERSION) == ("normalised-exact-match", 1)


def test_rescore_gives_the_accuracy_matrix_of_stored_answers():
    references = [["7", "1"], ["21", "3", "0", "4"]]
    predictions = [[["seven", "2"], ["twenty one", "3", "zero", "x"]],
                   [["7", "1."], ["21", "three", "1", "4"]]]
    assert rescore(predictions, references) == [[0.5, 0.75], [1.0, 0.75]]
    with pytest.raises(ValueError, match="covers 1 tasks"):
        rescore([[["7"]]], references)


def test_the_scorer_is_torch_free():
    import subprocess
    import sys

    code = ("import sys; import cl_bench.analysis.scoring; "
            "sys.exit(1 if any(m == 'torch' or m.startswith('torch.') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- greedy decoding -----------------------------------------------------------------------------------------------
WORDS = ["what", "is", "three", "plus", "four", "ten", "and", "eleven", "?", "7", "21", "seven", ".", "twenty", "one",
         "junk"]


def scripted(scripts: dict[str, str]):
    """A MultimodalLM over a word tokenizer whose 'LM' answers each prompt by script: after a prompt's "?", the
    continuation of scripts[the word before "?"] (words), then [EOS]. Its embedding is one-hot, so the logits at
    position t read only the tokens up to t, as a causal LM's do."""
    import torch
    from torch import nn

    from cl_bench.models.lm import word_tokenizer
    from cl_bench.models.multimodal import MultimodalLM

    tok = word_tokenizer(WORDS)
    V = len(tok)
    ask = tok.convert_tokens_to_ids("?")
    by_word = {tok.convert_tokens_to_ids(k): tok.convert_tokens_to_ids(v.split()) for k, v in scripts.items()}

    class ScriptedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(hidden_size=V)
            self.embed = nn.Embedding(V, V)
            self.embed.weight.data = torch.eye(V)
            self.calls = 0

        def get_input_embeddings(self):
            return self.embed

        def forward(self, inputs_embeds, attention_mask=None, **kwargs):
            self.calls += 1
            ids = inputs_embeds.argmax(-1)  # (B, L)
            logits = torch.zeros(*ids.shape, V)
            for b in range(ids.shape[0]):
                start, script = None, []
                for t in range(ids.shape[1]):
                    if ids[b, t] == ask:
                        start, script = t, by_word.get(int(ids[b, t - 1]), [])
                    if start is not None:
                        k = t - start  # answer tokens already written after the "?"
                        logits[b, t, script[k] if k < len(script) else tok.eos_token_id] = 1.0
            return SimpleNamespace(logits=logits)

    return MultimodalLM(ScriptedLM(), tok, {})


def task_data(model, prompts: list[str], answers: list[str]):
    from cl_bench.api.training import TaskData

    return TaskData({"prompt": prompts, "answer": answers}, model, "text")


def test_decoding_stops_at_the_end_of_sequence_token_and_reads_each_row_alone():
    import torch

    from cl_bench.api.training import generate

    model = scripted({"four": "seven .", "eleven": "twenty one", "ten": "junk junk junk junk junk"})
    prompts = ["what is three plus four ?", "ten and eleven ?", "ten ?"]  # prompts of three lengths
    data = task_data(model, prompts, ["7", "twenty one", "7"])
    together = generate(model, data, torch.device("cpu"), batch_size=3, max_new_tokens=3)
    assert together == ["seven .", "twenty one", "junk junk junk"]  # the last stopped by the bound
    assert [generate(model, task_data(model, [p], ["7"]), torch.device("cpu"), max_new_tokens=3)[0]
            for p in prompts] == together  # padding in a batch changes nothing
    model.lm.calls = 0
    assert generate(model, task_data(model, prompts[:2], ["7", "7"]), torch.device("cpu"), max_new_tokens=9) == \
        ["seven .", "twenty one"]
    assert model.lm.calls == 3  # two tokens each, then both gave [EOS]: three steps of the nine allowed


def test_the_default_bound_is_the_longest_reference_answer():
    import torch

    from cl_bench.api.training import generate, longest_answer

    model = scripted({"four": "junk junk junk junk", "eleven": "twenty one"})
    data = task_data(model, ["what is three plus four ?", "ten and eleven ?"], ["7", "twenty one"])
    assert longest_answer(data) == 3  # "twenty one" and the EOS that closes an answer of several tokens
    assert generate(model, data, torch.device("cpu")) == ["junk junk junk", "twenty one"]
    assert generate(model, data, torch.device("cpu"), max_new_tokens=1) == ["junk", "twenty"]


def test_a_model_right_in_content_but_not_in_form_is_correct_only_when_generated():
    """The reference is "7"; the model says "seven ." (and "21" for "twenty one", a two-token reference). Teacher
    forcing compares tokens and scores both wrong; generated scoring normalises and scores both right."""
    import torch

    from cl_bench.api.training import item_correct
    from cl_bench.run.evaluation import Evaluator

    model = scripted({"four": "seven .", "eleven": "21", "ten": "twenty"})
    prompts = ["what is three plus four ?", "ten and eleven ?", "ten ?"]
    answers = ["7", "twenty one", "twenty one"]
    data = task_data(model, prompts, answers)
    assert item_correct(model, data, torch.device("cpu")).tolist() == [False, False, False]

    strategy = SimpleNamespace(model_for=lambda info: model)
    evaluator = Evaluator(SimpleNamespace(tasks=[]), model, strategy, torch.device("cpu"), 2, scoring="generated")
    correct, decoded = evaluator._correct(model, data, answers)
    assert decoded == ["seven .", "21", "twenty"]
    assert correct.tolist() == [True, True, False]  # "twenty" is the first word of "twenty one", not the answer
    assert evaluator.record() == {"method": "generated", "decoding": "greedy", "scorer": SCORER,
                                  "scorer_version": SCORER_VERSION, "max_new_tokens": {}}
    assert Evaluator(SimpleNamespace(tasks=[]), model, strategy, "cpu", 2).record() == {"method": "teacher-forced"}


@pytest.mark.slow
def test_generated_one_token_answers_agree_with_teacher_forcing_on_an_moe_model(full_stream):
    """With one-token answers and a bound of one token, greedy decoding's answer is the argmax teacher forcing
    checks, item by item (a tiny Mixtral, its weights seeded, on the text task): both scorings mark the same items
    correct."""
    import torch
    from transformers import AutoModelForCausalLM

    from cl_bench.analysis.scoring import score as scored
    from cl_bench.api.training import TaskData, generate, item_correct
    from cl_bench.models.lm import preset_config, stream_words, word_tokenizer
    from cl_bench.models.multimodal import MultimodalLM

    stream = full_stream
    tok = word_tokenizer(stream_words(stream))
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(preset_config("mixtral-tiny", len(tok), tok)).eval()
    # the answers' output rows scaled up: the argmax is an answer, most often another than the reference
    answer_ids = tok.convert_tokens_to_ids([str(a) for a in range(19)])
    lm.lm_head.weight.data[answer_ids] *= 20
    model = MultimodalLM(lm, tok, {})
    split = stream.base.test.select(range(48))
    data = TaskData(split, model, "text")
    forced = item_correct(model, data, torch.device("cpu"), batch_size=16)
    decoded = generate(model, data, torch.device("cpu"), batch_size=16)
    generated = torch.tensor([scored(p, r) for p, r in zip(decoded, split["answer"])])
    with torch.no_grad():  # teacher forcing's argmax at each item's first answer position
        batch = data.batch(range(len(data)))
        logits = lm(inputs_embeds=model.inputs(batch)[0], attention_mask=batch.attention).logits
        first = logits[torch.arange(len(data)), torch.tensor(data.n_prompt) - 1].argmax(-1)
    assert decoded == [tok.decode([int(t)]) for t in first]
    assert len(set(decoded)) > 3 and set(decoded) <= {str(a) for a in range(19)}
    assert generated.tolist() == forced.tolist()


# -- the run option and its key --------------------------------------------------------------------------------
def test_the_option_is_keyed_only_when_generated():
    from cl_bench.errors import UsageError
    from cl_bench.run.config import RunConfig

    default = RunConfig()
    assert "scoring" not in default.identity() and "max_new_tokens" not in default.identity()
    assert RunConfig(scoring="teacher-forced").identity() == default.identity()
    generated = RunConfig(scoring="generated").identity()
    assert generated["scoring"] == "generated" and generated["scorer"] == f"{SCORER} v{SCORER_VERSION}"
    assert {k: v for k, v in generated.items() if k not in ("scoring", "max_new_tokens", "scorer")} == \
        default.identity()
    assert RunConfig(scoring="generated", max_new_tokens=4).identity()["max_new_tokens"] == 4
    with pytest.raises(UsageError, match="RunConfig.scoring must be one of teacher-forced, generated"):
        RunConfig(scoring="sampled")
    with pytest.raises(UsageError, match="max_new_tokens applies to generated scoring only"):
        RunConfig(max_new_tokens=3)
    with pytest.raises(UsageError, match=r"RunConfig.max_new_tokens must be in \[1, 4096\]"):
        RunConfig(scoring="generated", max_new_tokens=0)


def test_run_and_sweep_take_the_options_from_the_fields():
    from cl_bench.cli import main
    from cl_bench.cli.sweep import sweep_configs
    from cl_bench.run.config import RunConfig

    def option(command, flag):
        return next(p for p in main.commands[command].params if flag in p.opts)

    assert option("run", "--scoring").default == RunConfig.scoring
    assert list(option("run", "--scoring").type.choices) == ["teacher-forced", "generated"]
    assert option("run", "--max-new-tokens").default is None
    assert option("sweep", "--scoring").default is None and "[default: teacher-forced]" in option(
        "sweep", "--scoring").help
    (config,) = sweep_configs("vision-audio", "align-only", "0", (), {}, (), (), "res", None, None, None, None, None,
                              None, None, scoring="generated", max_new_tokens=3)
    assert (config.scoring, config.max_new_tokens) == ("generated", 3)


# -- the leaderboard's label and rows ------------------------------------------------------------------------
def run_doc(scoring: str | None = None, version: int = 1, **config) -> dict:
    doc = {"config": {"strategy": "full-ft", "seed": 0, "model": "mixtral-tiny", **config}}
    if scoring is not None:
        doc["config"]["scoring"] = scoring
        doc["config"].setdefault("max_new_tokens", None)
        doc["scoring"] = ({"method": "teacher-forced"} if scoring == "teacher-forced" else
                          {"method": "generated", "scorer": SCORER, "scorer_version": version})
    return doc


def test_generated_runs_are_labelled_and_never_share_a_row_with_teacher_forced_ones():
    from cl_bench.reporting.collect import Run, scoring_label, with_scoring
    from cl_bench.reporting.leaderboard import _labels

    old, forced = Run(Path("a"), run_doc()), Run(Path("b"), run_doc("teacher-forced"))
    generated, v2 = Run(Path("c"), run_doc("generated")), Run(Path("d"), run_doc("generated", version=2))
    bounded = Run(Path("e"), run_doc("generated", max_new_tokens=4))
    assert old.group_key() == forced.group_key()  # files from before the option share the default's row
    assert len({old.group_key(), generated.group_key(), v2.group_key(), bounded.group_key()}) == 4
    assert scoring_label(forced.doc) is None and scoring_label(old.doc) is None
    assert scoring_label(generated.doc) == "generated, normalised-exact-match v1"
    assert scoring_label(bounded.doc) == "generated, normalised-exact-match v1, at most 4 tokens"
    assert with_scoring("full-ft", generated.doc) == "full-ft [scoring: generated, normalised-exact-match v1]"

    alone = _labels({generated.group_key(): [generated]})
    assert list(alone.values()) == ["full-ft [scoring: generated, normalised-exact-match v1]"]
    both = _labels({r.group_key(): [r] for r in (forced, generated, v2)})
    assert sorted(both.values()) == ["full-ft", "full-ft [scoring: generated, normalised-exact-match v1]",
                                     "full-ft [scoring: generated, normalised-exact-match v2]"]


# -- end to end ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_generated_run_stores_its_scorer_and_decoded_answers(tmp_path, cache_dir, stream):
    """`clbench run --scoring generated` (the small stream): the file names the scorer and its version, holds every
    item's decoded answer and reference, and rescoring them gives its accuracy matrix and item results; with
    one-token answers it marks the items that a teacher-forced run of the same settings does; the leaderboard
    shows the two runs on rows of their own."""
    from click.testing import CliRunner

    from cl_bench.cli import main
    from cl_bench.reporting.leaderboard import build
    from cl_bench.results import check_result, unpack_items

    res = tmp_path / "results"
    common = ["run", "--stream", "small-numbers", "--strategy", "full-ft", "--steps", "2", "--batch-size", "4",
              "--pretrain-steps", "5", "--eval-limit", "8", "--threads", "1", "--device", "cpu", "--cache-dir",
              str(cache_dir), "--results-dir", str(res), "-q"]
    out = CliRunner().invoke(main, [*common, "--scoring", "generated"])
    assert out.exit_code == 0, out.output
    (path,) = (res / "runs" / "small-numbers" / "full-ft").glob("*.json")
    doc = json.loads(path.read_text())
    assert check_result(doc) == []
    assert doc["config"]["scoring"] == "generated"
    assert doc["scoring"] == {"method": "generated", "decoding": "greedy", "scorer": SCORER,
                              "scorer_version": SCORER_VERSION,
                              "max_new_tokens": {"text": 1, "vision": 1, "audio": 1}}
    R = doc["accuracy_matrix"]
    assert len(R) == 3 and all(0.0 <= a <= 1.0 for row in R for a in row)
    items = doc["item_results"]
    refs, preds = items["references"], items["predictions"]
    sizes = [t["n_test"] for t in doc["stream"]["tasks"]]
    assert [len(r) for r in refs] == sizes == [8, 8, 8]
    assert len(preds) == 3 and all([len(p) for p in row] == sizes for row in preds)
    assert all(isinstance(p, str) for row in preds for task in row for p in task)
    assert rescore(preds, refs) == R
    for i, row in enumerate(preds):
        for j, task in enumerate(row):
            assert unpack_items(items["rows"][i][j], sizes[j]).tolist() == [score(p, r) for p, r in zip(task, refs[j])]

    forced = CliRunner().invoke(main, common)
    assert forced.exit_code == 0, forced.output
    (other,) = [p for p in path.parent.glob("*.json") if p != path]
    tf = json.loads(other.read_text())
    assert tf["scoring"] == {"method": "teacher-forced"} and "predictions" not in tf["item_results"]
    assert tf["item_results"]["rows"] == items["rows"] and tf["accuracy_matrix"] == R

    board = build(res, device="cpu")
    (table,) = board.tables
    assert sorted(r.label for r in table.rows) == ["full-ft", "full-ft [scoring: generated, normalised-exact-match v1]"]
    assert all(len(r.runs) == 1 for r in table.rows)

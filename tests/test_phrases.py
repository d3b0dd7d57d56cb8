"""Answers of several tokens: the image-phrase task ("thin seven", stream phrase-answers), the end-of-sequence token
that closes such answers in training and scoring, and generated scoring agreeing with teacher forcing on them."""

from collections import Counter

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from cl_bench.api.training import TaskData
from cl_bench.models.encoders import build_encoder
from cl_bench.models.lm import preset_config, word_tokenizer
from cl_bench.models.multimodal import MultimodalLM
from cl_bench.task_streams.derived import THICKNESS
from cl_bench.task_streams.vision_audio import DIGIT_WORDS, TASKS, WORD_TASKS, VisionAudioConfig, digit_split

CONFIG = VisionAudioConfig()  # image tasks do not depend on the speakers


@pytest.fixture(scope="module")
def phrase():
    return TASKS["image-phrase"][2](CONFIG, False)


def test_a_phrase_is_the_stroke_then_the_digit_and_true_of_the_scan(phrase):
    d, ids = digit_split(CONFIG)
    val = phrase["val"]  # one question per scan, in the scans' order
    for i, x, answer in zip(ids["val"], val["input"], val["answer"]):
        stroke, word = answer.split()
        scan, x = d.images[i].astype(np.float32), np.asarray(x)
        assert word == DIGIT_WORDS[int(d.target[i])]
        assert np.array_equal(x, scan) if stroke == "thin" else (x >= scan).all() and x.sum() > scan.sum()
    for split in ("train", "val", "test"):
        counts = Counter(phrase[split]["answer"])
        assert set(counts) <= {f"{s} {w}" for s in THICKNESS for w in DIGIT_WORDS}
        assert Counter(a.split()[0] for a in phrase[split]["answer"]).keys() == set(THICKNESS)
        assert set(phrase[split]["template"]) == set(WORD_TASKS["image-phrase"])
    assert len(Counter(phrase["train"]["answer"])) == 20  # every phrase trained
    inputs = {s: {np.asarray(x, np.float32).tobytes() for x in phrase[s]["input"]} for s in ("train", "val", "test")}
    assert not (inputs["train"] & inputs["test"] or inputs["val"] & inputs["test"])


def test_answers_of_several_tokens_end_with_eos_and_one_token_answers_do_not(phrase):
    digits = TASKS["vision"][2](CONFIG, False)["val"].select(range(16))
    words = sorted({w for s in (*phrase["train"]["prompt"], *phrase["train"]["answer"], *digits["prompt"],
                                *digits["answer"]) for w in s.split()} - {"<input>"})
    tok = word_tokenizer(words)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(preset_config("mixtral-tiny", len(tok), tok))
    model = MultimodalLM(lm, tok, {"image": build_encoder("image")})
    two = TaskData(phrase["val"].select(range(16)), model, "image")
    one = TaskData(digits, model, "image")
    assert two.ends and not one.ends
    # the answer's tokens, then the EOS for phrases; a one-token answer is its token alone, as before (so runs of
    # the number tasks give the numbers they gave)
    for data, split, n in ((two, phrase["val"], 3), (one, digits, 1)):
        for seq, start, answer in zip(data.seqs, data.n_prompt, split["answer"]):
            assert len(seq) - start == n
            assert seq[start: start + len(answer.split())] == tok.convert_tokens_to_ids(answer.split())
    assert all(seq[-1] == tok.eos_token_id for seq in two.seqs)
    batch = two.batch(range(4))
    assert batch.answer.sum(1).tolist() == [3, 3, 3, 3]  # the EOS is scored with the words


@pytest.mark.slow
def test_a_phrase_task_is_learned_and_generated_scoring_marks_what_teacher_forcing_does(cache_dir, tmp_path):
    """single-ft on phrase-answers (400 steps: about 0.7 of validation; at 300, 0.18 of test), scored
    teacher-forced, then generated with the same settings (the second run reuses the first one's training: only its
    evaluation differs): well above chance (1/20), and the two scorings mark the same items, since greedy decoding
    stops at the learned EOS."""
    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.runner import RunConfig, run

    docs = {}
    for scoring in ("teacher-forced", "generated"):
        doc, _ = run(RunConfig(stream="phrase-answers", strategy="single-ft", device="cpu", threads=2,
                               budget=Budget(steps=400, batch_size=16),
                               pretrain=PretrainConfig(steps=20, batch_size=16),
                               strategy_options={"lr": 1e-3, "projector_lr": 1e-2}, eval_limit=200, scoring=scoring,
                               cache_dir=str(cache_dir), results_dir=str(tmp_path / scoring)),
                     progress=False, echo=lambda s: None)
        docs[scoring] = doc
    forced, generated = docs["teacher-forced"], docs["generated"]
    acc = forced["accuracy_matrix"][1][1]
    chance = forced["stream"]["tasks"][1]["chance"]
    print(f"image-phrase: test accuracy {acc:.3f} (chance {chance:.3f})")
    assert chance == pytest.approx(0.05, abs=1e-9) and acc >= chance + 0.3
    assert generated["accuracy_matrix"] == forced["accuracy_matrix"]
    assert generated["item_results"]["rows"] == forced["item_results"]["rows"]
    decoded = generated["item_results"]["predictions"][1][1]
    assert sum(len(p.split()) == 2 for p in decoded) > 0.9 * len(decoded)  # stopped after two words
    assert generated["scoring"]["max_new_tokens"] == {"text": 1, "image-phrase": 3}

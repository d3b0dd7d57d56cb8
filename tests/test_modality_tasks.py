"""Questions about a new input's own content (WORD_TASKS of cl_bench.task_streams.vision_audio): each task's data
is deterministic from the config's seed, its answers are its own class words, balanced, true of the input, its
splits are disjoint by input, and (slow) single-task fine-tuning learns it well above chance."""

import dataclasses
import hashlib
from collections import Counter

import numpy as np
import pytest

from cl_bench import registry
from cl_bench.streams.base import build_checked
from cl_bench.streams.tasks import balanced_labels, label_questions, task_experience
from cl_bench.task_streams import derived
from cl_bench.task_streams.vision_audio import (TASKS, WORD_TASKS, ModalityQuestions, VisionAudioConfig,
                                                digit_split, speakers)

SMALL = VisionAudioConfig(train_speakers=12, val_speakers=6, test_speakers=6)  # audio-rate in seconds
CLASSES = {"image-thickness": {"thin", "bold"}, "video-motion": {"left", "right", "up", "down"},
           "points-tilt": {"left", "right", "top", "bottom"}, "audio-rate": {"slow", "fast"},
           "series-length": {"short", "long"}}


def _build(name, config=SMALL):
    return TASKS[name][2](config, False)


_BUILT = {}


def _built(name):
    """`_build(name)`, built once for the tests that only read it (a determinism check builds afresh)."""
    if name not in _BUILT:
        _BUILT[name] = _build(name)
    return _BUILT[name]


def _digest(d) -> str:
    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        for col in ("input", "prompt", "answer", "template"):
            for x in d[split][col]:
                h.update(np.asarray(x, np.float32).tobytes() if col == "input" else x.encode())
    return h.hexdigest()[:16]


def _inputs(split) -> set[bytes]:
    return {np.asarray(x, np.float32).tobytes() for x in split["input"]}


def test_word_tasks_are_in_the_task_table_and_the_stream():
    assert set(WORD_TASKS) == set(CLASSES) | {"image-phrase"} <= set(TASKS)  # image-phrase: tests/test_phrases.py
    # each modality of the number streams once
    assert sorted(ModalityQuestions.tasks.values()) == sorted(TASKS[n][0] for n in CLASSES)
    assert list(ModalityQuestions.tasks) == ["image-thickness", "audio-rate", "video-motion", "points-tilt",
                                             "series-length"]


def test_label_questions_and_balanced_labels():
    words = {"a-0": "<input> one ?", "a-1": "<input> two ?"}
    rows = label_questions(["x", "y", "x"], words, seed=3, per_input=2)
    assert [r[0] for r in rows] == [0, 0, 1, 1, 2, 2] and [r[3] for r in rows] == ["x", "x", "y", "y", "x", "x"]
    assert all(words[t] == p for _, t, p, _ in rows)
    assert rows == label_questions(["x", "y", "x"], words, seed=3, per_input=2)
    assert {t for _, t, _, _ in label_questions(["x"] * 50, words, seed=0)} == set(words)  # both wordings drawn
    labels = balanced_labels(("l", "r", "u"), 10, np.random.default_rng(0))
    assert sorted(Counter(labels).values()) == [3, 3, 4]
    assert labels != balanced_labels(("l", "r", "u"), 10, np.random.default_rng(1))


@pytest.mark.parametrize("name", ["image-thickness", "video-motion", "points-tilt", "series-length",
                                  pytest.param("audio-rate", marks=pytest.mark.slow)])
def test_word_task_data(name):
    a = _built(name)
    assert _digest(a) == _digest(_build(name))  # same seed: the same data, bit for bit
    assert _digest(a) != _digest(_build(name, dataclasses.replace(SMALL, seed=1)))
    train, val, test = (_inputs(a[s]) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)  # no input in two splits
    for split in ("train", "val", "test"):
        counts = Counter(a[split]["answer"])
        assert set(counts) == CLASSES[name]  # every class in every split, nothing else
        # balanced-ish (audio-rate's classes come in whole speakers: SMALL has 6 in val and test)
        assert min(counts.values()) >= (0.15 if name == "audio-rate" else 0.5 / len(counts)) * len(a[split])
        assert set(a[split]["template"]) == set(WORD_TASKS[name])
        assert all(WORD_TASKS[name][t] == p for t, p in zip(a[split]["template"], a[split]["prompt"]))
    e = task_experience(name, TASKS[name][0], TASKS[name][1], a, prompt_templates=WORD_TASKS[name])
    assert set(e.answer_set) == CLASSES[name]
    assert e.chance == pytest.approx(1 / len(CLASSES[name]))  # every wording has the task's answers


def test_answers_are_true_of_the_input():
    cfg = VisionAudioConfig()
    d, ids = digit_split(cfg)
    scans = [d.images[i] for i in ids["val"]]  # val: one question per scan, in the scans' order
    thick = _build("image-thickness", cfg)["val"]
    for scan, x, answer in zip(scans, thick["input"], thick["answer"]):
        x = np.asarray(x)
        assert np.array_equal(x, scan) if answer == "thin" else (x >= scan).all() and x.sum() > scan.sum()
    clips = _build("video-motion", cfg)["val"]
    for scan, clip, answer in zip(scans, clips["input"], clips["answer"]):
        where = [next((y, x) for y in (0, 8) for x in (0, 8) if np.array_equal(f[y:y + 8, x:x + 8], scan))
                 for f in np.asarray(clip)]
        (y0, x0), (y1, x1) = where[0], where[-1]
        assert {(0, -8): "left", (0, 8): "right", (-8, 0): "up", (8, 0): "down"}[(y1 - y0, x1 - x0)] == answer
        assert len(set(where)) == 2  # one step, at some frame
    clouds = _build("points-tilt", cfg)["val"]
    for cloud, answer in zip(clouds["input"], clouds["answer"]):
        c = np.asarray(cloud)
        axis, nearer_when_high = {"right": (0, True), "left": (0, False), "top": (1, True), "bottom": (1, False)}[answer]
        slope = np.corrcoef(c[:, axis], c[:, 2])[0, 1]  # z falls towards the nearer side (front slab: z < 0)
        assert (slope < 0) == nearer_when_high and abs(slope) > 0.3
    series = _build("series-length", cfg)
    for split in ("val", "test"):
        assert [("short" if len(x) <= derived.SHORT_STEPS else "long") for x in series[split]["input"]] == \
            series[split]["answer"]


@pytest.mark.slow
def test_audio_rate_answers_the_speakers_rate_and_holds_test_voices_out():
    a = _built("audio-rate")
    spk = speakers(SMALL)
    test_keys = {v.key for v in spk["test"]}
    assert set(a["test"]["speaker"]) <= test_keys and not set(a["train"]["speaker"]) & test_keys
    for split in ("train", "test"):
        for key, answer in zip(a[split]["speaker"], a[split]["answer"]):
            rate = int(key.rpartition("@r")[2].partition("p")[0])
            assert (rate <= 150 and answer == "slow") or (rate >= 200 and answer == "fast")


@pytest.mark.slow
def test_modality_questions_stream_builds_and_passes_the_checks(tmp_path):
    ts = build_checked(ModalityQuestions(SMALL), "modality-questions", tmp_path, progress=False)
    assert ts.order == tuple(ModalityQuestions.tasks)
    assert {e.name: e.answer_set for e in ts.experiences}["video-motion"] == ("down", "left", "right", "up")
    assert [round(e.chance, 6) for e in ts.experiences] == [0.5, 0.5, 0.25, 0.25, 0.5]
    again = build_checked(ModalityQuestions(SMALL), "modality-questions", tmp_path, progress=False)  # from cache
    assert again.experiences[2].val["answer"] == ts.experiences[2].val["answer"]


# Single-task fine-tuning of one word task at a time (each about 30-60 s on one core): task -> steps, lr.
# The motion and nearest-side tasks are read from where the input's tokens light up, which takes longer.
LEARN = {"image-thickness": (100, 1e-3), "audio-rate": (100, 1e-3), "series-length": (50, 1e-3),
         "video-motion": (300, 1e-3), "points-tilt": (400, 1e-3)}


class OneTask(ModalityQuestions):
    """modality-questions with one of its tasks (set by the test)."""

    name = "one-word-task"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LEARN))
def test_single_task_fine_tuning_learns_the_task(name, cache_dir, tmp_path, monkeypatch):
    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.runner import RunConfig, run

    monkeypatch.setattr(OneTask, "tasks", {name: TASKS[name][0]})
    registry.streams.register("one-word-task", f"{__name__}:OneTask", origin="tests")
    try:
        steps, lr = LEARN[name]
        cfg = RunConfig(stream="one-word-task", strategy="single-ft", device="cpu", threads=1, eval_split="val",
                        budget=Budget(steps=steps, batch_size=16), pretrain=PretrainConfig(steps=20, batch_size=16),
                        # the projector rate the steps were sized with (the task is the subject, not the default)
                        strategy_options={"lr": lr, "projector_lr": "5e-3"}, stream_options={"train_speakers": 40, "val_speakers": 10,
                                                                     "test_speakers": 10},
                        # the session's cache: each task's data is keyed by its name and the options, and the five
                        # tasks' text base (and the base model pre-trained on it) is built once
                        cache_dir=str(cache_dir), results_dir=str(tmp_path / "res"), shared_cache=False)
        doc, _ = run(cfg, progress=False, echo=lambda s: None)
    finally:
        registry.streams.unregister("one-word-task")
    acc = doc["accuracy_matrix"][1][1]  # the task's val accuracy right after its stage
    chance = doc["stream"]["tasks"][1]["chance"]
    print(f"{name}: val accuracy {acc:.3f} (chance {chance:.3f}) after {steps} steps")
    assert acc >= max(0.7, chance + 0.4)

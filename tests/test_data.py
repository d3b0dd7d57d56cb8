import numpy as np
import pytest

from cl_bench.streams import numbers
from cl_bench.task_streams.vision_audio import (TEST_VARIANTS, TRAIN_VARIANTS, VisionAudioConfig, build_digits,
                                                speakers)


def test_number_questions_answers():
    assert numbers.question("add", 7, 2) == ("what is the number plus two ?", "9")
    assert numbers.question("prev", 1) == ("what comes before the number ?", "0")
    with pytest.raises(ValueError, match="not defined"):
        numbers.question("sub", 2, 5)


def test_text_items_are_distinct_and_canonical_forms_match_the_modality_prompts():
    items = numbers.text_items()
    prompts = [it["prompt"] for it in items]
    assert len(set(prompts)) == len(prompts)  # no prompt is shared by two facts, wordings or leads
    assert numbers.LEADS[0].format(a="<input>") == numbers.INPUT_PREFIX
    for it in items:
        if it["lead"] == 0 and it["wording"] == 0:  # the context form the image and audio prompts use
            kind, a, b = it["fact"].split(":")
            q, ans = numbers.question(kind, int(a), int(b))
            assert it["prompt"] == f"{numbers.CONTEXT.format(a=numbers.WORDS[int(a)])} {q}" and it["answer"] == ans


def test_text_split_is_deterministic_and_held_out():
    a, b = numbers.split_text(), numbers.split_text()
    assert a == b
    assert {k: len(v) for k, v in a.items()} == {"train": 2368, "val": 304, "test": 1008}
    train = a["train"]
    train_prompts = {it["prompt"] for it in train}
    trained_context_cells = {(it["fact"], it["wording"]) for it in train if it["lead"] >= 0}
    plain_cells = {(it["fact"], it["wording"]) for it in train if it["lead"] < 0}
    # every plain item (each fact in each wording) is a training item
    assert plain_cells == {(it["fact"], it["wording"]) for it in numbers.text_items() if it["lead"] < 0}
    facts_by_phrasing: dict = {}
    for it in train:
        facts_by_phrasing.setdefault((it["template"], it["wording"], it["lead"]), set()).add(it["fact"])
    cells = {}
    for split in ("val", "test"):
        cells[split] = {(it["fact"], it["wording"]) for it in a[split]}
        for item in a[split]:
            assert item["prompt"] not in train_prompts  # never seen in training ...
            assert item["template"].startswith("context-") and item["template"] != "context-read"
            assert (item["fact"], item["wording"]) not in trained_context_cells  # ... nor its fact in this wording
            # ... but the fact is known in plain form (in this very wording) ...
            assert (item["fact"], item["wording"]) in plain_cells
            # ... and the phrasing (lead and wording of this question kind) is trained with other facts
            assert facts_by_phrasing[item["template"], item["wording"], item["lead"]] - {item["fact"]}
        # a held-out (fact, wording) cell is asked after every lead
        assert len(a[split]) == len(numbers.LEADS) * len(cells[split])
    assert not cells["val"] & cells["test"]
    assert len({f for f, _ in cells["test"]}) >= 120  # spread over most of the 174 arithmetic facts
    # chance stays that of the question kinds: the held-out mix of kinds is the facts' own
    assert numbers.chance_level([it["template"] for it in a["test"]]) == pytest.approx(0.0735, abs=0.002)


def test_modality_questions_are_deterministic_and_need_knowledge():
    rows = numbers.modality_questions(list(range(10)) * 20, seed=3)
    assert rows == numbers.modality_questions(list(range(10)) * 20, seed=3)
    kinds = {k for _, k, _, _ in rows}
    assert kinds == set(numbers.KINDS)  # recognition and arithmetic on the input
    assert all(p.startswith("the number is <input> .") for _, _, p, _ in rows)


def test_chance_level():
    # "read" has 10 possible answers, "add" 19.
    assert numbers.chance_level(["read", "add"]) == pytest.approx((1 / 10 + 1 / 19) / 2)


def test_digits_build_is_deterministic_and_split_by_image():
    cfg = VisionAudioConfig()
    a, b = build_digits(cfg), build_digits(cfg)
    for split in ("train", "val", "test"):
        assert a[split].to_dict() == b[split].to_dict()
    train_imgs = {np.asarray(x).tobytes() for x in a["train"]["input"]}
    overlap = sum(np.asarray(x).tobytes() in train_imgs for x in a["test"]["input"])
    assert overlap <= 2  # (the scans contain a couple of exact duplicates)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (897 * cfg.questions_per_train_input, 180, 720)
    assert len({np.asarray(x).tobytes() for x in a["test"]["input"]}) >= 718  # one question per test image


def test_test_speakers_use_held_out_voices():
    spk = speakers(VisionAudioConfig())
    variant = lambda v: v.name.split("+")[1]  # noqa: E731
    assert {variant(v) for v in spk["train"] + spk["val"]} <= set(TRAIN_VARIANTS)
    assert {variant(v) for v in spk["test"]} <= set(TEST_VARIANTS)
    assert not set(TRAIN_VARIANTS) & set(TEST_VARIANTS)
    assert speakers(VisionAudioConfig()) == spk
    assert [len(spk[k]) for k in ("train", "val", "test")] == [80, 20, 100]  # 1,000 test clips
    keys = [v.key for v in spk["train"] + spk["val"] + spk["test"]]
    assert len(set(keys)) == len(keys)


@pytest.mark.slow
def test_speech_synthesis_is_real_and_reproducible():
    from cl_bench.task_streams.speech import Voice, synthesize

    voices = [Voice("en-US+f2", 150, 40), Voice("en-GB-scotland+m3", 200, 60)]
    a = synthesize(["seven", "three"], voices, 16_000, chunk=1)
    b = synthesize(["seven", "three"], voices, 16_000, chunk=1)
    assert len(a) == 4 and all(x.dtype == np.int16 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(0.2 * 16_000 < len(x) < 2 * 16_000 and np.abs(x).max() > 1000 for x in a)  # speech, not silence
    assert not (len(a[0]) == len(a[1]) and np.array_equal(a[0], a[1]))  # "seven" is not "three"


def test_unknown_voice_is_named():
    from cl_bench.task_streams.speech import Synthesizer, Voice

    with pytest.raises(ValueError, match="no voice 'xx-nonexistent'"):
        Synthesizer().say("seven", Voice("xx-nonexistent"))


@pytest.mark.slow
def test_stream_layout(full_stream):
    stream = full_stream
    assert [t.name for t in stream.tasks] == ["text", "vision", "audio"]
    assert [t.modality for t in stream.tasks] == ["text", "image", "audio"]
    plain = stream.base.probes["train-plain"]  # every fact in every wording, plain form, all training items
    assert len(plain) == 736 and set(plain["template"]) == {f"plain-{k}" for k in ("read", "add", "sub", "next", "prev")}
    assert set(plain["prompt"]) <= set(stream.base.train["prompt"])
    for t in stream.tasks:
        assert 0.05 < t.chance < 0.2
    assert [(len(t.train), len(t.val), len(t.test)) for t in stream.tasks] == [
        (2368, 304, 1008), (1794, 180, 720), (1600, 200, 1000)]
    exp = stream.experiences[0].without_test()
    assert exp.test is None and not exp.probes
    # held-out voices in the audio test split
    audio = stream.experiences[1]
    assert not set(audio.train["speaker"]) & set(audio.test["speaker"])


@pytest.mark.slow
def test_speech_build_is_deterministic():
    from cl_bench.task_streams.vision_audio import build_speech

    cfg = VisionAudioConfig(train_speakers=2, val_speakers=1, test_speakers=1)
    a, b = build_speech(cfg, progress=False), build_speech(cfg, progress=False)
    for split in ("train", "val", "test"):
        assert a[split].to_dict() == b[split].to_dict()
    assert len(a["train"]) == 2 * 10 * cfg.questions_per_train_input


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path):
    from cl_bench.streams.data import atomic_directory

    target = tmp_path / "built"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "part").write_text("half")
            raise RuntimeError("killed while building")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(target) as tmp:
        (tmp / "part").write_text("whole")
    assert (target / "part").read_text() == "whole" and len(list(tmp_path.iterdir())) == 1


def test_atomic_json_keeps_the_old_file_on_failure(tmp_path):
    from cl_bench.results import atomic_write_json, load_result

    path = tmp_path / "r.json"
    atomic_write_json(path, {"schema_version": 1, "x": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"schema_version": 1, "x": object()})
    assert load_result(path) == {"schema_version": 1, "x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    atomic_write_json(path, {"schema_version": 99})
    with pytest.raises(ValueError, match="newer than this clbench reads"):
        load_result(path)


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os
    import stat

    from cl_bench.results import atomic_torch_save, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "t.md", "x")
        atomic_torch_save(tmp_path / "s.pt", {"a": 1})
    finally:
        os.umask(old)
    assert {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("t.md", "s.pt")} == {0o644}


def test_a_damaged_data_cache_is_found_rebuilt_and_said(tmp_path):
    import json
    import os
    import stat

    from datasets import Dataset

    from cl_bench.streams.data import CHECKSUMS, cached_splits

    builds, said = [], []

    def build():
        builds.append(1)
        return {"train": Dataset.from_dict({"x": list(range(100))}), "test": Dataset.from_dict({"x": [7, 8]})}

    path = tmp_path / "cache" / "task"
    old = os.umask(0o022)
    try:
        d = cached_splits(path, build, echo=said.append)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert (path / CHECKSUMS).exists() and len(builds) == 1 and d["train"]["x"] == list(range(100))
    assert cached_splits(path, build, echo=said.append)["test"]["x"] == [7, 8] and len(builds) == 1 and not said

    arrow = next(path.glob("train/*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[-40:-20] = bytes(20)  # zero part of the stored data: still readable, silently different
    arrow.write_bytes(bytes(data))
    d = cached_splits(path, build, echo=said.append)
    assert len(builds) == 2 and d["train"]["x"] == list(range(100))
    assert said == [f"data cache {path} is damaged (train/{arrow.name} does not match its checksum); rebuilding it"]

    (path / "dataset_dict.json").unlink()
    cached_splits(path, build, echo=said.append)
    assert len(builds) == 3 and "dataset_dict.json is missing" in said[-1]

    arrow = next(path.glob("test/*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:50])  # truncated
    cached_splits(path, build, echo=said.append)
    assert len(builds) == 4 and "damaged" in said[-1]

    # a cache written before checksums were: trusted once if it loads, and its checksums written then
    (path / CHECKSUMS).unlink()
    cached_splits(path, build, echo=said.append)
    assert len(builds) == 4 and json.loads((path / CHECKSUMS).read_text()) and len(said) == 3

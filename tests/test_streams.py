"""Streams and modalities: the built-in modalities' data and encoders, the Stream base class and its
checks, task order, stream options, and `clbench validate --stream`."""

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cl_bench import modality, registry
from cl_bench import stream as streams
from cl_bench.cli import main
from cl_bench.config import Budget
from cl_bench.data import stable_hash
from cl_bench.experience import Experience, TaskStream
from cl_bench.models.encoders import build_encoder
from cl_bench.models.lm import PretrainConfig
from cl_bench.runner import RunConfig, run
from cl_bench.task_streams import numbers
from cl_bench.task_streams.vision_audio import (VisionAudioConfig, build_points, build_series, build_video,
                                                digit_split)

TINY = dict(budget=Budget(steps=2, batch_size=4), pretrain=PretrainConfig(steps=5, batch_size=8), eval_limit=32)


def _input_digest(split) -> str:
    h = hashlib.sha256()
    for x in split["input"]:
        h.update(np.asarray(x, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


# builder, modality, input shape of one item (None: varies), tokens and width of the encoder's output
NEW = {
    "video": (build_video, "video", (4, 16, 16), 8, 128),
    "points": (build_points, "point-cloud", (128, 3), 8, 51),
    "series": (build_series, "time-series", None, 4, 96),
}


@pytest.mark.parametrize("task", sorted(NEW))
def test_new_modality_data_is_deterministic_and_its_encoder_gives_tokens(task):
    build, mod, shape, tokens, width = NEW[task]
    cfg = VisionAudioConfig()
    a, b = build(cfg), build(cfg)
    for split in ("train", "val", "test"):
        assert a[split]["prompt"] == b[split]["prompt"] and a[split]["answer"] == b[split]["answer"]
        assert _input_digest(a[split]) == _input_digest(b[split])  # the same inputs, bit for bit
        assert set(a[split]["answer"]) <= set(numbers.ANSWERS)
        assert all(p.startswith(numbers.INPUT_PREFIX) for p in a[split]["prompt"])
    if task == "series":  # JapaneseVowels: the archive's 370 test recordings; 270 training ones -> 216 + 54
        assert [len(a[s]) // (2 if s == "train" else 1) for s in ("train", "val", "test")] == [216, 54, 370]
        assert set(a["test"]["value"]) == set(range(1, 10))
    else:  # one clip / cloud per digit scan, in the same splits as the vision task's scans
        _, ids = digit_split(cfg)
        assert len(a["test"]) == len(ids["test"]) and len(a["val"]) == len(ids["val"])
        d, _ = digit_split(cfg)
        assert sorted(a["test"]["value"]) == sorted(int(d.target[i]) for i in ids["test"])
    pinned = {"video": "b42cf0fc9d89a6a0", "series": "7c71160980b89a87"}  # exact copies (points: float maths)
    if task in pinned:
        assert _input_digest(a["test"]) == pinned[task]  # the published data, bit for bit
    other = build(dataclasses.replace(cfg, seed=1))
    # the data seed matters: it draws the inputs (the series' test split is the archive's own) and the questions
    assert _input_digest(other["val"]) != _input_digest(a["val"]) and other["test"]["prompt"] != a["test"]["prompt"]
    enc = build_encoder(mod)
    assert enc.modality == mod and not any(p.requires_grad for p in enc.parameters())
    raw = list(a["val"]["input"][:5])
    x = enc.featurize(raw)
    if shape is not None:
        assert tuple(x.shape) == (5, *shape)
    out = enc(x)
    assert tuple(out.shape) == (5, tokens, width) == (5, tokens, enc.out_dim)
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_derived_inputs_keep_the_scan():
    from cl_bench.task_streams.derived import ink_cloud, moving_clip

    d, _ = digit_split(VisionAudioConfig())
    img = d.images[0].astype(np.float32)
    clip = moving_clip(img, np.random.default_rng(0))
    for frame in clip:  # every frame holds the scan, whole, somewhere
        assert frame.sum() == pytest.approx(img.sum())
        ys, xs = np.nonzero(frame)
        y0, x0 = ys.min() - np.nonzero(img)[0].min(), xs.min() - np.nonzero(img)[1].min()
        assert np.array_equal(frame[y0:y0 + 8, x0:x0 + 8], img)
    assert not np.array_equal(clip[0], clip[-1])  # it moves
    cloud = ink_cloud(img, np.random.default_rng(0))
    assert cloud.shape == (128, 3) and np.allclose(cloud.mean(0), 0, atol=1e-5)
    assert np.ptp(cloud[:, 2]) > 0.1  # turned out of the sheet's plane: a 3-D cloud


def test_encoders_tokens_follow_the_input():
    """Each token reads its own part of the input: the tubelet of (time, row, col), the patch of steps, the group."""
    v = build_encoder("video")
    clip = torch.zeros(1, 4, 16, 16)
    clip[0, 2:4, 8:16, 0:8] = 1.0  # frames 2-3, bottom-left quarter: tubelet (1, 1, 0) -> token 1*4 + 1*2 + 0 = 6
    tok = v(clip)
    assert tok[0, 6].sum() == 128 and tok[0].sum() == 128
    s = build_encoder("time-series")
    x = s.featurize([np.ones((10, 12), np.float32)])  # 10 steps, padded to 32
    assert x[0, :10].sum() == 120 and x[0, 10:].abs().sum() == 0
    assert s(x)[0].sum(-1).tolist() == [96, 24, 0, 0]
    p = build_encoder("point-cloud")
    cloud = torch.randn(2, 128, 3)
    g = p(cloud)
    centres = g[..., :3]
    assert torch.equal(centres[:, 0], cloud[:, 0])  # farthest point sampling starts at the first point
    assert torch.allclose(g[..., 3:6], torch.zeros(2, 8, 3))  # each centre is its own nearest neighbour
    assert torch.equal(p(cloud), g)  # deterministic


def test_vision_audio_data_is_unchanged(stream):
    """The default stream's data is clbench 0.3.0's, so published results stay comparable."""
    data = stable_hash([(t.name, len(t.train), len(t.val), list(t.test["prompt"]), list(t.test["answer"]))
                        for t in stream.tasks])
    assert data == "eefa8d511a319fc9"
    digests = {t.name: hashlib.sha256(b"".join(np.asarray(x).tobytes() for s in ("train", "val", "test")
                                               for x in getattr(t, s)["input"])).hexdigest()[:16]
               for t in stream.experiences}
    assert digests == {"vision": "17139c05fa07478c", "audio": "41ab6868b5fd324e"}


def test_ls_lists_the_streams_and_modalities():
    out = CliRunner().invoke(main, ["ls", "-v"])
    assert out.exit_code == 0, out.output
    names = registry.streams.names()
    assert len(names) >= 4 and {"vision-audio", "audio-vision"} <= set(names)
    tasks = {t: m for n in names for t, m in streams.stream_class(n).tasks.items()}
    assert len(tasks) >= 5 and len(set(tasks.values())) >= 5
    assert max(len(streams.stream_class(n).tasks) for n in names) >= 5
    for n in names:
        assert n in out.output
    for m in ("image", "audio", "video", "time-series", "point-cloud"):
        assert m in registry.modalities.names() and modality.get(m).name == m
    assert "-s train-speakers=... (default 80)" in out.output
    assert "encoders: tubelets (default) = cl_bench.models.encoders:VideoTubelets" in out.output


def test_order_parsing(stream):
    assert streams.parse_order("audio,vision", stream) == ("audio", "vision")
    assert streams.parse_order("random:3", stream) == streams.parse_order("random:3", stream)
    assert {streams.parse_order(f"random:{s}", stream) for s in range(8)} == {("vision", "audio"), ("audio", "vision")}
    with pytest.raises(ValueError, match="must name each new task of stream 'vision-audio' once"):
        streams.parse_order("audio,audio", stream)
    with pytest.raises(ValueError, match="integer seed"):
        streams.parse_order("random:x", stream)
    r = stream.reordered(("audio", "vision"))
    assert r.order == ("audio", "vision") and r.base is stream.base and stream.order == ("vision", "audio")


def _exp(name, mod, **kw):
    from datasets import Dataset

    rows = {"prompt": ["the number is <input> . what is the number ?"] * 2, "answer": ["1", "2"],
            "template": ["read", "read"], "input": [[0.0], [1.0]]}
    rows.update(kw.pop("rows", {}))
    d = Dataset.from_dict(rows)
    return Experience(name=name, modality=mod, task="t", train=d, val=d, test=d, prompt_templates={"read": "x"},
                      answer_set=numbers.ANSWERS, chance=0.1, **kw)


def test_stream_check_names_every_problem():
    base = _exp("text", "text")
    good = TaskStream("s", base, (_exp("vision", "image"), _exp("audio", "audio")))
    assert streams.check(good, "s") == []
    bad = TaskStream("s", base, (_exp("vision", "image"), _exp("pics", "image", rows={"answer": ["1", "cat"]})))
    problems = streams.check(bad, "other")
    assert any("calls itself 's'" in p for p in problems)
    assert any("'vision' and 'pics' are both 'image'" in p for p in problems)
    assert any("answers outside the task's answer_set: 'cat'" in p for p in problems)
    with pytest.raises(ValueError, match="modality 'smell' is not registered"):
        _exp("nose", "smell")
    assert streams.check("not a stream") == ["build() returned str, not a cl_bench.TaskStream"]


def test_a_stream_must_subclass_stream_and_declare_its_tasks():
    registry.streams.register("not-a-stream", "cl_bench.task_streams.numbers:question", origin="tests")
    try:
        with pytest.raises(TypeError, match="not a cl_bench.Stream subclass"):
            streams.stream_class("not-a-stream")
    finally:
        registry.streams.unregister("not-a-stream")


def test_stream_options_are_checked():
    with pytest.raises(ValueError, match="stream 'vision-audio' has no option 'speakers'"):
        streams.make("vision-audio", {"speakers": "3"})
    s = streams.make("vision-audio", {"train-speakers": "40"})
    assert s.config.train_speakers == 40 and streams.changed_options(s) == {"train_speakers": 40}
    assert streams.changed_options(streams.make("vision-audio", {"seed": "0"})) == {}


def test_order_is_recorded_and_keyed(tmp_path, cache_dir, stream):
    cfg = dict(TINY, results_dir=str(tmp_path / "r"), cache_dir=str(cache_dir), strategy="align-only")
    default, p0 = run(RunConfig(**cfg), progress=False)
    same, p1 = run(RunConfig(**cfg, order="vision,audio"), progress=False, reuse=True)  # the default, spelt out
    rev, p2 = run(RunConfig(**cfg, order="audio,vision"), progress=False)
    assert default["stream"]["order"] == ["vision", "audio"] == default["stream"]["default_order"]
    assert same["run_key"] == default["run_key"] and p1 == p0
    assert rev["stream"]["order"] == ["audio", "vision"] and rev["run_key"] != default["run_key"] and p2 != p0
    assert [s["experience"] for s in rev["stages"]] == ["audio", "vision"]
    from cl_bench.summary import format_summary

    assert "seed 0, order audio > vision)" in format_summary(rev) and "order" not in format_summary(same).splitlines()[0]
    assert [t["name"] for t in rev["stream"]["tasks"]] == ["text", "audio", "vision"]
    assert rev["stream"]["tasks"][1]["encoder"] == "cl_bench.models.encoders:LogMelFrames"
    # the registered reverse stream runs the same tasks in the same order (its own name and key)
    av, _ = run(RunConfig(**{**cfg, "stream": "audio-vision"}), progress=False)
    assert av["stream"]["name"] == "audio-vision" and av["stream"]["order"] == ["audio", "vision"]
    assert av["accuracy_matrix"] == rev["accuracy_matrix"]


def test_validate_a_stream_alone(cache_dir):
    out = CliRunner().invoke(main, ["validate", "--stream", "five-modalities", "--cache-dir", str(cache_dir)])
    assert out.exit_code == 0, out.output
    assert "stream five-modalities: well formed" in out.output
    out = CliRunner().invoke(main, ["validate", "--stream", "vision-audio", "--encoder", "smell=nose",
                                    "--cache-dir", str(cache_dir)])
    assert out.exit_code != 0 and "no modality 'smell'" in out.output
    out = CliRunner().invoke(main, ["validate", "--stream", "vision-audio", "--order", "audio",
                                    "--cache-dir", str(cache_dir)])
    assert out.exit_code != 0 and "must name each new task of stream 'vision-audio' once" in out.output
    out = CliRunner().invoke(main, ["validate", "--stream", "vision-audio", "--encoder", "image=log-mel",
                                    "--cache-dir", str(cache_dir)])
    assert out.exit_code == 1 and "no encoder 'log-mel' for modality 'image'" in out.output


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["moextend", "mmer"])
def test_the_five_modality_stream_keeps_the_contract(cache_dir, strategy):
    """Five stages of new modalities: the strategy's contract holds (frozen weights, cost, budget, memory)."""
    from cl_bench.validate import validate

    assert validate(strategy, "five-modalities", str(cache_dir)) == []


def test_publish_runs_every_order_and_reports_the_order_effect(tmp_path, cache_dir, stream):
    res = tmp_path / "published"
    args = ["publish", "--stream", "vision-audio", "--strategies", "align-only", "--seeds", "0,1",
            "--order", "default", "--order", "audio,vision", "--steps", "2", "--pretrain-steps", "5",
            "--results-dir", str(res), "--cache-dir", str(cache_dir), "--device", "cpu", "--eval-limit", "32"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert len(list((res / "runs" / "vision-audio").rglob("*.json"))) == 4
    md = (res / "leaderboard.md").read_text()
    assert "## vision-audio\n" in md and "## vision-audio, order audio > vision" in md
    assert "## Order effects" in md and "| vision-audio | align-only | vision > audio: " in md
    assert (res / "figures" / "vision-audio--audio-vision" / "pareto.png").exists()

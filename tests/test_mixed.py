"""Mixed-modality items: an image and a spoken number in one prompt (the image-plus-audio probe of every number
stream with both tasks), batched with each input in its own slots through its own projector, answered by every
strategy (MMER: the union of the inputs' masks; per-modality adapters: both sets summed), scored after every stage
and shown in the leaderboard."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from cl_bench.api.strategy import RunContext
from cl_bench.api.training import TaskData
from cl_bench.config import Budget
from cl_bench.models.encoders import build_encoder
from cl_bench.models.lm import PretrainConfig
from cl_bench.models.multimodal import MultimodalLM
from cl_bench.run.base import load_base
from cl_bench.streams import base as streams
from cl_bench.streams.experience import INPUT_MARKER, MixedProbe, TaskStream
from cl_bench.task_streams.vision_audio import MIXED_ITEMS, VisionAudio, VisionAudioConfig

CPU = torch.device("cpu")
SMALL = VisionAudioConfig(train_speakers=6, val_speakers=2, test_speakers=1)


@pytest.fixture(scope="module")
def small_stream(cache_dir):
    return VisionAudio(SMALL).build(cache_dir, progress=False)


def model_for_stream(stream, cache_dir):
    base = load_base("mixtral-tiny", stream, CPU, cache_dir, PretrainConfig(steps=5, batch_size=8), progress=False)
    torch.manual_seed(0)
    return MultimodalLM(base.lm, base.tokenizer, {m: build_encoder(m) for m in ("image", "audio")})


def test_the_probe_pairs_test_scans_with_test_voices_and_asks_their_sum(small_stream, cache_dir):
    (p,) = small_stream.mixed
    assert (p.name, p.modality, len(p.test)) == ("image-plus-audio", "image+audio", MIXED_ITEMS)
    assert streams.check(small_stream) == []
    vision, audio = small_stream.experiences
    image_value = {np.asarray(x, np.float32).tobytes(): v for x, v in zip(vision.test["input"], vision.test["value"])}
    clip_value = {np.asarray(x, np.int16).tobytes(): v for x, v in zip(audio.test["input"], audio.test["value"])}
    for row in p.test.select(range(50)):
        assert row["prompt"] == "the number is <input> . what is the number plus <input> ?"
        a = image_value[np.asarray(row["input_0"], np.float32).tobytes()]  # a test scan ...
        b = clip_value[np.asarray(row["input_1"], np.int16).tobytes()]  # ... and a test speaker's number
        assert row["answer"] == str(a + b)
    assert len(set(zip(map(str, p.test["input_0"]), map(str, p.test["input_1"])))) == MIXED_ITEMS  # no repeat
    assert p.chance == pytest.approx(1 / len(set(p.test["answer"])))
    again = VisionAudio(SMALL).build(cache_dir, progress=False).mixed[0]  # from the cache: the same items
    assert again.test["answer"] == p.test["answer"]


def test_a_probe_needs_its_modalities_in_the_stream_and_a_marker_per_input(small_stream):
    (p,) = small_stream.mixed
    with pytest.raises(ValueError, match="inputs of audio, which no task of the stream learns"):
        TaskStream("x", small_stream.base, small_stream.experiences[:1], small_stream.mixed)
    with pytest.raises(ValueError, match="must join two or more registered non-text modalities"):
        MixedProbe("m", "image", "t", p.test, p.answer_set, 0.1)
    one = p.test.map(lambda r: {"prompt": r["prompt"].replace(INPUT_MARKER, "it", 1)})
    broken = dataclasses.replace(small_stream, mixed=(dataclasses.replace(p, test=one),))
    assert ("mixed probe 'image-plus-audio' test split: every prompt must hold <input> once per input (2 times)"
            in streams.check(broken))


def test_each_input_goes_to_its_own_slots_through_its_own_projector(small_stream, cache_dir):
    model = model_for_stream(small_stream, cache_dir)
    (p,) = small_stream.mixed
    data = TaskData(p.test.select(range(4)), model, p.modality)
    batch = data.batch(range(4))
    assert batch.modality == "image+audio" and batch.features is None
    (m0, f0, s0), (m1, f1, s1) = batch.parts
    assert (m0, m1) == ("image", "audio")
    n0, n1 = (model.encoders[m](f[:1]).shape[1] for m, f in (("image", f0), ("audio", f1)))
    assert s0.sum(1).tolist() == [n0] * 4 and s1.sum(1).tolist() == [n1] * 4
    assert torch.equal(batch.slots, s0 | s1) and not (s0 & s1).any()
    first0, first1 = s0[0].nonzero()[0].item(), s1[0].nonzero()[0].item()
    assert first0 < first1  # the image where the first marker was, the spoken number at the second
    words = model.tokenizer.convert_ids_to_tokens(batch.ids[0, first0 + n0: first1].tolist())
    assert words == [".", "what", "is", "the", "number", "plus"]
    with torch.no_grad():
        embeds, labels = model.inputs(batch)
        for m, f, s in batch.parts:
            expected = model.projectors[m](model.encoders[m](f))
            assert torch.equal(embeds[s].reshape(expected.shape), expected)
        assert torch.equal(embeds[~batch.slots], model.lm.get_input_embeddings()(batch.ids)[~batch.slots])
    assert (labels[batch.answer] >= 0).all() and (labels[~batch.answer] == -100).all()


def make(name, stream, cache_dir, **options):
    from cl_bench.api.strategy import strategy_class

    cls = strategy_class(name)
    strat = cls(cls.Config(**options))
    strat.setup(model_for_stream(stream, cache_dir), RunContext(CPU, 0, Budget(steps=3, batch_size=4), stream.name,
                                                                tuple(t.info for t in stream.tasks), progress=False))
    for e in stream.experiences:
        strat.learn(e.without_test())
    return strat


@pytest.mark.slow
@pytest.mark.parametrize("route", ["modality", "task"])
def test_mmer_answers_a_mixed_item_with_the_union_of_its_inputs_masks(route, small_stream, cache_dir):
    from cl_bench.strategies.mmer import merge as M

    strat = make("mmer", small_stream, cache_dir, alphas="0.5,1.0", lambdas="0.5,1.0", route=route)
    (p,) = small_stream.mixed
    keys = ["image", "audio"] if route == "modality" else ["vision", "audio"]
    alpha = sum(strat.chosen[k]["alpha"] for k in keys) / 2
    model = strat.model_for(p.info)
    some = False
    for n, w in list(model.lm.named_parameters())[:6]:
        masks = [M.unpack(strat.packed[k][n], tuple(w.shape)) for k in keys]
        union = masks[0] | masks[1]
        some |= bool((union & ~masks[0]).any())  # the union is more than one input's mask
        assert torch.equal(w, strat.theta0[n] + alpha * union.to(w.dtype) * strat.tau_star[n])
    assert some
    strat.model_for(small_stream.base.info)  # text: theta_0 again
    assert all(torch.equal(w, strat.theta0[n]) for n, w in strat.model.lm.named_parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adapter-per-modality", "lora-per-modality"])
def test_per_modality_adapters_answer_a_mixed_item_with_both_sets_summed(name, small_stream, cache_dir):
    strat = make(name, small_stream, cache_dir)
    (p,) = small_stream.mixed
    x = torch.randint(4, 20, (2, 6))

    def out(info):
        with torch.no_grad():
            return strat.model_for(info).lm(x).logits

    base, image, audio = (out(t.info) for t in small_stream.tasks)
    both = out(p.info)
    assert not torch.equal(both, image) and not torch.equal(both, audio) and not torch.equal(both, base)
    if name == "adapter-per-modality":
        slot = strat.slots[0]
        assert slot.active == ("image", "audio")
        h = torch.randn(2, 6, strat.model.lm.config.hidden_size)
        assert torch.allclose(slot(h), h + slot.adapters["image"].delta(h) + slot.adapters["audio"].delta(h))
    else:
        assert list(strat.model.lm.base_model.active_adapters) == ["image", "audio"]


@pytest.mark.slow
def test_every_run_scores_the_probe_after_every_stage_and_the_leaderboard_shows_it(small, cache_dir, tmp_path):
    from cl_bench.reporting import leaderboard
    from cl_bench.run.runner import RunConfig, run

    for strategy in ("align-only", "mmer"):
        for seed in (0, 1):
            doc, _ = run(RunConfig(stream="small-numbers", strategy=strategy, device="cpu", threads=1, seed=seed,
                                   budget=Budget(steps=2, batch_size=4), pretrain=PretrainConfig(steps=5),
                                   strategy_options={"alphas": "1.0", "lambdas": "0.5"} if strategy == "mmer" else {},
                                   cache_dir=str(cache_dir), results_dir=str(tmp_path)), progress=False,
                         echo=lambda s: None)
            scores = doc["extra_accuracy"]["mixed/image-plus-audio"]
            assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)  # before any stage, after each
    (table,) = leaderboard.build(tmp_path).tables
    col = next(c for c in table.columns if c.key == "mixed:image-plus-audio")
    assert col.header == "Mixed image-plus-audio"
    for row in table.rows:
        finals = [json.loads(f.read_text())["extra_accuracy"]["mixed/image-plus-audio"][-1]
                  for f in (tmp_path / "runs").rglob(f"*/{row.strategy}/*.json")]
        assert row.values[col.key][0] == pytest.approx(sum(finals) / len(finals))

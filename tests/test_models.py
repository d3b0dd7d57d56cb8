import pytest
import torch

from cl_bench.api.training import TaskData, accuracy, train
from cl_bench.models.encoders import ImagePatches, LogMelFrames, build_encoder
from cl_bench.models.lm import FAMILY_PRESETS, preset_config, word_tokenizer
from cl_bench.models.multimodal import MultimodalLM

WORDS = ["the", "number", "is", "what", "plus", "?", ".", "one", "two", "three", "1", "2", "3", "4", "5"]


def tiny(preset="mixtral-tiny", seed=0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tok = word_tokenizer(WORDS)
    lm = AutoModelForCausalLM.from_config(preset_config(preset, len(tok), tok)).eval()
    lm.set_experts_implementation("eager")
    return lm, tok


def image_split(n=6):
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    return Dataset.from_dict({
        "input": [torch.rand(8, 8, generator=g).mul(16).numpy() for _ in range(n)],
        "prompt": ["the number is <input> . what is the number plus one ?"] * n,
        "answer": [str(1 + i % 4) for i in range(n)]})


def text_split():
    from datasets import Dataset

    return Dataset.from_dict({"prompt": ["what is one plus two ?", "the number is three ."], "answer": ["3", "4"]})


def test_image_patches_shapes():
    enc = ImagePatches(patch=4)
    feats = enc.featurize([torch.arange(64.).reshape(8, 8).numpy()])
    tokens = enc(feats)
    assert tokens.shape == (1, 4, 16)
    # first token is the top-left 4x4 patch, row-major
    assert tokens[0, 0].tolist() == [v / 16 for r in range(4) for v in range(8 * r, 8 * r + 4)]
    assert build_encoder("image").out_dim == 64


def test_log_mel_frames_use_whisper_front_end():
    enc = LogMelFrames()
    t = torch.linspace(0, 1, 16000)
    wave = (torch.sin(2 * torch.pi * 440 * t) * 8000).short().numpy()
    feats = enc.featurize([wave])
    assert feats.shape == (1, 80, 100)  # 80 mel bins, 100 frames per second
    assert enc(feats).shape == (1, 1, 800)
    with pytest.raises(ValueError, match="no encoder"):
        build_encoder("audio", "spectrogram-of-dreams")


def test_encoders_plug_in_by_module_path():
    enc = build_encoder("image", "cl_bench.models.encoders:ImagePatches")
    assert isinstance(enc, ImagePatches) and not any(p.requires_grad for p in enc.parameters())
    with pytest.raises(ValueError, match="is for modality 'image', not 'audio'"):
        build_encoder("audio", "cl_bench.models.encoders:ImagePatches")


def test_input_tokens_replace_the_marker_slots():
    lm, tok = tiny()
    model = MultimodalLM(lm, tok, {"image": build_encoder("image")})
    data = TaskData(image_split(), model, "image")
    b = data.batch([0, 1])
    # [BOS] the number is <slot> . what ...
    assert b.slots[0].nonzero().flatten().tolist() == [4]
    embeds, labels = model.inputs(b)
    want = model.projectors["image"](model.encoders["image"](b.features))
    torch.testing.assert_close(embeds[:, 4], want[:, 0])
    torch.testing.assert_close(embeds[:, 5], lm.get_input_embeddings()(b.ids[:, 5]))
    # loss only on answer tokens
    assert ((labels != -100) == b.answer).all() and b.answer.sum(1).tolist() == [1, 1]


def test_gradients_reach_the_projector_not_the_encoder():
    lm, tok = tiny()
    model = MultimodalLM(lm, tok, {"image": build_encoder("image")})
    data = TaskData(image_split(), model, "image")
    model(data.batch([0, 1, 2])).loss.backward()
    assert model.projectors["image"][0].weight.grad is not None
    assert all(p.grad is None for p in model.encoders.parameters())


@pytest.mark.slow
def test_exact_match_equals_greedy_decoding():
    from datasets import Dataset

    lm, tok = tiny(seed=1)
    model = MultimodalLM(lm, tok, {})
    data = TaskData(text_split(), model, "text")
    train(model, data, [{"params": list(model.parameters()), "lr": 1e-2}], steps=40, batch_size=2, seed=0,
          device=torch.device("cpu"), progress=False)
    wrong = TaskData(Dataset.from_dict({"prompt": text_split()["prompt"], "answer": ["5", "1"]}), model, "text")
    for d, expect in ((data, True), (wrong, False)):
        b = d.batch([0, 1])
        got = model.correct(b)
        assert got.tolist() == [expect, expect]
        for row in range(2):
            n = int(b.attention[row].sum()) - 1  # prompt length
            out = lm.generate(b.ids[row: row + 1, :n], attention_mask=b.attention[row: row + 1, :n], max_new_tokens=1,
                              do_sample=False, pad_token_id=tok.pad_token_id)
            assert bool(got[row]) == (out[0, -1].item() == b.ids[row, n].item())


@pytest.mark.parametrize("preset", sorted(FAMILY_PRESETS))
def test_each_moe_family_trains_through_the_wrapper(preset):
    lm, tok = tiny(preset)
    model = MultimodalLM(lm, tok, {"image": build_encoder("image")})
    data = TaskData(image_split(), model, "image")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train(model, data, [{"params": list(model.parameters()), "lr": 1e-2}], steps=3, batch_size=4, seed=0,
                  device=torch.device("cpu"), progress=False)
    assert stats.steps == 3 and stats.last_loss == stats.last_loss  # not NaN
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("projectors.") for k in changed)
    assert any(".experts." in k for k in changed)
    assert 0.0 <= accuracy(model, data, torch.device("cpu")) <= 1.0


def test_train_refuses_when_nothing_is_trainable():
    lm, tok = tiny()
    model = MultimodalLM(lm, tok, {})
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        train(model, TaskData(text_split(), model, "text"), [{"params": list(model.parameters()), "lr": 1.0}],
              steps=1, batch_size=1, seed=0, device=torch.device("cpu"), progress=False)


@pytest.mark.slow
def test_a_preset_base_names_its_weights_and_its_pretraining_threads(tmp_path, stream):
    import hashlib

    from cl_bench.models.lm import PretrainConfig

    from cl_bench.run.base import load_base

    cfg = PretrainConfig(steps=2, batch_size=8)
    new = load_base("mixtral-tiny", stream, torch.device("cpu"), tmp_path, cfg, progress=False)
    again = load_base("mixtral-tiny", stream, torch.device("cpu"), tmp_path, cfg, progress=False)
    assert new.info["cached"] is False and again.info["cached"] is True
    assert new.info["pretrain_threads"] == again.info["pretrain_threads"] == torch.get_num_threads()
    (weights,) = (tmp_path / "models").glob("*/model.safetensors")
    assert new.info["weights_sha256"] == again.info["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    # another stream with the same text task and words (another name, the same tasks in another order) shares
    # this base: it is neither pre-trained again nor stored twice
    import dataclasses

    other = dataclasses.replace(stream, name="audio-first", experiences=stream.experiences[::-1])
    shared = load_base("mixtral-tiny", other, torch.device("cpu"), tmp_path, cfg, progress=False)
    assert shared.info["cached"] is True and shared.info["key"] == new.info["key"]
    assert len([p for p in (tmp_path / "models").iterdir() if p.is_dir()]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated-weights", "garbage-info", "no-checksums"])
def test_a_damaged_cached_base_is_rebuilt_with_one_line_and_its_files_are_shareable(tmp_path, stream, damage):
    import os

    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.base import load_base

    cfg = PretrainConfig(steps=2, batch_size=8)
    said = []
    new = load_base("mixtral-tiny", stream, torch.device("cpu"), tmp_path, cfg, progress=False, echo=said.append)
    (target,) = [p for p in (tmp_path / "models").iterdir() if p.is_dir()]
    mask = os.umask(0)
    os.umask(mask)
    assert {f.name: f.stat().st_mode & 0o777 for f in target.iterdir()} == {
        f.name: 0o666 & ~mask for f in target.iterdir()}  # safetensors' own 0600 would lock other users out
    if damage == "truncated-weights":
        w = target / "model.safetensors"
        w.write_bytes(w.read_bytes()[:1000])
    elif damage == "garbage-info":
        (target / "clbench.json").write_text("{not json")
    else:  # a cache written before checksums: loaded as it is, and checksummed from then on
        (target / "clbench-checksums.json").unlink()
    again = load_base("mixtral-tiny", stream, torch.device("cpu"), tmp_path, cfg, progress=False, echo=said.append)
    if damage == "no-checksums":
        assert said == [] and again.info["cached"] is True and (target / "clbench-checksums.json").exists()
    else:
        file = "model.safetensors" if damage == "truncated-weights" else "clbench.json"
        assert said == [f"base model cache {target} is damaged ({file} does not match its checksum); rebuilding it"]
        assert again.info["cached"] is False  # pre-trained again, to the same weights
    assert again.info["weights_sha256"] == new.info["weights_sha256"]


def test_each_family_has_one_tiny_preset_and_the_sizes_are_the_default_family():
    from cl_bench.models.families import FAMILIES
    from cl_bench.models.lm import PRESETS, SCALE_PRESETS

    assert sorted(PRESETS[p][0] for p in FAMILY_PRESETS) == sorted(FAMILIES)
    assert set(FAMILY_PRESETS) | set(SCALE_PRESETS) == set(PRESETS)
    assert {PRESETS[p][0] for p in SCALE_PRESETS} == {"mixtral"}

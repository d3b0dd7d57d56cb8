"""Pretrained encoders by path (--encoder image=DIR / audio=DIR), on tiny random CLIP, SigLIP and Whisper models
saved with save_pretrained as a user's directories look."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cl_bench.cli import main
from cl_bench.models.encoders import build_encoder


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory):
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, SiglipImageProcessor, SiglipVisionConfig,
                              SiglipVisionModel, WhisperConfig, WhisperFeatureExtractor, WhisperModel)

    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=30,
                 patch_size=10)
    clip = CLIPModel(CLIPConfig(vision_config=tower, text_config=dict(hidden_size=32, intermediate_size=64,
                                                                      num_hidden_layers=1, num_attention_heads=2),
                                projection_dim=16))
    clip.save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(root / "clip")
    SiglipVisionModel(SiglipVisionConfig(**tower)).save_pretrained(root / "siglip")
    SiglipImageProcessor(size={"height": 30, "width": 30}).save_pretrained(root / "siglip")
    # a 2 s window (100 encoder positions, 50 a second, as the real 30 s / 1500)
    WhisperModel(WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                               decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                               max_source_positions=100, max_target_positions=16)).save_pretrained(root / "whisper")
    WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(root / "whisper")
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
                  ).save_pretrained(root / "wav2vec2")
    Wav2Vec2FeatureExtractor(sampling_rate=16_000).save_pretrained(root / "wav2vec2")
    return root


def digits(n=3):
    return [np.random.default_rng(i).integers(0, 17, (8, 8)).astype(np.float32) for i in range(n)]


@pytest.mark.parametrize("kind, tokens", [("clip", 9), ("siglip", 9)])  # 3x3 patches; CLIP's class token dropped
def test_an_image_tower_from_disk_gives_its_hidden_states_frozen(kind, tokens, encoder_dirs):
    enc = build_encoder("image", str(encoder_dirs / kind))
    assert enc.out_dim == 32 and not any(p.requires_grad for p in enc.parameters()) and not enc.training
    feats = enc.featurize(digits())
    assert feats.shape == (3, 3, 30, 30)  # resized and normalised by the checkpoint's own processor
    out = enc(feats)
    assert out.shape == (3, tokens, 32)
    tower = enc.tower
    want = tower(pixel_values=feats, output_hidden_states=True).hidden_states[-2]  # LLaVA's layer
    assert torch.equal(out, want[:, 1:] if kind == "clip" else want)


def test_whispers_encoder_keeps_the_clips_tokens(encoder_dirs):
    enc = build_encoder("audio", str(encoder_dirs / "whisper"))
    waves = [(np.sin(np.arange(16_000) / (5 + i)) * 8000).astype(np.int16) for i in range(2)]
    out = enc(enc.featurize(waves))
    assert out.shape == (2, 50, 16)  # 1 s of the 2 s window: 50 of its 100 positions


def test_a_wav2vec2_encoder_gives_its_last_hidden_states(encoder_dirs):
    enc = build_encoder("audio", str(encoder_dirs / "wav2vec2"))
    waves = [(np.sin(np.arange(n) / 7) * 8000).astype(np.int16) for n in (16_000, 9_000)]  # padded or cut to 1 s
    feats = enc.featurize(waves)
    assert feats.shape == (2, 16_000)
    out = enc(feats)
    assert out.shape == (2, 798, 16) and torch.equal(out, enc.model(input_values=feats).last_hidden_state)


def test_a_directory_of_another_kind_is_one_line(encoder_dirs):
    with pytest.raises(ValueError, match=r"--encoder image=.*whisper: model type 'whisper' is not an image encoder"):
        build_encoder("image", str(encoder_dirs / "whisper"))
    with pytest.raises(ValueError, match=r"--encoder audio=.*clip: model type 'clip' is not an audio encoder"):
        build_encoder("audio", str(encoder_dirs / "clip"))


def test_an_encoder_without_its_weights_is_one_line(encoder_dirs, tmp_path):
    import shutil

    bad = tmp_path / "clip-no-weights"
    shutil.copytree(encoder_dirs / "clip", bad, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ValueError, match=r"--encoder image=.*clip-no-weights: the encoder cannot be loaded \(.*save "
                                         r"the model and its processor there with save_pretrained\(\)"):
        build_encoder("image", str(bad))


@pytest.fixture(scope="module")
def small_numbers(small):
    return None


@pytest.mark.slow
def test_clip_and_whisper_from_disk_run_end_to_end(encoder_dirs, small_numbers, cache_dir, tmp_path):
    res = tmp_path / "res"
    args = ["run", "--stream", "small-numbers", "--encoder", f"image={encoder_dirs / 'clip'}", "--encoder",
            f"audio={encoder_dirs / 'whisper'}", "--steps", "2", "--batch-size", "4", "--eval-limit", "8",
            "--pretrain-steps", "5", "--device", "cpu", "--cache-dir", str(cache_dir), "--results-dir", str(res), "-q"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    (f,) = res.rglob("*.json")
    doc = json.loads(f.read_text())
    assert doc["status"] == "complete"
    assert [t["encoder"] for t in doc["stream"]["tasks"]] == [
        None, "cl_bench.models.pretrained:PretrainedImage", "cl_bench.models.pretrained:PretrainedAudio"]
    # an encoder changed in place is another run: another key, the first result kept
    from transformers import WhisperModel

    w = WhisperModel.from_pretrained(encoder_dirs / "whisper")
    with torch.no_grad():
        w.encoder.conv1.weight.mul_(0.5)
    w.save_pretrained(encoder_dirs / "whisper")
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert len(list(res.rglob("*.json"))) == 2 and f.exists()


def test_the_layer_and_the_token_count_are_options(encoder_dirs):
    from cl_bench.models.pretrained import build_pretrained

    enc = build_pretrained("image", str(encoder_dirs / "clip"), {"layer": "-1", "tokens": "4"})
    feats = enc.featurize(digits())
    out = enc(feats)
    last = enc.tower(pixel_values=feats, output_hidden_states=True).hidden_states[-1][:, 1:]  # (3, 9, 32)
    grid = last.reshape(3, 3, 3, 32).permute(0, 3, 1, 2)
    want = torch.nn.functional.adaptive_avg_pool2d(grid, 2).flatten(2).transpose(1, 2)
    assert out.shape == (3, 4, 32) and torch.allclose(out, want)
    audio = build_pretrained("audio", str(encoder_dirs / "whisper"), {"tokens": "10"})
    waves = [(np.sin(np.arange(16_000) / 5) * 8000).astype(np.int16)]
    assert audio(audio.featurize(waves)).shape == (1, 10, 16)
    with pytest.raises(ValueError, match=r"image.tokens must be a square number of tokens \(e.g. 144 = 12 x 12\)"):
        build_pretrained("image", str(encoder_dirs / "clip"), {"tokens": "5"})
    with pytest.raises(ValueError, match="image.tokens=16: the encoder gives 9 patch tokens; ask for at most 9"):
        build_pretrained("image", str(encoder_dirs / "clip"), {"tokens": "16"})(feats)
    with pytest.raises(ValueError, match="--encoder-option image has no option 'token'. Did you mean tokens"):
        build_pretrained("image", str(encoder_dirs / "clip"), {"token": "4"})


@pytest.mark.slow
def test_encoder_options_on_the_command_line_are_keyed_and_refused_for_built_in_encoders(
        encoder_dirs, small_numbers, cache_dir, tmp_path):
    res = tmp_path / "res"
    base = ["run", "--stream", "small-numbers", "--steps", "2", "--batch-size", "4", "--eval-limit", "8",
            "--pretrain-steps", "5", "--device", "cpu", "--cache-dir", str(cache_dir), "--results-dir", str(res), "-q"]
    clip = ["--encoder", f"image={encoder_dirs / 'clip'}"]
    for extra in ([], ["--encoder-option", "image.tokens=4", "--encoder-option", "image.layer=-1"]):
        out = CliRunner().invoke(main, [*base, *clip, *extra])
        assert out.exit_code == 0, out.output
    docs = [json.loads(f.read_text()) for f in res.rglob("*.json")]
    assert len(docs) == 2  # options make another run
    assert sorted(str(d["config"]["encoder_options"]) for d in docs) == ["{'image': {'tokens': '4', 'layer': '-1'}}",
                                                                          "{}"]
    out = CliRunner().invoke(main, [*base, "--encoder-option", "image.tokens=4"])
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1
    assert "options are for encoders loaded from a directory (--encoder image=DIR)" in out.output
    out = CliRunner().invoke(main, [*base, "--encoder-option", "tokens=4"])
    assert out.exit_code == 2 and "write MODALITY.KEY=VALUE" in out.output

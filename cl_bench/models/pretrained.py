"""Pretrained encoders by path: ``--encoder image=DIR`` / ``--encoder audio=DIR``.

A directory saved with ``save_pretrained`` (a model and its processor) is loaded through
transformers' Auto classes, frozen, and its hidden states are the tokens the LLaVA projector
maps into the LM:

- image: CLIP and SigLIP (a whole CLIP/SigLIP checkpoint or its vision tower). LLaVA's choice:
  the second-to-last layer's hidden states, without CLIP's class token (CLIP-L/14 at 336 px:
  576 tokens). The stream's grey-scale images are scaled into [0, 1], made RGB and resized and
  normalised by the checkpoint's own image processor.
- audio: Whisper's encoder (a whole Whisper checkpoint), and wav2vec2-style encoders
  (AutoModel's last hidden state; wav2vec2 is tested, HuBERT and WavLM take the same path).
  Whisper pads every clip to its 30 s window; only the tokens of the stream's clip length
  are kept (50 a second).

Which layer and how many tokens are options (``--encoder-option image.layer=-1``,
``image.tokens=144``: the patch grid average-pooled to 12 x 12; ``audio.tokens=N``: the clip's
frames average-pooled to N); the defaults are the ones above. Everything runs on the device the model wrapper is moved to;
featurize runs once per split on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cl_bench.errors import UsageError
from cl_bench.models.encoder_base import Encoder

IMAGE_TYPES = ("clip", "clip_vision_model", "siglip", "siglip_vision_model")
AUDIO_TYPES = ("whisper", "wav2vec2", "hubert", "wavlm")


def is_model_dir(name: str | None) -> bool:
    """Whether an --encoder value names a directory holding a saved model (config.json)."""
    return bool(name) and ":" not in str(name) and (Path(name).expanduser() / "config.json").is_file()


def _model_type(path: Path) -> str:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, local_files_only=True).model_type


def _load(modality: str, path: Path, types: tuple[str, ...], kinds: str, processor_class):
    """(model_type, model, processor) of the directory `path`; one line naming the fix when it is not one of
    `types` or cannot be loaded (transformers' errors vary)."""
    from transformers import AutoModel

    model_type = _model_type(path)
    if model_type not in types:
        raise UsageError(f"--encoder {modality}={path}: model type {model_type!r} is not an {modality} encoder "
                         f"clbench loads; use a {kinds} checkpoint ({', '.join(types)})")
    try:
        return (model_type, AutoModel.from_pretrained(path, local_files_only=True),
                processor_class.from_pretrained(path, local_files_only=True))
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise UsageError(f"--encoder {modality}={path}: the encoder cannot be loaded ({type(e).__name__}: {first}); "
                         "save the model and its processor there with save_pretrained()") from None


@dataclass(frozen=True)
class ImageOptions:
    layer: int = field(default=-2, metadata={"help": "hidden-state layer the tokens come from (-2: LLaVA's)"})
    tokens: int | None = field(default=None, metadata={
        "help": "average-pool the patch grid to this many tokens, a square (e.g. 144 = 12 x 12); None: every patch"})

    def __post_init__(self) -> None:
        if self.tokens is not None and (self.tokens < 1 or math.isqrt(self.tokens) ** 2 != self.tokens):
            raise UsageError(f"--encoder-option image.tokens must be a square number of tokens (e.g. 144 = 12 x 12), "
                             f"got {self.tokens}")


@dataclass(frozen=True)
class AudioOptions:
    layer: int = field(default=-1, metadata={"help": "hidden-state layer the tokens come from (-1: the last)"})
    tokens: int | None = field(default=None, metadata={
        "help": "average-pool the clip's frames to this many tokens; None: every frame (Whisper: 50 a second)"})

    def __post_init__(self) -> None:
        if self.tokens is not None and self.tokens < 1:
            raise UsageError(f"--encoder-option audio.tokens must be >= 1, got {self.tokens}")


class PretrainedImage(Encoder):
    """A CLIP or SigLIP vision tower from a local directory, frozen; tokens: the hidden states of `layer`."""

    modality = "image"
    name = "pretrained"

    def __init__(self, path: str, layer: int = -2, drop_cls: bool | None = None, tokens: int | None = None) -> None:
        super().__init__()
        self.tokens = tokens
        from transformers import AutoImageProcessor

        self.path = Path(path).expanduser()
        model_type, model, self.processor = _load("image", self.path, IMAGE_TYPES, "CLIP or SigLIP", AutoImageProcessor)
        self.tower = getattr(model, "vision_model", model)  # a whole CLIP/SigLIP: its vision half only
        self.layer = layer
        # CLIP prepends a class token (LLaVA drops it); SigLIP has none
        self.drop_cls = model_type.startswith("clip") if drop_cls is None else drop_cls
        config = getattr(model.config, "vision_config", model.config)
        self.out_dim = config.hidden_size

    def featurize(self, raw: list) -> torch.Tensor:
        images = [np.asarray(r, dtype=np.float32) for r in raw]
        top = max(float(np.max(x)) for x in images) or 1.0  # the split's range, into [0, 1]
        rgb = [np.repeat((x / top)[..., None], 3, axis=-1) for x in images]  # (H, W, 3)
        out = self.processor(images=rgb, do_rescale=False, return_tensors="pt")
        return out["pixel_values"]  # (N, 3, size, size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        dtype = next(self.tower.parameters()).dtype
        h = self.tower(pixel_values=features.to(dtype), output_hidden_states=True).hidden_states[self.layer]
        h = h[:, 1:] if self.drop_cls else h  # (B, patches, hidden)
        if self.tokens is None or self.tokens == h.shape[1]:
            return h
        grid, side = math.isqrt(h.shape[1]), math.isqrt(self.tokens)
        if grid * grid != h.shape[1] or side > grid:
            raise UsageError(f"--encoder-option image.tokens={self.tokens}: the encoder gives {h.shape[1]} patch "
                             f"tokens{'' if grid * grid == h.shape[1] else ', not a square grid'}; ask for at most "
                             f"{grid * grid}")
        square = h.reshape(h.shape[0], grid, grid, -1).permute(0, 3, 1, 2)  # (B, hidden, grid, grid)
        pooled = torch.nn.functional.adaptive_avg_pool2d(square, side)  # (B, hidden, side, side)
        return pooled.flatten(2).transpose(1, 2)  # (B, tokens, hidden)


class PretrainedAudio(Encoder):
    """Whisper's encoder, or a wav2vec2-style encoder, from a local directory, frozen."""

    modality = "audio"
    name = "pretrained"

    def __init__(self, path: str, seconds: float = 1.0, sampling_rate: int = 16_000, layer: int = -1,
                 tokens: int | None = None) -> None:
        super().__init__()
        self.layer, self.tokens = layer, tokens
        from transformers import AutoFeatureExtractor

        self.path = Path(path).expanduser()
        self.model_type, model, self.extractor = _load("audio", self.path, AUDIO_TYPES, "Whisper or wav2vec2-style",
                                                       AutoFeatureExtractor)
        self.model = model.get_encoder() if self.model_type == "whisper" else model
        if self.extractor.sampling_rate != sampling_rate:
            raise UsageError(f"--encoder audio={path}: its feature extractor expects {self.extractor.sampling_rate} "
                             f"Hz, the stream's audio is {sampling_rate} Hz")
        self.seconds, self.sampling_rate = seconds, sampling_rate
        self.out_dim = model.config.d_model if self.model_type == "whisper" else model.config.hidden_size

    def featurize(self, raw: list) -> torch.Tensor:
        waves = [np.asarray(r, dtype=np.float32) / 32768.0 for r in raw]
        if self.model_type == "whisper":  # log-mel of the 30 s window Whisper was trained on
            return self.extractor(waves, sampling_rate=self.sampling_rate, return_tensors="pt")["input_features"]
        n = int(self.seconds * self.sampling_rate)
        fixed = [np.pad(w[:n], (0, max(0, n - len(w)))) for w in waves]
        return self.extractor(fixed, sampling_rate=self.sampling_rate, return_tensors="pt")["input_values"]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        if self.model_type == "whisper":
            h = self.model(input_features=features.to(dtype), output_hidden_states=True).hidden_states[self.layer]
            keep = math.ceil(self.seconds * h.shape[1] / (self.extractor.chunk_length or 30))  # the clip's tokens
            h = h[:, :keep]  # (B, frames, d); 1500 frames for Whisper's 30 s
        else:
            h = self.model(input_values=features.to(dtype), output_hidden_states=True).hidden_states[self.layer]
        if self.tokens is None or self.tokens == h.shape[1]:
            return h
        if self.tokens > h.shape[1]:
            raise UsageError(f"--encoder-option audio.tokens={self.tokens}: the encoder gives {h.shape[1]} frames "
                             f"for a clip; ask for at most {h.shape[1]}")
        return torch.nn.functional.adaptive_avg_pool1d(h.transpose(1, 2), self.tokens).transpose(1, 2)


def build_pretrained(modality: str, path: str, options: dict | None = None) -> Encoder:
    """The pretrained encoder of `modality` saved at `path`, with its --encoder-option values (strings)."""
    from cl_bench.config import from_options

    classes = {"image": (PretrainedImage, ImageOptions), "audio": (PretrainedAudio, AudioOptions)}
    if modality not in classes:
        raise UsageError(f"--encoder {modality}={path}: pretrained encoders by path are for image and audio; "
                         f"give {modality} one of its encoders (`clbench ls -v`) or module:Class")
    cls, options_cls = classes[modality]
    opts = from_options(options_cls, options or {}, f"--encoder-option {modality}")
    return cls(path, **{k: getattr(opts, k) for k in ("layer", "tokens")})

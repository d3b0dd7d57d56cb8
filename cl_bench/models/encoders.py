"""Frozen modality encoders: standard front-ends by default, pluggable by name.

An encoder has two halves: ``featurize`` runs once per data split on raw inputs
(numpy arrays: 8x8 images, 16 kHz waveforms) and gives a tensor; ``forward`` maps
a batch of those features to tokens of shape (B, T, out_dim) for the projector.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Encoder(nn.Module):
    """Base class: a frozen map from raw inputs of one modality to a token sequence."""

    modality: str = ""
    name: str = ""
    out_dim: int = 0

    def featurize(self, raw: list) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class ImagePatches(Encoder):
    """Non-overlapping square patches of a grey-scale image, flattened (ViT's front-end).

    An 8x8 digit is one 8x8 patch by default (1 token of 64 values); 4x4 patches give
    4 tokens of 16. Pixel values are scaled by `scale` into [0, 1].
    """

    modality = "image"
    name = "patches"

    def __init__(self, patch: int = 8, image_size: int = 8, scale: float = 16.0) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"patch size {patch} must divide the image size {image_size}")
        self.patch, self.image_size, self.scale = patch, image_size, scale
        self.out_dim = patch * patch

    def featurize(self, raw: list) -> torch.Tensor:
        x = torch.as_tensor(np.stack([np.asarray(r, dtype=np.float32) for r in raw]))
        if x.shape[1:] != (self.image_size, self.image_size):
            raise ValueError(f"ImagePatches expects {self.image_size}x{self.image_size} images, got {tuple(x.shape[1:])}")
        return x / self.scale  # (N, H, W)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        B, H, W = features.shape
        p = self.patch
        x = features.reshape(B, H // p, p, W // p, p).permute(0, 1, 3, 2, 4)  # (B, H/p, W/p, p, p)
        return x.reshape(B, (H // p) * (W // p), p * p)  # (B, T, p*p)


class LogMelFrames(Encoder):
    """Whisper's log-mel front-end (transformers' WhisperFeatureExtractor), pooled in time.

    One second of 16 kHz audio gives 100 frames of 80 mel bins; average pooling by
    `pool` gives 100 / pool frames, which are stacked `frames_per_token` at a time
    into tokens (default: 10 frames of 80 bins -> 1 token of 800 values).
    """

    modality = "audio"
    name = "log-mel"

    def __init__(self, n_mels: int = 80, seconds: int = 1, pool: int = 10, frames_per_token: int = 10,
                 sampling_rate: int = 16_000) -> None:
        super().__init__()
        from transformers import WhisperFeatureExtractor

        self.extractor = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=sampling_rate,
                                                 chunk_length=seconds)
        frames = self.extractor.nb_max_frames // pool
        if frames % frames_per_token:
            raise ValueError(f"frames_per_token {frames_per_token} must divide the {frames} pooled frames")
        self.pool, self.frames_per_token, self.sampling_rate = pool, frames_per_token, sampling_rate
        self.out_dim = n_mels * frames_per_token

    def featurize(self, raw: list) -> torch.Tensor:
        waves = [np.asarray(r, dtype=np.float32) / 32768.0 for r in raw]
        out = self.extractor(waves, sampling_rate=self.sampling_rate, return_tensors="pt")
        return out["input_features"]  # (N, n_mels, frames)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = nn.functional.avg_pool1d(features, self.pool).transpose(1, 2)  # (B, frames / pool, n_mels)
        B, F, M = x.shape
        return x.reshape(B, F // self.frames_per_token, self.frames_per_token * M)  # (B, T, out_dim)


ENCODERS = {("image", "patches"): ImagePatches, ("audio", "log-mel"): LogMelFrames}
DEFAULT_ENCODERS = {"image": "patches", "audio": "log-mel"}


def build_encoder(modality: str, name: str | None = None) -> Encoder:
    """The frozen encoder `name` for `modality` (its default when name is None).

    `name` is a built-in name ("patches", "log-mel") or "module:Class" naming an
    Encoder subclass of your own, constructed without arguments.
    """
    from cl_bench.registry import Entry

    name = name or DEFAULT_ENCODERS.get(modality)
    if name and ":" in name:
        cls = Entry(name, name, "--encoder").load()
    else:
        cls = ENCODERS.get((modality, name))
    if not (isinstance(cls, type) and issubclass(cls, Encoder)):
        known = ", ".join(f"{m}={n}" for m, n in ENCODERS)
        raise ValueError(f"no encoder {name!r} for modality {modality!r}; known: {known}, "
                         "or module:Class naming an Encoder subclass")
    enc = cls()
    if enc.modality != modality:
        raise ValueError(f"encoder {name!r} is for modality {enc.modality!r}, not {modality!r}")
    enc.requires_grad_(False)
    return enc.eval()

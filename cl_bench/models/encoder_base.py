"""The Encoder base class, on its own so that the built-in and the pretrained encoders both build on it."""

from __future__ import annotations

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

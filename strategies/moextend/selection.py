"""MoExtend's extension stage as pure functions: routing statistics and layer selection."""

from __future__ import annotations

import random

import torch

from cl_bench.strategies.moextend.surgery import n_selected

LAYER_CHOICES = ("data", "all", "first-half", "random")


def topk_counts(router_logits: torch.Tensor, top_k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """How often each expert is among the top-k of the router probabilities. (N, E) -> (E,).

    Uses the k MOST likely experts (the public script sorted ascending and so counted
    the least likely ones: a defect not copied here).
    """
    idx = torch.topk(torch.softmax(router_logits.float(), dim=-1), top_k, dim=-1).indices  # (N, k)
    if mask is not None:
        idx = idx[mask.reshape(-1).bool()]
    return torch.bincount(idx.reshape(-1), minlength=router_logits.shape[-1]).to(torch.float64)


def routing_shift(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Per-layer score: std over experts of (after - before) routing distributions. (L, E) x2 -> (L,)."""
    b = before / before.sum(-1, keepdim=True).clamp(min=1)
    a = after / after.sum(-1, keepdim=True).clamp(min=1)
    return (a - b).std(dim=-1)


def select_layers(scores: torch.Tensor, fraction: float, choice: str = "data", seed: int = 0) -> list[int]:
    """Indices (into `scores`) of the layers to extend, sorted.

    data: the ceil(L * fraction) highest routing shifts; all: every layer; first-half:
    the first ceil(L * fraction) layers; random: ceil(L * fraction) layers at random.
    """
    L = scores.shape[0]
    k = n_selected(L, fraction)
    if choice == "data":
        chosen = torch.topk(scores, k).indices.tolist()
    elif choice == "all":
        chosen = list(range(L))
    elif choice == "first-half":
        chosen = list(range(k))
    elif choice == "random":
        chosen = random.Random(seed).sample(range(L), k)
    else:
        raise ValueError(f"layer choice must be one of {', '.join(LAYER_CHOICES)}, got {choice!r}")
    return sorted(chosen)


def source_experts(after: torch.Tensor, layers: list[int]) -> list[int]:
    """The most used expert after router tuning, per selected layer. after: (L, E)."""
    return [int(after[i].argmax()) for i in layers]

"""Continual-learning metrics over accuracy matrices, as pure torch functions.

R has shape [..., T+1, T+1]: R[..., i, j] is the accuracy on task j after stage i.
Row 0 is the model before any new modality; column 0 is the base text task; stage i
(i >= 1) learns task i. Leading dimensions batch runs, so 10,000 runs are one call,
on whatever device R lives on. Undefined values are NaN, never 0.

Definitions (docs/metrics in README.md):
- ACC = mean_j R[T, j]                      (all tasks, text included)
- BWT = mean_{j<T} R[T, j] - R[j, j]        (Lopez-Paz & Ranzato 2017; includes j = T-1)
- FWT = mean_{j>=1} R[j-1, j] - b_j         (GEM); with b = R[0, :] (the base model),
                                              the j = 1 term is 0 by construction, so the mean
                                              runs over j >= 2 and is NaN for T = 1
- forgetting = mean_{j<T} max_{l<T} R[l, j] - R[T, j]   (Chaudhry et al. 2018)
"""

from __future__ import annotations

import torch


def _check(R: torch.Tensor) -> int:
    if R.dim() < 2 or R.shape[-1] != R.shape[-2]:
        raise ValueError(f"accuracy matrix must have shape [..., T+1, T+1], got {tuple(R.shape)}")
    return R.shape[-1] - 1  # T, the number of new tasks


def _nan(R: torch.Tensor) -> torch.Tensor:
    return torch.full(R.shape[:-2], float("nan"), dtype=R.dtype, device=R.device)


def average_accuracy(R: torch.Tensor) -> torch.Tensor:
    """ACC: mean accuracy over all tasks after the last stage. Shape [...]."""
    _check(R)
    return R[..., -1, :].mean(-1)


def backward_transfer(R: torch.Tensor) -> torch.Tensor:
    """BWT: mean over tasks j < T of R[T, j] - R[j, j]; NaN when T = 0."""
    T = _check(R)
    if T == 0:
        return _nan(R)
    diag = torch.diagonal(R, dim1=-2, dim2=-1)[..., :T]  # [..., T]: R[j, j] for j < T
    return (R[..., T, :T] - diag).mean(-1)


def forward_transfer(R: torch.Tensor, reference: str | torch.Tensor = "base") -> torch.Tensor:
    """FWT: mean over new tasks of R[j-1, j] - b_j.

    Args:
        reference: "base" (b = R[0, :], the model before the stream; the j = 1 term is
            then 0 by construction and left out, so T = 1 gives NaN), or a tensor of
            reference accuracies b of shape [..., T+1] (e.g. chance levels), which keeps
            every j >= 1.
    """
    T = _check(R)
    idx = torch.arange(1, T + 1, device=R.device)
    before = R[..., idx - 1, idx]  # [..., T]: R[j-1, j]
    if isinstance(reference, str):
        if reference != "base":
            raise ValueError(f"reference must be 'base' or a tensor of accuracies, got {reference!r}")
        if T < 2:
            return _nan(R)
        return (before - R[..., 0, 1:])[..., 1:].mean(-1)
    b = torch.as_tensor(reference, dtype=R.dtype, device=R.device)
    if T == 0:
        return _nan(R)
    return (before - b[..., 1:]).mean(-1)


def forgetting_per_task(R: torch.Tensor) -> torch.Tensor:
    """f_j = max_{l<T} R[l, j] - R[T, j] for j < T. Shape [..., T]."""
    T = _check(R)
    return R[..., :T, :T].amax(-2) - R[..., T, :T]


def forgetting(R: torch.Tensor) -> torch.Tensor:
    """Average forgetting over tasks j < T (Chaudhry et al. 2018); NaN when T = 0."""
    T = _check(R)
    if T == 0:
        return _nan(R)
    return forgetting_per_task(R).mean(-1)


def summarize(R: torch.Tensor, chance: torch.Tensor | None = None) -> dict[str, float | None]:
    """All headline metrics of one run's matrix as plain floats (None where undefined)."""
    if R.dim() != 2:
        raise ValueError(f"summarize takes one run's matrix [T+1, T+1], got {tuple(R.shape)}")
    out = {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, "base"),
        "forgetting": forgetting(R),
        "text_retention": R[-1, 0] / R[0, 0] * 100 if R[0, 0] > 0 else torch.tensor(float("nan")),
    }
    if chance is not None:
        out["fwt_vs_chance"] = forward_transfer(R, chance)
    return {k: (None if torch.isnan(v).item() else round(float(v), 6)) for k, v in out.items()}

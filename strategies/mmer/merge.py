"""MMER's merge and decoupling as pure tensor functions (one parameter tensor at a time).

Task vectors tau_i = theta_i - theta_0 of n per-modality models, stacked as (n, ...):
- trim: keep each tau_i's top-K% magnitudes (K = 100%: no trimming, the default), per
  parameter tensor (default) or over the whole task vector (`global_thresholds`);
- elect: gamma = sgn(sum_i tau_i);
- merge: per entry, over the tau_i whose sign agrees with gamma, the largest magnitude
  (default) or the mean (TIES), times gamma;
- masks: m_i = 1[|tau_i| >= lambda |tau_i - tau*|], the entry-wise choice between
  theta_0 and theta_0 + tau* that is closer to theta_i when lambda = 1.
Masks are stored bit-packed: one bit per parameter per modality.
"""

from __future__ import annotations

import numpy as np
import torch


def magnitude_threshold(magnitudes: torch.Tensor, keep: float) -> torch.Tensor:
    """The smallest magnitude among the `keep` fraction of largest ones (entries >= it are kept)."""
    k = max(1, int(round(keep * magnitudes.numel())))
    return magnitudes.flatten().kthvalue(magnitudes.numel() - k + 1).values


def trim(tau: torch.Tensor, keep: float = 1.0, threshold: torch.Tensor | float | None = None) -> torch.Tensor:
    """Zero all but the `keep` fraction of largest-magnitude entries of one task vector's tensor.

    threshold: a magnitude to trim below instead (a whole task vector's, see global_thresholds).
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if keep == 1.0 or tau.numel() == 0:
        return tau
    if threshold is None:
        threshold = magnitude_threshold(tau.abs(), keep)
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def elect_sign(taus: torch.Tensor) -> torch.Tensor:
    """gamma = sgn(sum_i tau_i), shape of one task vector. taus: (n, ...)."""
    return torch.sign(taus.sum(0))


def merge(taus: torch.Tensor, method: str = "max", keep: float = 1.0, thresholds=None) -> torch.Tensor:
    """tau*: per entry, the agreeing task vectors' largest magnitude ("max") or mean ("mean"), signed by gamma.

    thresholds: per task vector, the magnitude to trim below (whole-vector trimming); None trims
    each tensor by its own top-`keep` fraction.
    """
    if method not in ("max", "mean"):
        raise ValueError(f"merge method must be 'max' or 'mean', got {method!r}")
    if keep < 1.0:
        taus = torch.stack([trim(t, keep, None if thresholds is None else thresholds[i]) for i, t in enumerate(taus)])
    gamma = elect_sign(taus)
    agree = (torch.sign(taus) == gamma) & (taus != 0)  # (n, ...)
    mags = taus.abs() * agree
    if method == "max":
        return gamma * mags.amax(0)
    count = agree.sum(0).clamp(min=1)
    return gamma * mags.sum(0) / count


def masks(taus: torch.Tensor, tau_star: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """m_i = |tau_i| >= lambda * |tau_i - tau*|, as bool (n, ...)."""
    return taus.abs() >= lam * (taus - tau_star.unsqueeze(0)).abs()


def pack(mask: torch.Tensor) -> torch.Tensor:
    """Bit-pack a bool mask into uint8 (8 entries a byte)."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy().reshape(-1).astype(np.uint8)))


def unpack(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `pack` for a mask of `shape`."""
    n = int(np.prod(shape)) if len(shape) else 1
    bits = np.unpackbits(packed.cpu().numpy(), count=n)
    return torch.from_numpy(bits.astype(bool)).reshape(shape)


def read_tensor(path, name: str) -> torch.Tensor:
    """One tensor of a safetensors file, without reading the others."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(name)


def global_thresholds(paths: list, names: list[str], keep: float) -> list[torch.Tensor]:
    """Per task vector file, the magnitude threshold of its top-`keep` fraction over all its tensors.

    Holds one task vector's magnitudes at a time (4 bytes a parameter).
    """
    return [magnitude_threshold(torch.cat([read_tensor(p, n).abs().float().flatten() for n in names]), keep)
            for p in paths]


def merge_files(paths: list, names: list[str], method: str = "max", keep: float = 1.0,
                trim_scope: str = "tensor") -> dict[str, torch.Tensor]:
    """tau* of the task vectors stored in safetensors files, tensor by tensor.

    Only one parameter's task vectors (n of them) are in memory at a time, besides the
    growing merged vector itself (and, with trim_scope="vector", one pass before that to find
    each task vector's threshold).
    """
    if trim_scope not in ("tensor", "vector"):
        raise ValueError(f"trim_scope must be 'tensor' or 'vector', got {trim_scope!r}")
    thresholds = global_thresholds(paths, names, keep) if trim_scope == "vector" and keep < 1.0 else None
    return {n: merge(torch.stack([read_tensor(p, n) for p in paths]), method, keep, thresholds) for n in names}

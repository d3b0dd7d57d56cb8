"""Continual-learning metrics over accuracy matrices, as pure torch functions.

R has shape [..., T+1, T+1]: R[..., i, j] is the accuracy on task j after stage i.
Row 0 is the model before any new modality; column 0 is the base text task; stage i
(i >= 1) learns task i. Leading dimensions batch runs, so 10,000 runs are one call,
on whatever device R lives on. Undefined values are NaN, never 0.

Definitions (docs/metrics.md):
- ACC = mean_j R[T, j]                      (all tasks, text included)
- BWT = mean_{j<T} R[T, j] - R[j, j]        (Lopez-Paz & Ranzato 2017; includes j = T-1)
- FWT = mean_{j>=1} R[j-1, j] - b_j         (GEM); with b = R[0, :] (the base model),
                                              the j = 1 term is 0 by construction, so the mean
                                              runs over j >= 2 and is NaN for T = 1
- forgetting = mean_{j<T} max_{l<T} R[l, j] - R[T, j]   (Chaudhry et al. 2018)
- intransigence I_k = a*_k - R[k, k], k = 1..T   (Chaudhry et al. 2018); a*_k = a reference model's
                                              accuracy on task k after stage k: on the leaderboard the
                                              better of `joint` and `single-ft` (fine-tuning on k alone)
- retention_j = 100 R[T, j] / ref_j          (MMER); default ref_j = R[j, j] (R[0, 0] for text)
- transfer matrix M[i, j] = (R[i, j] - ref_j) / (ref_j - chance_j)   (CLiMB-style); same default ref
- plasticity_j = R[j, j], j = 1..T; normalised: M[j, j] against a given reference
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
    if T == 0:
        return R[..., 0, :0]  # no earlier task: empty, [..., 0]
    return R[..., :T, :T].amax(-2) - R[..., T, :T]


def forgetting(R: torch.Tensor) -> torch.Tensor:
    """Average forgetting over tasks j < T (Chaudhry et al. 2018); NaN when T = 0."""
    T = _check(R)
    if T == 0:
        return _nan(R)
    return forgetting_per_task(R).mean(-1)


def _vector(x, R: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """x as a tensor of R's dtype and device whose last dimension is n (leading dims broadcast)."""
    v = torch.as_tensor(x, dtype=R.dtype, device=R.device)
    if v.dim() == 0 or v.shape[-1] != n:
        raise ValueError(f"{name} must have shape [..., {n}] for this matrix, got {tuple(v.shape)}")
    return v


def intransigence_per_task(R: torch.Tensor, joint_diag) -> torch.Tensor:
    """I_k = a*_k - R[k, k] for k = 1..T. Shape [..., T].

    Args:
        joint_diag: a*_1..a*_T, shape [..., T] (text excluded): the `joint` strategy's accuracy
            on task k after stage k, i.e. torch.diagonal(R_joint, dim1=-2, dim2=-1)[..., 1:]
            (see joint_reference). Leading dimensions broadcast against R's.
    """
    T = _check(R)
    a = _vector(joint_diag, R, T, "joint_diag")
    return a - torch.diagonal(R, dim1=-2, dim2=-1)[..., 1:]


def intransigence(R: torch.Tensor, joint_diag) -> torch.Tensor:
    """Mean intransigence over new tasks k = 1..T (Chaudhry et al. 2018); NaN when T = 0."""
    I = intransigence_per_task(R, joint_diag)
    if I.shape[-1] == 0:
        return torch.full(I.shape[:-1], float("nan"), dtype=I.dtype, device=I.device)
    return I.mean(-1)


def joint_reference(R_joint: torch.Tensor) -> torch.Tensor:
    """a*_k = R_joint[k, k] for k = 1..T from the joint strategy's matrix [..., T+1, T+1]. Shape [..., T]."""
    _check(R_joint)
    return torch.diagonal(R_joint, dim1=-2, dim2=-1)[..., 1:]


def best_joint_reference(references: list[torch.Tensor]) -> torch.Tensor:
    """a*_k, the best model of task k the benchmark has: the largest mean R[k, k] over reference rows.

    Args:
        references: per reference row (joint training, single-task fine-tuning), its runs' matrices
            [runs, T+1, T+1].

    Returns:
        [T]: per new task, the best row's mean over runs of its diagonal (joint_reference).
    """
    return torch.stack([joint_reference(R.mean(0)) for R in references]).amax(0)


def default_reference(R: torch.Tensor) -> torch.Tensor:
    """ref_j = R[j, j]: the original model on text (R[0, 0]) and, for modality j, the model
    right after learning it. Shape [..., T+1].

    The default of retention and transfer_matrix when no single-modality fine-tuned reference
    is given. Against it, the last task's retention is 100 and the transfer matrix's diagonal
    is 0 by construction.
    """
    _check(R)
    return torch.diagonal(R, dim1=-2, dim2=-1)


def _reference(R: torch.Tensor, reference) -> torch.Tensor:
    if reference is None:
        return default_reference(R)
    return _vector(reference, R, R.shape[-1], "reference")


def retention(R: torch.Tensor, reference=None) -> torch.Tensor:
    """Retention (MMER): 100 R[T, j] / ref_j for every task j. Shape [..., T+1]; NaN where ref_j = 0.

    Args:
        reference: ref of shape [..., T+1], e.g. each single-modality fine-tuned model's accuracy
            on its modality (and the original model's on text); None for default_reference(R).
    """
    _check(R)
    ref = _reference(R, reference)
    last = R[..., -1, :]
    return torch.where(ref != 0, last / ref * 100, torch.full_like(last, float("nan")))


def mean_retention(R: torch.Tensor, reference=None) -> torch.Tensor:
    """Mean retention: over j < T with the default reference (task T is 100 by construction),
    over every j with a given reference; NaN-aware (skips tasks whose reference is 0)."""
    T = _check(R)
    ret = retention(R, reference)
    if reference is None:
        if T == 0:
            return _nan(R)
        ret = ret[..., :T]
    return ret.nanmean(-1)


def transfer_matrix(R: torch.Tensor, reference=None, chance=None) -> torch.Tensor:
    """Normalised transfer matrix M[i, j] = (R[i, j] - ref_j) / (ref_j - chance_j). Shape [..., T+1, T+1].

    Below the diagonal: backward transfer (negative: forgetting; -1 is back to chance); above:
    zero-shot accuracy before learning j (-1: chance); the diagonal: plasticity against ref.
    NaN where ref_j = chance_j.

    Args:
        reference: ref of shape [..., T+1]; None for default_reference(R) (ref_j = R[j, j]), which
            makes the diagonal 0: pass a single-modality fine-tuned reference to read plasticity off it.
        chance: chance accuracy per task, shape [..., T+1]; None for 0 (M = R / ref - 1).
    """
    _check(R)
    ref = _reference(R, reference)
    c = torch.zeros_like(ref) if chance is None else _vector(chance, R, R.shape[-1], "chance")
    den = (ref - c).unsqueeze(-2)  # [..., 1, T+1]: one denominator per column
    num = R - ref.unsqueeze(-2)
    return torch.where(den != 0, num / den, torch.full_like(num, float("nan")))


def plasticity(R: torch.Tensor) -> torch.Tensor:
    """R[j, j] for j = 1..T: accuracy on each new task right after learning it. Shape [..., T]."""
    _check(R)
    return torch.diagonal(R, dim1=-2, dim2=-1)[..., 1:]


def normalised_plasticity(R: torch.Tensor, reference, chance=None) -> torch.Tensor:
    """M[j, j] = (R[j, j] - ref_j) / (ref_j - chance_j) for j = 1..T, the transfer matrix's diagonal
    against a given reference (e.g. single-modality fine-tuning): 0 matches it, -1 is chance. Shape [..., T]."""
    if reference is None:
        raise ValueError("normalised_plasticity needs a reference: against the default (R[j, j]) it is 0")
    return torch.diagonal(transfer_matrix(R, reference, chance), dim1=-2, dim2=-1)[..., 1:]


def all_metrics(R: torch.Tensor, chance=None, joint_diag=None, reference=None) -> dict[str, torch.Tensor]:
    """Every metric of a batch of runs at once, on R's device.

    Args:
        R: accuracy matrices [..., T+1, T+1] (typically [runs, T+1, T+1]).
        chance: chance accuracy per task [..., T+1]; adds "fwt_vs_chance" and normalises the
            transfer matrix (None: chance 0 there).
        joint_diag: a*_1..a*_T [..., T] from the joint strategy; adds the intransigence keys.
        reference: ref [..., T+1] for retention and the transfer matrix (None: default_reference).

    Returns:
        Per run, shape [...]: "acc", "bwt", "fwt" (base reference), "forgetting", "text_retention",
        "mean_retention", "mean_plasticity", and "fwt_vs_chance", "intransigence" when given their inputs.
        Per task: "retention" [..., T+1], "plasticity" [..., T], "forgetting_per_task" [..., T],
        "intransigence_per_task" [..., T], "transfer_matrix" [..., T+1, T+1].
    """
    T = _check(R)
    ret = retention(R, reference)
    plast = plasticity(R)
    out = {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, "base"),
        "forgetting": forgetting(R),
        "text_retention": ret[..., 0],
        "mean_retention": mean_retention(R, reference),
        "mean_plasticity": plast.mean(-1) if T > 0 else _nan(R),
        "retention": ret,
        "plasticity": plast,
        "forgetting_per_task": forgetting_per_task(R),
        "transfer_matrix": transfer_matrix(R, reference, chance),
    }
    if chance is not None:
        out["fwt_vs_chance"] = forward_transfer(R, _vector(chance, R, T + 1, "chance"))
    if joint_diag is not None:
        out["intransigence_per_task"] = intransigence_per_task(R, joint_diag)
        out["intransigence"] = intransigence(R, joint_diag)
    return out


def _plain(v: torch.Tensor):
    """A 0-d tensor as a rounded float, a 1-d one as a list of them; NaN becomes None."""
    if v.dim() == 0:
        return None if torch.isnan(v).item() else round(float(v), 6)
    return [_plain(x) for x in v]


def summarize(R: torch.Tensor, chance: torch.Tensor | None = None,
              joint_diag: torch.Tensor | None = None) -> dict[str, float | None | list]:
    """All headline metrics of one run's matrix as plain floats (None where undefined).

    Adds per-task lists "retention" (T+1) and "plasticity" (T), and "intransigence" when joint_diag
    (a*_1..a*_T, see intransigence_per_task) is given.
    """
    if R.dim() != 2:
        raise ValueError(f"summarize takes one run's matrix [T+1, T+1], got {tuple(R.shape)}")
    m = all_metrics(R, chance, joint_diag)
    keys = ["acc", "bwt", "fwt", "forgetting", "text_retention", "mean_retention", "retention", "plasticity"]
    keys += [k for k in ("fwt_vs_chance", "intransigence") if k in m]
    return {k: _plain(m[k]) for k in keys}


def mean_ci(values, level: float = 0.95, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and Student-t confidence half-width over seeds, ignoring NaN.

    Args:
        values: a tensor or a list of numbers; reduced over `dim` (the seeds), other dims kept.
        level: confidence level in (0, 1).
        dim: the dimension holding the seeds.

    Returns:
        (mean, half_width, n) as tensors of the remaining shape (0-d for a flat input), on the input's
        device. n counts the non-NaN values; the mean is NaN for n = 0 and the half-width for n < 2.
    """
    from scipy import stats

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = torch.as_tensor(values)
    if not x.is_floating_point():
        x = x.to(torch.float64)
    ok = ~torch.isnan(x)
    n = ok.sum(dim)
    mean = x.nanmean(dim)
    # sample variance (ddof 1) over the non-NaN values; clamp keeps n = 1 finite before masking
    dev2 = torch.where(ok, (x - mean.unsqueeze(dim)) ** 2, torch.zeros_like(x)).sum(dim)
    sd = (dev2 / (n - 1).clamp(min=1)).sqrt()
    df = (n - 1).clamp(min=1).cpu().numpy()
    q = torch.as_tensor(stats.t.ppf(0.5 + level / 2, df), dtype=x.dtype, device=x.device)
    half = q * sd / n.clamp(min=1).to(x.dtype).sqrt()
    half = torch.where(n >= 2, half, torch.full_like(half, float("nan")))
    return mean, half, n

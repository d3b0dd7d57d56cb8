"""Encoders' output shapes checked before training: `clbench run` and `clbench validate --stream` share it."""

from __future__ import annotations

from cl_bench.errors import EnvironmentProblem


class EncoderShapeError(EnvironmentProblem):
    """An encoder installed or named for a run gives features of another shape than (items, tokens, out_dim): one
    line naming the modality, the encoder, both shapes and the fix (a traceback would only point at this check)."""


def shape_problem(shape: tuple[int, ...] | None, items: int, out_dim: int) -> str | None:
    """What is wrong with an encoder's output `shape` (None: not a tensor) for `items` inputs, with the fix; None
    where it is (items, tokens >= 1, out_dim)."""
    want = f"({items}, tokens >= 1, {out_dim})"
    if shape is None:
        return f"gives no tensor, expected one of shape {want}; make forward return a tensor (items, tokens, out_dim)"
    if len(shape) == 3 and shape[0] == items and shape[1] >= 1:
        if shape[2] == out_dim:
            return None
        fix = f"set its out_dim to {shape[2]}, or make forward return {out_dim} values per token"
    else:
        fix = "make forward return (items, tokens, out_dim): one row per input, at least one token each"
    return f"gives shape {tuple(shape)}, expected {want} (out_dim {out_dim}); {fix}"


def encoder_label(enc) -> str:
    """An encoder in words: "'patches' (cl_bench.models.encoders:ImagePatches)"."""
    where = f"{type(enc).__module__}:{type(enc).__qualname__}"
    return f"{enc.name!r} ({where})" if getattr(enc, "name", "") else where


def encode(enc, raw: list):
    """`enc`'s features of `raw` (items, tokens, out_dim), without gradients."""
    import torch

    with torch.no_grad():
        return enc(enc.featurize(raw))


def check_encoders(encoders: dict, stream, items: int = 4) -> None:
    """Raise EncoderShapeError where an encoder of a run (modality -> Encoder) gives features of the wrong shape
    on the first `items` training inputs of its modality's first task: one line before training, not a shape
    error from inside the projector. An encoder that raises is left to raise (its traceback names its code)."""
    import torch

    for modality, enc in encoders.items():
        exp = next((e for e in stream.experiences if e.modality == modality), None)
        if exp is None:
            continue
        raw = list(exp.train.select(range(min(items, len(exp.train))))["input"])
        out = encode(enc, raw)
        problem = shape_problem(tuple(out.shape) if isinstance(out, torch.Tensor) else None, len(raw), enc.out_dim)
        if problem is not None:
            raise EncoderShapeError(f"modality {modality!r}: encoder {encoder_label(enc)} {problem} (on {len(raw)} "
                                    f"training inputs of task {exp.name!r})")

"""Routing analysis: per MoE layer, the share of a task's tokens routed to each expert.

Recorded by the runner during every evaluation (before the first stage and after each one)
for any strategy whose model has MoE layers, so that a reader sees which tokens moved to
which experts when a strategy forgets. Hand-written: transformers exposes router logits per
layer, not the top-k picks a model actually used (MoExtend's extended blocks pick on their
own), and no library aggregates them per task.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from cl_bench.models.families import FAMILIES

_LAYER = re.compile(r"layers\.(\d+)\.")
ROUTER_ATTRS = tuple(dict.fromkeys(f.router_attr for f in FAMILIES.values()))


def moe_layers(lm: nn.Module) -> list[tuple[int, nn.Module, str]]:
    """(decoder layer index, module to hook, kind) of every MoE block of `lm`, in layer order.

    kind "extended": a MoExtend block (its `last_indices` after each forward); kind "router": a
    transformers router module (`gate`, or `router` in Granite-MoE, whose output is (logits, weights, indices)).
    """
    found, extended = [], []
    for name, m in lm.named_modules():
        if any(name.startswith(e + ".") for e in extended):
            continue  # the original block inside an extended one is not called as such
        layer = _LAYER.search(name + ".")
        if layer is None:
            continue
        if type(m).__name__ == "ExtendedMoeBlock":
            extended.append(name)
            found.append((int(layer.group(1)), m, "extended"))
        elif hasattr(m, "experts"):  # a sparse block: its router is where its family keeps it (gate, router)
            router = next((r for r in (getattr(m, a, None) for a in ROUTER_ATTRS)
                           if isinstance(r, nn.Module) and hasattr(r, "top_k")), None)
            if router is not None:
                found.append((int(layer.group(1)), router, "router"))
    return sorted(found, key=lambda f: f[0])


def n_experts(module: nn.Module, kind: str) -> int:
    return module.n_experts if kind == "extended" else module.weight.shape[0]


def expert_stages(module: nn.Module, kind: str) -> list[int]:
    """Per expert of the layer, the stage that added it (-1 for the model's own experts)."""
    return module.expert_stages if kind == "extended" else [-1] * module.weight.shape[0]


class RoutingRecorder:
    """Counts, per MoE layer of `lm`, how many real tokens are routed to each expert (top-k slots).

    Use as a context manager around forward passes of `lm`; hooks are removed on exit. Padding
    is left out through the attention mask the LM is called with.
    """

    def __init__(self, lm: nn.Module) -> None:
        self.layers = moe_layers(lm)
        self.lm = lm
        self.counts = [torch.zeros(n_experts(m, k), dtype=torch.float64) for _, m, k in self.layers]
        self.tokens = 0
        self._mask: torch.Tensor | None = None
        self._handles = []

    def __enter__(self) -> "RoutingRecorder":
        def take_mask(module, args, kwargs):
            mask = kwargs.get("attention_mask")
            self._mask = None if mask is None else mask.reshape(-1).bool()
            if self._mask is not None:
                self.tokens += int(self._mask.sum())

        self._handles.append(self.lm.register_forward_pre_hook(take_mask, with_kwargs=True))
        for i, (_, module, kind) in enumerate(self.layers):
            self._handles.append(module.register_forward_hook(self._counter(i, kind)))
        return self

    def _counter(self, i: int, kind: str):
        def count(module, args, output):
            idx = module.last_indices if kind == "extended" else output[2]  # (N, k)
            if self._mask is not None and self._mask.numel() == idx.shape[0]:
                idx = idx[self._mask.to(idx.device)]
            self.counts[i] += torch.bincount(idx.reshape(-1).cpu(), minlength=self.counts[i].numel()).double()
        return count

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def shares(self) -> list[list[float]]:
        """Per layer, the share of top-k slots each expert received (each list sums to 1)."""
        return [(c / c.sum().clamp(min=1)).tolist() for c in self.counts]


def record(lm: nn.Module) -> dict | None:
    """The layout of `lm`'s MoE layers for a result file: layer indices and which stage added each expert."""
    layers = moe_layers(lm)
    if not layers:
        return None
    return {"layers": [i for i, _, _ in layers], "expert_stage": [expert_stages(m, k) for _, m, k in layers]}


def grouped_shares(shares: list[list[float]], stages: list[list[int]], n_stages: int) -> torch.Tensor:
    """(layers, E + n_stages): the original experts' shares, then per stage the summed share of the
    experts that stage added (0 where it added none), so that seeds whose extended layers differ
    can be averaged."""
    n_orig = max(st.count(-1) for st in stages)
    out = torch.zeros(len(shares), n_orig + n_stages, dtype=torch.float64)
    for li, (row, st) in enumerate(zip(shares, stages)):
        orig = [v for v, s in zip(row, st) if s < 0]
        out[li, : len(orig)] = torch.tensor(orig, dtype=torch.float64)
        for v, s in zip(row, st):
            if s >= 0:
                out[li, n_orig + s] += v
    return out

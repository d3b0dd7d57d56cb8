"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021) inserted into a decoder-only MoE LM by hooks.

In-tree rather than AdapterHub's `adapters` library: adapters 1.3 pins transformers 4.57 and
supports none of the MoE families used here (Mixtral, OLMoE, Qwen2-MoE under transformers 5).

The adapters are submodules of each decoder layer (so the LM's parameter count and state
dict hold them), applied by forward hooks on the layer's `self_attn` / `mlp` outputs, so
the base model's own module names and parameters stay exactly as they were.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from cl_bench.models.families import FAMILIES

PLACEMENTS = ("pfeiffer", "houlsby")
NONLINEARITIES = {"relu": nn.ReLU, "gelu": nn.GELU}

Placement = Literal["pfeiffer", "houlsby"]


class BottleneckAdapter(nn.Module):
    """h + up(act(down(h))): hidden -> hidden // reduction_factor -> hidden.

    The up-projection starts at zero, so a fresh adapter is exactly the identity.
    """

    def __init__(self, hidden: int, reduction_factor: int, nonlinearity: str = "relu") -> None:
        super().__init__()
        bottleneck = bottleneck_size(hidden, reduction_factor)
        self.down = nn.Linear(hidden, bottleneck)
        self.act = NONLINEARITIES[nonlinearity]()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def delta(self, h: torch.Tensor) -> torch.Tensor:  # (B, L, d) -> (B, L, d): what the adapter adds
        return self.up(self.act(self.down(h)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, L, d) -> (B, L, d)
        return h + self.delta(h)


def bottleneck_size(hidden: int, reduction_factor: int) -> int:
    """hidden // reduction_factor, refusing factors that do not divide the hidden size."""
    if reduction_factor < 1 or hidden % reduction_factor:
        divisors = [f for f in range(1, hidden + 1) if hidden % f == 0 and f <= hidden // 2]
        raise ValueError(f"reduction_factor {reduction_factor} does not divide the hidden size {hidden}; "
                         f"use one of {divisors[-8:]}")
    return hidden // reduction_factor


class AdapterSlot(nn.Module):
    """The adapters at one place of one layer, one per name; `active` picks one (None: the block's output as is),
    or a tuple of names, whose additions are summed (an input of several modalities, each with its adapter set)."""

    def __init__(self) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict()
        self.active: str | tuple[str, ...] | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            return h
        if isinstance(self.active, tuple):
            return h + sum(self.adapters[n].delta(h) for n in self.active)
        return self.adapters[self.active](h)

    def hook(self, module: nn.Module, args, output):
        """Forward hook on the adapted block. Some blocks return a tuple (hidden, extras): adapt only the hidden."""
        if self.active is None:
            return output
        if isinstance(output, tuple):
            return (self(output[0]), *output[1:])
        return self(output)


# where a decoder layer keeps its MoE block, per family (mlp; block_sparse_moe in Granite-MoE)
MLP_SLOTS = tuple(dict.fromkeys(f.block_attr for f in FAMILIES.values()))


def mlp_of(layer: nn.Module) -> str:
    return next(name for name in MLP_SLOTS if isinstance(getattr(layer, name, None), nn.Module))


def decoder_layers(lm: nn.Module) -> list[nn.Module]:
    """The decoder layers of `lm`: modules with a `self_attn` and an MoE block child, in order."""
    layers = [m for m in lm.modules() if isinstance(getattr(m, "self_attn", None), nn.Module)
              and any(isinstance(getattr(m, name, None), nn.Module) for name in MLP_SLOTS)]
    if not layers:
        raise ValueError(f"{type(lm).__name__} has no decoder layers with `self_attn` and `mlp` submodules "
                         "to place adapters after")
    return layers


def insert_slots(lm: nn.Module, placement: str) -> list[AdapterSlot]:
    """Empty adapter slots after each layer's MoE block (pfeiffer), and after its attention too (houlsby).

    The slots are children of the layers ("mlp_adapter", "attn_adapter"), so they belong to `lm`.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    slots = []
    for layer in decoder_layers(lm):
        blocks = ("self_attn", mlp_of(layer)) if placement == "houlsby" else (mlp_of(layer),)
        for block in blocks:
            slot = AdapterSlot()
            layer.add_module("attn_adapter" if block == "self_attn" else "mlp_adapter", slot)
            # A bound method: copy.deepcopy of the LM carries the hook over to the copied slot.
            getattr(layer, block).register_forward_hook(slot.hook)
            slots.append(slot)
    return slots


def add_adapter(slots: list[AdapterSlot], name: str, hidden: int, reduction_factor: int, nonlinearity: str,
                reference: torch.Tensor) -> list[nn.Parameter]:
    """Create adapter `name` in every slot, on `reference`'s device and dtype; return its parameters."""
    params = []
    for slot in slots:
        if name in slot.adapters:
            raise ValueError(f"adapter {name!r} exists already")
        adapter = BottleneckAdapter(hidden, reduction_factor, nonlinearity).to(reference.device, reference.dtype)
        slot.adapters[name] = adapter
        params += adapter.parameters()
    return params


def activate(slots: list[AdapterSlot], name: str | tuple[str, ...] | None) -> None:
    """Use adapter `name` everywhere (None: none, the base model's computation exactly; a tuple of names: their
    additions summed)."""
    for slot in slots:
        for n in (name if isinstance(name, tuple) else () if name is None else (name,)):
            if n not in slot.adapters:
                raise KeyError(f"no adapter {n!r}; have {list(slot.adapters)}")
        slot.active = name


def adapter_parameters(slots: list[AdapterSlot], name: str) -> list[nn.Parameter]:
    return [p for slot in slots for p in slot.adapters[name].parameters()]

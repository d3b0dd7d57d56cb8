"""Footprints: what a strategy trains and holds in a stage, for the memory plan (`Strategy.footprint`).

A strategy counts its own additions on a meta-device copy of the model with its own code
(surgery, PEFT, adapters), or with the helpers below for the common ones: `lora_footprint`,
`adapter_footprint` and `modules_footprint` add what they count to the meta model (so that the plan's
totals hold it) and return the stage's Footprint, the modality's projector trained with it. For example::

    def footprint(self, model, modality):
        return lora_footprint(model, modality, rank=self.config.rank, target_modules=("q_proj", "v_proj"))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Footprint:
    """What a strategy trains and holds in one stage, counted on the (meta) model it may have extended."""

    trainable: int  # parameters with gradients and optimizer states in the stage's largest phase
    largest: int = 0  # elements of the largest trainable tensor (see make_plan's backward transient)
    # True when none of the base LM's own weights train (MoExtend, align-only, adapters): autograd then keeps
    # less for the backward pass (a frozen linear layer's input is not saved)
    base_frozen: bool = False
    held_bytes: int = 0  # held besides the model's weights: teacher copies, anchors, a copy of the base
    note: str = ""


def numel(module) -> int:
    """Parameters of `module`."""
    return sum(p.numel() for p in module.parameters())


def full_model_footprint(model, modality: str) -> Footprint:
    """Every LM weight and the modality's projector train (full fine-tuning)."""
    proj = projector(model, modality)
    return Footprint(trainable=numel(model.lm) + numel(proj), largest=largest(model.lm, proj))


def projector(model, modality: str) -> torch.nn.Module:
    """The modality's projector, or an empty module for text (no projector: nothing to count)."""
    return model.projectors[modality] if modality in model.projectors else torch.nn.Module()


def largest(*modules) -> int:
    """Elements of the largest parameter tensor of `modules`."""
    return max((p.numel() for m in modules for p in m.parameters()), default=0)


# -- additions counted on the meta model -------------------------------------------------------------------------
ADDITIONS = "planned_additions"  # the child of the (meta) LM that holds what the helpers below add


def _add(model, name: str, module: torch.nn.Module) -> torch.nn.Module:
    """`module` as addition `name` of the meta model's LM, once: a name given again (one adapter trained through
    the whole stream) is the module added first."""
    held = getattr(model.lm, ADDITIONS, None)
    if held is None:
        held = torch.nn.ModuleDict()
        model.lm.add_module(ADDITIONS, held)
    key = name.replace(".", "_")
    if key not in held:
        held[key] = module
    return held[key]


def _meta(*shape: int) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.empty(*shape, device="meta"))


def _stage(model, modality: str, added: torch.nn.Module, projector_trains: bool, **kw) -> Footprint:
    proj = projector(model, modality) if projector_trains else torch.nn.Module()
    return Footprint(trainable=numel(added) + numel(proj), largest=largest(added, proj), **kw)


def _names(targets: str | Iterable[str]) -> list[str]:
    """"a,b" or ["a", "b"] -> ["a", "b"]."""
    items = targets.split(",") if isinstance(targets, str) else targets
    return [t.strip() for t in items if t.strip()]


def _matches(name: str, target: str) -> bool:
    """PEFT's rule for a list of targets: the full name, or its ending after a dot."""
    return name == target or name.endswith("." + target)


def lora_footprint(model, modality: str, rank: int, target_modules: str | Iterable[str] = ("q_proj", "k_proj",
                   "v_proj", "o_proj"), target_parameters: str | Iterable[str] = (), name: str = "lora",
                   projector_trains: bool = True) -> Footprint:
    """A stage that trains a LoRA adapter (and the modality's projector), counted as PEFT builds it: rank x
    (in + out) per targeted linear layer, and rank x experts x (in + out) per fused expert tensor.

    Args:
        model: the plan's meta model (Strategy.footprint's `model`).
        modality: the stage's modality.
        rank: the LoRA rank r.
        target_modules: the LM's linear layers given adapters, by name or the end of their name (PEFT's rule):
            a list or "q_proj,v_proj".
        target_parameters: fused parameters given adapters (PEFT's target_parameters), e.g.
            "mlp.experts.gate_up_proj"; a 3-d tensor (experts, a, b) gets one adapter per expert.
        name: the adapter's name: the same name in every stage is one adapter trained through the stream, a
            name per modality (e.g. the modality) one adapter each.
        projector_trains: whether the modality's projector trains in the stage.
    """
    modules, params = _names(target_modules), _names(target_parameters)
    if rank < 1 or not (modules or params):
        raise ValueError(f"lora_footprint: rank must be >= 1 and a target given, got rank={rank}, "
                         f"target_modules={modules}, target_parameters={params}")
    lm = model.lm
    shapes = [(n, m.in_features, m.out_features, 1) for n, m in lm.named_modules()
              if isinstance(m, torch.nn.Linear) and ADDITIONS not in n and any(_matches(n, t) for t in modules)]
    for n, p in lm.named_parameters():
        if ADDITIONS not in n and any(_matches(n, t) for t in params):
            if p.dim() not in (2, 3):
                raise ValueError(f"lora_footprint: {n} has shape {tuple(p.shape)}; a target parameter is 2-d, or "
                                 "3-d (experts first)")
            experts = p.shape[0] if p.dim() == 3 else 1
            shapes.append((n, p.shape[-2], p.shape[-1], experts))
    for t in (*modules, *params):
        if not any(_matches(n, t) for n, *_ in shapes):
            raise ValueError(f"lora_footprint: {t!r} names no {'linear layer' if t in modules else 'parameter'} "
                             f"of {type(lm).__name__}")
    added = torch.nn.ModuleDict({n.replace(".", "_"): torch.nn.ParameterDict(
        {"A": _meta(rank * experts, a), "B": _meta(b, rank * experts)}) for n, a, b, experts in shapes})
    return _stage(model, modality, _add(model, f"lora-{name}", added), projector_trains)


def adapter_footprint(model, modality: str, reduction_factor: int = 16, per_layer: int = 1, name: str = "adapter",
                      projector_trains: bool = True) -> Footprint:
    """A stage that trains bottleneck adapters (hidden -> hidden / reduction_factor -> hidden, with biases) in
    every decoder layer (and the modality's projector), the base LM frozen.

    Args:
        model: the plan's meta model (Strategy.footprint's `model`).
        modality: the stage's modality.
        reduction_factor: the bottleneck is the hidden size / reduction_factor.
        per_layer: adapters per decoder layer: 1 after the MoE block (Pfeiffer), 2 after attention too (Houlsby).
        name: the adapter set's name: the same in every stage is one set trained through the stream.
        projector_trains: whether the modality's projector trains in the stage.
    """
    c = model.lm.config
    h = c.hidden_size
    if reduction_factor < 1 or h % reduction_factor or per_layer < 1:
        raise ValueError(f"adapter_footprint: reduction_factor must divide the hidden size {h} and per_layer be "
                         f">= 1, got {reduction_factor} and {per_layer}")
    b = h // reduction_factor
    added = torch.nn.ParameterList([p for _ in range(c.num_hidden_layers * per_layer)
                                    for p in (_meta(b, h), _meta(b), _meta(h, b), _meta(h))])
    return _stage(model, modality, _add(model, f"adapter-{name}", added), projector_trains, base_frozen=True)


def modules_footprint(model, modality: str, modules: dict[str, torch.nn.Module], base_frozen: bool = True,
                      held_bytes: int = 0, projector_trains: bool = True, note: str = "") -> Footprint:
    """A stage that trains new modules of the strategy's own (and the modality's projector).

    Args:
        model: the plan's meta model (Strategy.footprint's `model`).
        modality: the stage's modality.
        modules: name -> a module the stage adds and trains, built on the meta device (``with
            torch.device("meta"): ...``); a name given in an earlier stage is that stage's module, trained again.
        base_frozen: whether every one of the base LM's own weights stays frozen in the stage.
        held_bytes: bytes held besides the weights (teacher copies, anchors).
        projector_trains: whether the modality's projector trains in the stage.
        note: a line the plan shows.
    """
    added = torch.nn.ModuleList([_add(model, f"module-{n}", m) for n, m in modules.items()])
    return _stage(model, modality, added, projector_trains, base_frozen=base_frozen, held_bytes=held_bytes,
                  note=note)

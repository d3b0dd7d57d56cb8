"""Footprints: what a strategy trains and holds in a stage, for the memory plan (`Strategy.footprint`).

A strategy counts its own additions on a meta-device copy of the model with its own code
(surgery, PEFT, adapters); these helpers count the common parts.
"""

from __future__ import annotations

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

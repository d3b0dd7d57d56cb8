"""Bottleneck adapters (in-tree, see modules.py) after the MoE block of each decoder layer, or after attention too.

`adapter`: one adapter set trained through the whole stream (with each modality's projector);
it is always on, text included, which is where its forgetting shows.
`adapter-per-modality`: one adapter set per modality, chosen by the input's modality at test
time; text runs the base model exactly (adapters off); earlier adapters are frozen. A modality
that comes back with a second task trains its adapter set on, unless ``-o route=task``: then
each task has its own adapter set and projector copy, chosen by the task it is asked about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from cl_bench.streams.experience import Experience, TaskInfo, input_modalities
from cl_bench.strategies.adapters.modules import (NONLINEARITIES, PLACEMENTS, activate, adapter_parameters,
                                                  add_adapter, bottleneck_size, insert_slots)
from cl_bench.api.strategy import (Declaration, Memory, Strategy, TaskProjectors, check_route, latest_weights,
                                   route_option, tensor_bytes, weights_key)


@dataclass(frozen=True)
class AdapterConfig:
    """Bottleneck adapter options."""

    placement: Literal["pfeiffer", "houlsby"] = field(
        default="pfeiffer", metadata={"help": "pfeiffer: after each MoE block; houlsby: after attention too"})
    # reduction_factor, lr and projector_lr: chosen by clbench tune, results/hparams/vision-audio.md (the shared
    # set chose a factor of 64, a bottleneck of 2 at the default preset's hidden size of 128, past the grid's 16;
    # a preset whose hidden size it does not divide, e.g. mixtral-small's 160, needs -o reduction-factor=16).
    reduction_factor: int = field(default=64, metadata={"help": "bottleneck size = hidden size / reduction_factor"})
    nonlinearity: Literal["relu", "gelu"] = field(default="relu", metadata={"help": "activation in the bottleneck"})
    lr: float = field(default=5e-3, metadata={"help": "learning rate of the adapters"})
    projector_lr: float = field(default=3e-3, metadata={"help": "learning rate of the modality projector"})

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"AdapterConfig.placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"AdapterConfig.nonlinearity must be one of {', '.join(NONLINEARITIES)}, "
                             f"got {self.nonlinearity!r}")
        if isinstance(self.reduction_factor, bool) or not isinstance(self.reduction_factor, int) \
                or self.reduction_factor < 1:
            raise ValueError(f"AdapterConfig.reduction_factor must be an integer >= 1 that divides the hidden size "
                             f"(e.g. 4: 128 -> 32), got {self.reduction_factor!r}")
        for name in ("lr", "projector_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"AdapterConfig.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class AdapterPerModalityConfig(AdapterConfig):
    """Bottleneck adapter options, and what picks the adapter set at test time."""

    # its own choices (results/hparams/vision-audio.md): a factor of 1, a bottleneck as wide as the hidden size,
    # reached by widening past the grid's 4; the table marks it on an edge, but no factor is smaller
    reduction_factor: int = field(default=1, metadata={"help": "bottleneck size = hidden size / reduction_factor"})
    projector_lr: float = field(default=5e-3, metadata={"help": "learning rate of the modality projector"})
    route: Literal["modality", "task"] = route_option("adapter set")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_route(self)


class Adapter(Strategy):
    """One bottleneck adapter set (in-tree) in every decoder layer, trained through the whole stream."""

    setup_keeps_outputs = True  # row 0 is shared (cl_bench.run.shared; tests/test_shared.py checks it)

    Config = AdapterConfig
    tuning = {"projector_lr": ("1e-3", "3e-3", "1e-2"), "lr": ("1e-3", "5e-3", "0.025"),
              "reduction_factor": ("4", "16")}
    per_modality = False

    def setup(self, model, context) -> None:
        super().setup(model, context)
        self._base = list(model.lm.parameters())
        self._hidden = model.lm.config.hidden_size
        bottleneck_size(self._hidden, self.config.reduction_factor)  # a bad factor fails here, before any training
        self.slots = insert_slots(model.lm, self.config.placement)
        self.adapters: list[str] = []
        if not self.per_modality:
            self._ensure("shared")
            activate(self.slots, "shared")

    def footprint(self, model, modality: str):
        """The adapters' own modules on the meta model: the stage's adapter set and the projector train."""
        from cl_bench.api.footprint import Footprint, numel, projector

        c, name = self.config, modality if self.per_modality else "shared"
        if not hasattr(model, "_plan_slots"):
            model._plan_slots, model._plan_adapters = insert_slots(model.lm, c.placement), set()
        if self.by_task:  # every stage adds its task's adapter set
            name = f"task-{len(model._plan_adapters)}"
        if name not in model._plan_adapters:
            add_adapter(model._plan_slots, name, model.lm.config.hidden_size, c.reduction_factor, c.nonlinearity,
                        next(model.lm.parameters()))
            model._plan_adapters.add(name)
        adapter = sum(p.numel() for p in adapter_parameters(model._plan_slots, name))
        return Footprint(trainable=adapter + numel(projector(model, modality)), base_frozen=True)

    def frozen(self) -> list[torch.nn.Parameter]:
        return list(self._base)  # the base LM: only adapters (and projectors) change

    def _adapter_for(self, task) -> str:
        """The adapter set of `task` (a TaskInfo or Experience): the shared one, its modality's, or its own."""
        return weights_key(self.config.route, task) if self.per_modality else "shared"

    @property
    def by_task(self) -> bool:
        return self.per_modality and self.config.route == "task"

    def _ensure(self, name: str) -> None:
        if name in self.adapters:
            return
        c = self.config
        params = add_adapter(self.slots, name, self._hidden, c.reduction_factor, c.nonlinearity, self._base[0])
        for p in params:
            p.requires_grad_(False)  # trainable only while its modality is learned
        self.adapters.append(name)

    def learn(self, experience: Experience) -> dict:
        m, name = self.model, self._adapter_for(experience)
        if self.by_task and experience.modality in m.projectors:
            self.task_projectors.start(m, experience.modality)
        self._ensure(name)
        activate(self.slots, name)
        self.freeze_all()
        adapter = adapter_parameters(self.slots, name)
        for p in adapter:
            p.requires_grad_(True)
        groups = [{"params": adapter, "lr": self.config.lr}]
        if experience.modality in m.projectors:
            m.projectors[experience.modality].requires_grad_(True)
            groups.append({"params": list(m.projectors[experience.modality].parameters()),
                           "lr": self.config.projector_lr})
        stats = self.fit(experience, groups)
        if self.by_task and experience.modality in m.projectors:
            self.task_projectors.keep(m, experience.name, experience.modality)
        stats["adapter"] = name
        stats["adapter_parameters"] = sum(p.numel() for p in adapter)
        return stats

    def model_for(self, task: TaskInfo):
        parts = input_modalities(task.modality)
        if self.per_modality and len(parts) > 1:  # a mixed-modality item: every input's adapter set, summed
            names = tuple(n for n in (latest_weights(self.config.route, self.context.tasks, self.adapters, m)
                                      for m in parts) if n is not None)
            activate(self.slots, names if len(names) > 1 else names[0] if names else None)
            for m in parts if self.by_task else ():
                self.task_projectors.start(self.model, m)
            return self.model
        name = self._adapter_for(task)
        activate(self.slots, name if name in self.adapters else None)  # text / not learned yet: the base model
        if self.by_task:
            self.task_projectors.use(self.model, task)
        return self.model

    def memory(self) -> Memory:
        if not self.per_modality:
            return Memory()  # one shared adapter set: part of the one model, not kept per task
        extra = self.task_projectors.extra_bytes() if self.by_task else 0
        return Memory(task_weight_bytes=extra + tensor_bytes(
            p for a in self.adapters for p in adapter_parameters(self.slots, a)))

    def _kinds(self) -> list[str]:
        """What names the adapter sets, per task of the run (its modality, or the task's name with route=task)."""
        return [weights_key(self.config.route, t) for t in self.context.tasks]

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = super().state_dict()
        if self.per_modality:
            kinds = self._kinds()
            state["adapter.modalities"] = torch.tensor([kinds.index(a) for a in self.adapters], dtype=torch.long)
        if self.by_task:
            state.update(self.task_projectors.state_dict())
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.per_modality:
            kinds = self._kinds()
            # Recreate the adapters the checkpoint holds; a checkpoint without the list fails in the check below.
            for i in state.get("adapter.modalities", torch.zeros(0, dtype=torch.long)).tolist():
                self._ensure(kinds[i])
        if self.by_task:
            state = dict(state)
            self.task_projectors.load_state_dict(state)
            state.update(self.task_projectors.state_dict())  # the base check compares keys with state_dict()
        super().load_state_dict(state)


class AdapterPerModality(Adapter):
    """One bottleneck adapter set (in-tree) per modality, picked by the input's modality; text runs the base model."""

    per_modality = True
    Config = AdapterPerModalityConfig
    declares = Declaration(task_weights=True, modality_routed=True)

    def setup(self, model, context) -> None:
        self.task_projectors = TaskProjectors()
        super().setup(model, context)

    def declaration(self) -> Declaration:
        return Declaration(task_weights=True, task_routed=True) if self.by_task else self.declares

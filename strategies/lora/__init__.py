"""LoRA through Hugging Face PEFT, on the attention projections and the fused expert tensors.

`lora`: one adapter trained through the whole stream (with each modality's projector).
`lora-per-modality`: one adapter per modality, chosen by the input's modality at test
time; text runs the base model (adapters disabled); earlier adapters are frozen. A modality
that comes back with a second task trains its adapter on, unless ``-o route=task``: then each
task has its own adapter and projector copy, chosen by the task it is asked about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from cl_bench.streams.experience import Experience, TaskInfo, input_modalities
from cl_bench.api.strategy import (Declaration, Memory, Strategy, TaskProjectors, check_route, latest_weights,
                                   route_option, tensor_bytes, weights_key)


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA options (PEFT's LoraConfig underneath)."""

    rank: int = field(default=8, metadata={"help": "LoRA rank r"})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha (scaling alpha / r)"})
    target_modules: str = field(default="q_proj,k_proj,v_proj,o_proj",
                                metadata={"help": "modules given adapters (comma-separated)"})
    target_parameters: str = field(default="mlp.experts.gate_up_proj,mlp.experts.down_proj",
                                   metadata={"help": "fused expert tensors given adapters (PEFT target_parameters; "
                                                           "mlp. is the MoE block in every family)"})
    # lr and projector_lr: chosen by clbench tune, results/hparams/vision-audio.md
    lr: float = field(default=1e-3, metadata={"help": "learning rate of the adapters"})
    projector_lr: float = field(default=5e-3, metadata={"help": "learning rate of the modality projector"})

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha < 1:
            raise ValueError(f"LoRAConfig: rank and alpha must be >= 1, got {self.rank}, {self.alpha}")
        if not (self.lr > 0 and self.projector_lr > 0):
            raise ValueError("LoRAConfig: lr and projector_lr must be > 0")
        if not (self.target_modules.strip() or self.target_parameters.strip()):
            raise ValueError("LoRAConfig: give target_modules or target_parameters")

    def peft(self, lm=None):
        """PEFT's LoraConfig; with `lm`, a leading "mlp." of target_parameters names the layer's MoE block
        wherever its family keeps it (block_sparse_moe in Granite-MoE), so one default serves every family."""
        from peft import LoraConfig

        from cl_bench.models.families import FAMILIES

        split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
        params = split(self.target_parameters)
        family = FAMILIES.get(getattr(getattr(lm, "config", None), "model_type", None))
        if family is not None:
            params = [family.block_attr + p[len("mlp"):] if p.startswith("mlp.") else p for p in params]
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=split(self.target_modules) or None,
                          target_parameters=params or None, lora_dropout=0.0)


def _peft_model(lm, config, name: str):
    """PEFT's get_peft_model, without the FutureWarning it triggers by reading transformers 5's deprecated
    `is_gradient_checkpointing` (a library-to-library deprecation the user cannot act on)."""
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(lm, config, adapter_name=name)


class LoRA(Strategy):
    """One LoRA adapter (PEFT) on attention and experts, trained through the whole stream."""

    setup_keeps_outputs = True  # row 0 is shared (cl_bench.run.shared; tests/test_shared.py checks it)

    Config = LoRAConfig
    tuning = {"projector_lr": ("1e-3", "3e-3", "1e-2"), "lr": ("3e-4", "1e-3", "3e-3")}
    per_modality = False

    def setup(self, model, context) -> None:
        super().setup(model, context)
        self._base = [p for p in model.lm.parameters()]
        self.adapters: list[str] = []
        if not self.per_modality:
            model.lm = _peft_model(model.lm, self.config.peft(model.lm), "shared")
            self.adapters.append("shared")

    def footprint(self, model, modality: str):
        """PEFT's own LoRA modules on the meta model: the stage's adapter and the projector train."""
        from peft import PeftModel

        from cl_bench.api.footprint import Footprint, numel, projector

        name = modality if self.per_modality else "shared"
        if self.by_task:  # every stage adds its task's adapter
            model._plan_tasks = getattr(model, "_plan_tasks", -1) + 1
            name = f"task{model._plan_tasks}"
        if not isinstance(model.lm, PeftModel):
            model.lm = _peft_model(model.lm, self.config.peft(model.lm), name)
        elif name not in model.lm.peft_config:
            model.lm.add_adapter(name, self.config.peft(model.lm.get_base_model()))
        lora = sum(p.numel() for n, p in model.lm.named_parameters() if f".{name}." in n or n.endswith(f".{name}"))
        return Footprint(trainable=lora + numel(projector(model, modality)))

    def frozen(self) -> list[torch.nn.Parameter]:
        return list(self._base)  # the base LM: only adapters (and projectors) change

    def _adapter_for(self, task) -> str:
        """The adapter of `task` (a TaskInfo or Experience): the shared one, its modality's, or its own."""
        return weights_key(self.config.route, task) if self.per_modality else "shared"

    @property
    def by_task(self) -> bool:
        return self.per_modality and self.config.route == "task"

    def _kinds(self) -> list[str]:
        """What names the adapters, per task of the run (its modality, or the task's name with route=task)."""
        return [weights_key(self.config.route, t) for t in self.context.tasks]

    def _ensure(self, name: str) -> None:
        from peft import PeftModel

        m = self.model
        if name in self.adapters:
            return
        if isinstance(m.lm, PeftModel):
            m.lm.add_adapter(name, self.config.peft(m.lm.get_base_model()))
        else:
            m.lm = _peft_model(m.lm, self.config.peft(m.lm), name)
        self.adapters.append(name)

    def learn(self, experience: Experience) -> dict:
        m, name = self.model, self._adapter_for(experience)
        if self.by_task and experience.modality in m.projectors:
            self.task_projectors.start(m, experience.modality)
        self._ensure(name)
        m.lm.base_model.enable_adapter_layers()
        m.lm.set_adapter(name)
        self.freeze_all()
        lora = [p for n, p in m.lm.named_parameters() if f".{name}." in n or n.endswith(f".{name}")]
        for p in lora:
            p.requires_grad_(True)
        groups = [{"params": lora, "lr": self.config.lr}]
        if experience.modality in m.projectors:
            m.projectors[experience.modality].requires_grad_(True)
            groups.append({"params": list(m.projectors[experience.modality].parameters()),
                           "lr": self.config.projector_lr})
        stats = self.fit(experience, groups)
        if self.by_task and experience.modality in m.projectors:
            self.task_projectors.keep(m, experience.name, experience.modality)
        stats["adapter"] = name
        stats["peft_trainable"] = m.lm.get_nb_trainable_parameters()[0]
        return stats

    def model_for(self, task: TaskInfo):
        m = self.model
        parts = input_modalities(task.modality)
        if self.per_modality and len(parts) > 1:  # a mixed-modality item: every input's adapter on, summed (PEFT)
            names = [n for n in (latest_weights(self.config.route, self.context.tasks, self.adapters, p)
                                 for p in parts) if n is not None]
            if names:
                m.lm.base_model.enable_adapter_layers()
                m.lm.base_model.set_adapter(names)
            elif self.adapters:
                m.lm.base_model.disable_adapter_layers()
            for p in parts if self.by_task else ():
                self.task_projectors.start(m, p)
            return m
        name = self._adapter_for(task)
        if self.per_modality and name not in self.adapters:  # text, or a modality (task) not learned yet
            if self.adapters:
                m.lm.base_model.disable_adapter_layers()
        elif self.adapters:
            m.lm.base_model.enable_adapter_layers()
            m.lm.set_adapter(name)
        if self.by_task:
            self.task_projectors.use(m, task)
        return m

    def memory(self) -> Memory:
        if not self.per_modality:
            return Memory()  # one shared adapter: part of the one model, not kept per task
        m = self.model
        extra = self.task_projectors.extra_bytes() if self.by_task else 0
        return Memory(task_weight_bytes=extra + tensor_bytes(
            p for n, p in m.lm.named_parameters() if any(f".{a}." in n or n.endswith(f".{a}") for a in self.adapters)))

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = super().state_dict()
        if self.per_modality:
            kinds = self._kinds()
            state["lora.modalities"] = torch.tensor([kinds.index(a) for a in self.adapters], dtype=torch.long)
        if self.by_task:
            state.update(self.task_projectors.state_dict())
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.per_modality:
            kinds = self._kinds()
            for i in state["lora.modalities"].tolist():
                self._ensure(kinds[i])
        if self.by_task:
            state = dict(state)
            self.task_projectors.load_state_dict(state)
            state.update(self.task_projectors.state_dict())  # the base check compares keys with state_dict()
        super().load_state_dict(state)


@dataclass(frozen=True)
class LoRAPerModalityConfig(LoRAConfig):
    """LoRA options of the per-modality variant (its own tuned learning rate)."""

    lr: float = field(default=1e-3, metadata={"help": "learning rate of the adapters"})  # chosen by clbench tune, results/hparams/vision-audio.md
    projector_lr: float = field(default=5e-3, metadata={"help": "learning rate of the modality projector"})
    route: Literal["modality", "task"] = route_option("adapter")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_route(self)


class LoRAPerModality(LoRA):
    """One LoRA adapter per modality (PEFT), picked by the input's modality; text runs the base model."""

    Config = LoRAPerModalityConfig
    per_modality = True
    tuning = {"projector_lr": ("1e-3", "3e-3", "1e-2"), "lr": ("3e-4", "1e-3", "3e-3")}
    declares = Declaration(task_weights=True, modality_routed=True)

    def setup(self, model, context) -> None:
        self.task_projectors = TaskProjectors()
        super().setup(model, context)

    def declaration(self) -> Declaration:
        return Declaration(task_weights=True, task_routed=True) if self.by_task else self.declares

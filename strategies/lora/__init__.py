"""LoRA through Hugging Face PEFT, on the attention projections and the fused expert tensors.

`lora`: one adapter trained through the whole stream (with each modality's projector).
`lora-per-modality`: one adapter per modality, chosen by the input's modality at test
time; text runs the base model (adapters disabled); earlier adapters are frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cl_bench.streams.experience import Experience, TaskInfo
from cl_bench.api.strategy import Declaration, Memory, Strategy, tensor_bytes


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
    lr: float = field(default=3e-3, metadata={"help": "learning rate of the adapters"})  # chosen by clbench tune, results/hparams/vision-audio.md
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


class LoRA(Strategy):
    """One LoRA adapter (PEFT) on attention and experts, trained through the whole stream."""

    setup_keeps_outputs = True  # row 0 is shared (cl_bench.run.shared; tests/test_shared.py checks it)

    Config = LoRAConfig
    tuning = {"lr": ("3e-4", "1e-3", "3e-3", "1e-2")}
    per_modality = False

    def setup(self, model, context) -> None:
        from peft import get_peft_model

        super().setup(model, context)
        self._base = [p for p in model.lm.parameters()]
        self.adapters: list[str] = []
        if not self.per_modality:
            model.lm = get_peft_model(model.lm, self.config.peft(model.lm), adapter_name="shared")
            self.adapters.append("shared")

    def footprint(self, model, modality: str):
        """PEFT's own LoRA modules on the meta model: the stage's adapter and the projector train."""
        from peft import PeftModel, get_peft_model

        from cl_bench.api.footprint import Footprint, numel, projector

        name = self._adapter_for(modality)
        if not isinstance(model.lm, PeftModel):
            model.lm = get_peft_model(model.lm, self.config.peft(model.lm), adapter_name=name)
        elif name not in model.lm.peft_config:
            model.lm.add_adapter(name, self.config.peft(model.lm.get_base_model()))
        lora = sum(p.numel() for n, p in model.lm.named_parameters() if f".{name}." in n or n.endswith(f".{name}"))
        return Footprint(trainable=lora + numel(projector(model, modality)))

    def frozen(self) -> list[torch.nn.Parameter]:
        return list(self._base)  # the base LM: only adapters (and projectors) change

    def _adapter_for(self, modality: str) -> str:
        return modality if self.per_modality else "shared"

    def _ensure(self, name: str) -> None:
        from peft import PeftModel, get_peft_model

        m = self.model
        if name in self.adapters:
            return
        if isinstance(m.lm, PeftModel):
            m.lm.add_adapter(name, self.config.peft(m.lm.get_base_model()))
        else:
            m.lm = get_peft_model(m.lm, self.config.peft(m.lm), adapter_name=name)
        self.adapters.append(name)

    def learn(self, experience: Experience) -> dict:
        m, name = self.model, self._adapter_for(experience.modality)
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
        stats["adapter"] = name
        stats["peft_trainable"] = m.lm.get_nb_trainable_parameters()[0]
        return stats

    def model_for(self, task: TaskInfo):
        m = self.model
        name = self._adapter_for(task.modality)
        if self.per_modality and name not in self.adapters:  # text, or a modality not learned yet
            if self.adapters:
                m.lm.base_model.disable_adapter_layers()
        elif self.adapters:
            m.lm.base_model.enable_adapter_layers()
            m.lm.set_adapter(name)
        return m

    def memory(self) -> Memory:
        if not self.per_modality:
            return Memory()  # one shared adapter: part of the one model, not kept per task
        m = self.model
        return Memory(task_weight_bytes=tensor_bytes(p for n, p in m.lm.named_parameters()
                                                     if any(f".{a}." in n or n.endswith(f".{a}") for a in self.adapters)))

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = super().state_dict()
        kinds = [t.modality for t in self.context.tasks]
        if self.per_modality:
            state["lora.modalities"] = torch.tensor([kinds.index(a) for a in self.adapters], dtype=torch.long)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.per_modality:
            kinds = [t.modality for t in self.context.tasks]
            for i in state["lora.modalities"].tolist():
                self._ensure(kinds[i])
        super().load_state_dict(state)


@dataclass(frozen=True)
class LoRAPerModalityConfig(LoRAConfig):
    """LoRA options of the per-modality variant (its own tuned learning rate)."""

    lr: float = field(default=1e-3, metadata={"help": "learning rate of the adapters"})  # chosen by clbench tune, results/hparams/vision-audio.md


class LoRAPerModality(LoRA):
    """One LoRA adapter per modality (PEFT), picked by the input's modality; text runs the base model."""

    Config = LoRAPerModalityConfig
    per_modality = True
    tuning = {"lr": ("3e-4", "1e-3", "3e-3")}
    declares = Declaration(task_weights=True, modality_routed=True)

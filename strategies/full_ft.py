"""Full fine-tuning: every LM parameter and the modality's projector, stage after stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from cl_bench.experience import Experience
from cl_bench.strategy import Strategy


@dataclass(frozen=True)
class FullFineTuningConfig:
    """Learning rates of full fine-tuning."""

    lr: float = field(default=3e-4, metadata={"help": "learning rate of the language model"})
    projector_lr: float = field(default=5e-3, metadata={"help": "learning rate of the modality projector"})

    def __post_init__(self) -> None:
        for name in ("lr", "projector_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FullFineTuningConfig.{name} must be > 0, got {getattr(self, name)}")


class FullFineTuning(Strategy):
    """All LM parameters and the new modality's projector are trained on each stage (LLaVA stage-2 style)."""

    Config = FullFineTuningConfig

    def learn(self, experience: Experience) -> dict:
        m = self.model
        self.freeze_all()
        m.lm.requires_grad_(True)
        groups = [{"params": list(m.lm.parameters()), "lr": self.config.lr}]
        if experience.modality in m.projectors:
            proj = m.projectors[experience.modality]
            proj.requires_grad_(True)
            groups.append({"params": list(proj.parameters()), "lr": self.config.projector_lr})
        return self.fit(experience, groups)

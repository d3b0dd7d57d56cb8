"""Align-only: the projector of each new modality is trained; the language model stays frozen."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cl_bench.streams.experience import Experience
from cl_bench.api.strategy import Strategy


@dataclass(frozen=True)
class AlignOnlyConfig:
    """Learning rate of the projector."""

    projector_lr: float = field(default=1e-2, metadata={"help": "learning rate of the modality projector"})
    # projector_lr: chosen by clbench tune, results/hparams/vision-audio.md

    def __post_init__(self) -> None:
        if not self.projector_lr > 0:
            raise ValueError(f"AlignOnlyConfig.projector_lr must be > 0, got {self.projector_lr}")


class AlignOnly(Strategy):
    """Only each new modality's projector is trained; the LM is frozen, so text is untouched."""

    setup_keeps_outputs = True  # row 0 is shared (cl_bench.run.shared; tests/test_shared.py checks it)
    shares_fits = True  # plain fits on the stage's own split: each computed once (cl_bench.run.shared.FitStore)

    Config = AlignOnlyConfig
    tuning = {"projector_lr": ("1e-3", "3e-3", "1e-2", "3e-2")}

    def learn(self, experience: Experience) -> dict:
        if experience.modality not in self.model.projectors:
            raise ValueError(f"align-only has nothing to train for modality {experience.modality!r}: "
                             "it only trains projectors of non-text modalities")
        self.freeze_all()
        proj = self.model.projectors[experience.modality]
        proj.requires_grad_(True)
        return self.fit(experience, [{"params": list(proj.parameters()), "lr": self.config.projector_lr}])

    def frozen(self) -> list[torch.nn.Parameter]:
        return list(self.model.lm.parameters())

    def footprint(self, model, modality: str):
        from cl_bench.api.footprint import Footprint, numel, projector

        proj = projector(model, modality)
        return Footprint(trainable=numel(proj), largest=max((p.numel() for p in proj.parameters()), default=0),
                         base_frozen=True)

    def state_dict(self) -> dict[str, torch.Tensor]:
        # The LM never changes: only the projectors need saving between stages.
        return {k: v for k, v in self.model.state_dict().items() if k.startswith("projectors.")}

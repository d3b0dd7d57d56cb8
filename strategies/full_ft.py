"""Full fine-tuning: every LM parameter and the modality's projector, stage after stage.

With align-fraction > 0 a stage has LLaVA's two phases within the same budget: the
projector alone first (feature alignment), then the LM and projector together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cl_bench.streams.experience import Experience
from cl_bench.api.strategy import Strategy


@dataclass(frozen=True)
class FullFineTuningConfig:
    """Learning rates of full fine-tuning."""

    # lr and projector_lr: chosen by clbench tune, results/hparams/vision-audio.md
    lr: float = field(default=1e-4, metadata={"help": "learning rate of the language model"})
    projector_lr: float = field(default=5e-3, metadata={"help": "learning rate of the modality projector"})
    align_fraction: float = field(default=0.0, metadata={
        "help": "share of each stage's budget spent first on the projector alone (LLaVA's alignment phase); "
                "0: no alignment phase"})
    # MoExtend's tuned alignment rate, so that the matched-recipe pair (leaderboard.RECIPE_PAIRS) aligns alike
    align_lr: float = field(default=1e-3, metadata={"help": "projector learning rate of the alignment phase"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.align_fraction < 1.0:
            raise ValueError(f"FullFineTuningConfig.align_fraction must be in [0, 1), got {self.align_fraction}")
        if not self.align_lr > 0:
            raise ValueError(f"FullFineTuningConfig.align_lr must be > 0, got {self.align_lr}")
        for name in ("lr", "projector_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FullFineTuningConfig.{name} must be > 0, got {getattr(self, name)}")


class FullFineTuning(Strategy):
    """All LM parameters and the new modality's projector are trained on each stage (LLaVA stage-2 style)."""

    setup_keeps_outputs = True  # row 0 is shared (cl_bench.run.shared; tests/test_shared.py checks it)
    shares_fits = True  # plain fits on the stage's own split: each computed once (cl_bench.run.shared.FitStore)

    Config = FullFineTuningConfig
    tuning = {"projector_lr": ("1e-3", "3e-3", "1e-2"), "lr": ("1e-5", "3e-5", "1e-4", "3e-4")}

    def footprint(self, model, modality: str):
        from cl_bench.api.footprint import full_model_footprint

        return full_model_footprint(model, modality)

    def learn(self, experience: Experience) -> dict:
        m, steps = self.model, self.context.budget.steps
        proj = m.projectors[experience.modality] if experience.modality in m.projectors else None
        align_steps = round(self.config.align_fraction * steps) if proj is not None else 0
        align = None
        if align_steps:
            self.freeze_all()
            proj.requires_grad_(True)
            align = self.fit(experience, [{"params": list(proj.parameters()), "lr": self.config.align_lr}],
                             f"{experience.name} alignment", steps=align_steps)
        self.freeze_all()
        m.lm.requires_grad_(True)
        groups = [{"params": list(m.lm.parameters()), "lr": self.config.lr}]
        if proj is not None:
            proj.requires_grad_(True)
            groups.append({"params": list(proj.parameters()), "lr": self.config.projector_lr})
        stats = self.fit(experience, groups, steps=max(1, steps - align_steps))
        return stats if align is None else {**stats, "align": align}

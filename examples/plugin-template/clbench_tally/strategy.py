"""A strategy: fine-tune the new modality's projector and the LM's last decoder layer."""

from dataclasses import dataclass, field

import torch

from cl_bench import Experience, Strategy


@dataclass(frozen=True)
class LastLayerConfig:
    """Learning rates."""

    lr: float = field(default=1e-4, metadata={"help": "learning rate of the last decoder layer"})
    projector_lr: float = field(default=1e-3, metadata={"help": "learning rate of the projector"})


class LastLayer(Strategy):
    """Trains the projector and the LM's last decoder layer; every other LM weight stays frozen."""

    Config = LastLayerConfig

    def last_layer(self) -> torch.nn.Module:
        return self.model.lm.model.layers[-1]

    def learn(self, experience: Experience) -> dict:
        self.freeze_all()
        groups = [{"params": list(self.last_layer().parameters()), "lr": self.config.lr}]
        if experience.modality in self.model.projectors:
            proj = self.model.projectors[experience.modality]
            groups.append({"params": list(proj.parameters()), "lr": self.config.projector_lr})
        for g in groups:
            for p in g["params"]:
                p.requires_grad_(True)
        return self.fit(experience, groups)

    def frozen(self) -> list[torch.nn.Parameter]:
        mine = {id(p) for p in self.last_layer().parameters()}
        return [p for p in self.model.lm.parameters() if id(p) not in mine]

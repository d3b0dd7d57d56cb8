"""A strategy: fine-tune the new modality's projector and the LM's last decoder layer."""

from dataclasses import dataclass, field

import torch

from cl_bench import Experience, Footprint, Strategy, numel, projector


@dataclass(frozen=True)
class LastLayerConfig:
    """Learning rates."""

    lr: float = field(default=1e-4, metadata={"help": "learning rate of the last decoder layer"})
    projector_lr: float = field(default=1e-3, metadata={"help": "learning rate of the projector"})


def last_layer(model) -> torch.nn.Module:
    return model.lm.model.layers[-1]


class LastLayer(Strategy):
    """Trains the projector and the LM's last decoder layer; every other LM weight stays frozen."""

    Config = LastLayerConfig

    def learn(self, experience: Experience) -> dict:
        self.freeze_all()
        groups = [{"params": list(last_layer(self.model).parameters()), "lr": self.config.lr}]
        if experience.modality in self.model.projectors:
            proj = self.model.projectors[experience.modality]
            groups.append({"params": list(proj.parameters()), "lr": self.config.projector_lr})
        for g in groups:
            for p in g["params"]:
                p.requires_grad_(True)
        return self.fit(experience, groups)

    def frozen(self) -> list[torch.nn.Parameter]:
        mine = {id(p) for p in last_layer(self.model).parameters()}
        return [p for p in self.model.lm.parameters() if id(p) not in mine]

    def footprint(self, model, modality: str) -> Footprint:
        """For `clbench plan`: the last layer and the projector train (a strategy that adds modules counts them
        with cl_bench.lora_footprint, adapter_footprint or modules_footprint)."""
        return Footprint(trainable=numel(last_layer(model)) + numel(projector(model, modality)))

    # Resuming needs nothing more: the model's weights are the whole state (Strategy.state_dict).

"""Strategies used by the tests, registered at run time (never shipped)."""

from cl_bench.strategies.full_ft import FullFineTuning


class Spy(FullFineTuning):
    """Full fine-tuning that records what the runner hands it."""

    seen: list = []

    def learn(self, experience):
        Spy.seen.append(experience)
        return super().learn(experience)


class CrashOnAudio(FullFineTuning):
    """Full fine-tuning that dies on the audio stage while `crash` is set (a simulated kill)."""

    crash = True
    resumed_with: list = []

    def resumed(self, experiences):
        CrashOnAudio.resumed_with = experiences

    def learn(self, experience):
        if experience.name == "audio" and CrashOnAudio.crash:
            raise RuntimeError("simulated crash")
        return super().learn(experience)


class Liar(FullFineTuning):
    """Declares the LM frozen, trains it anyway, and misreports its cost."""

    def frozen(self):
        return list(self.model.lm.parameters())

    def cost(self):
        from cl_bench.api.strategy import Cost

        c = super().cost()
        return Cost(trainable=c.trainable, added=c.added + 1, total=c.total)


class Understater(FullFineTuning):
    """Trains everything and reports 0 trainable parameters."""

    def cost(self):
        from cl_bench.api.strategy import Cost

        c = super().cost()
        return Cost(trainable=0, added=c.added, total=c.total)


class Hoarder(FullFineTuning):
    """Keeps the base text task's training split without declaring it."""

    def memory(self):
        from cl_bench.api.strategy import Memory

        return Memory(past_train_items={"text": len(self.context.base.train)})


class SecretRouter(FullFineTuning):
    """Answers text with the base weights and modalities with the fine-tuned ones, undeclared."""

    def setup(self, model, context):
        import copy

        super().setup(model, context)
        self.base_model = copy.deepcopy(model)

    def model_for(self, task):
        return self.base_model if task.modality == "text" else self.model


class Spender(FullFineTuning):
    """Trains twice the stage budget, undeclared."""

    def learn(self, experience):
        super().learn(experience)
        return super().learn(experience)


class Checkpointer(FullFineTuning):
    """Records a validation checkpoint, flips the LM head's sign (every argmax changes), records another,
    flips it back, then fine-tunes as usual."""

    def learn(self, experience):
        import torch

        self.checkpoint("before-flip")
        head = self.model.lm.get_output_embeddings().weight
        with torch.no_grad():
            head.neg_()
        self.checkpoint("flipped")
        with torch.no_grad():
            head.neg_()
        self.checkpoint("restored")
        return super().learn(experience)


from dataclasses import dataclass, replace  # noqa: E402

from cl_bench.strategies.full_ft import FullFineTuningConfig  # noqa: E402


@dataclass(frozen=True)
class AudioLrConfig(FullFineTuningConfig):
    audio_lr: float = 3e-5


class AudioLr(FullFineTuning):
    """Full fine-tuning with its own learning rate on the audio stage (one that diverges in stage 2 only)."""

    Config = AudioLrConfig

    def learn(self, experience):
        if experience.name != "audio":
            return super().learn(experience)
        general, self.config = self.config, replace(self.config, lr=self.config.audio_lr)
        try:
            return super().learn(experience)
        finally:
            self.config = general


class MissingKey(FullFineTuning):
    """Full fine-tuning with a bug of its own: learn() looks up a key that is not there."""

    def learn(self, experience):
        return {}["missing"]


class NotAStrategy:
    """Registered as a strategy, but not a Strategy subclass: the plug-in's contract broken."""

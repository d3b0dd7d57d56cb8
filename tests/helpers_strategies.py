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


from dataclasses import dataclass, replace

from cl_bench.strategies.full_ft import FullFineTuningConfig


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


# -- contract breakers: each fails `clbench validate` naming the rule it breaks (tests/test_validate_breakers.py) --
class TestSplitTrainer(FullFineTuning):
    """Reloads the stream by its name and fine-tunes on the stage's test split (recording the budget it spends)."""

    __test__ = False  # not a pytest class
    cache_dir = None  # where the stream is cached: set by the test

    def data(self, experience, split):
        from cl_bench.api.training import TaskData
        from cl_bench.streams import resolve

        _, ts = resolve.load(self.context.stream, cache_dir=TestSplitTrainer.cache_dir, progress=False)
        test = next(t for t in ts.tasks if t.name == experience.name).test
        return TaskData(test, self.model, experience.modality)


class SilentReplayer(FullFineTuning):
    """Mixes the base text task's training items into every stage's batches, declaring nothing and reporting no
    memory."""

    def fit(self, experience, param_groups, desc=None, steps=None, data=None, **train_kwargs):
        from cl_bench.api.training import TaskData

        mixed = [self.data(experience, "train"), TaskData(self.context.base.train, self.model, "text")]
        return super().fit(experience, param_groups, desc, steps, data=mixed, **train_kwargs)


class DoubleSpender(FullFineTuning):
    """Trains each phase twice, once through its own call of `train`, and records only the fit's phase."""

    def fit(self, experience, param_groups, desc=None, steps=None, data=None, **train_kwargs):
        from cl_bench.api.training import train

        ctx = self.context
        train(self.model, self.data(experience, "train"), param_groups, steps=steps or ctx.budget.steps,
              batch_size=ctx.budget.batch_size, seed=1, device=ctx.device, progress=False)
        return super().fit(experience, param_groups, desc, steps, data, **train_kwargs)


class LabelRouter(FullFineTuning):
    """Answers batches labelled text with the base model's LM head, the rest with the fine-tuned one: routed by a
    batch hook reading the modality label (model_for gives one model for every task), undeclared."""

    def setup(self, model, context):
        super().setup(model, context)
        head = model.lm.get_output_embeddings()
        self._base_head, self._text = head.weight.detach().clone(), False
        model.batch_hooks.append(self._label)
        head.register_forward_hook(self._route)

    def _label(self, batch):
        self._text = batch.modality == "text"

    def _route(self, module, args, output):
        import torch.nn.functional as F

        if self._text and not module.training:
            return F.linear(args[0], self._base_head.to(args[0].dtype))
        return output


class HomeWriter(FullFineTuning):
    """Keeps a note of each stage under ~/.cache, outside the run's cache directory."""

    def learn(self, experience):
        import json
        from pathlib import Path

        note = Path.home() / ".cache" / "home-writer" / f"{experience.name}.json"
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(json.dumps({"stage": experience.name}))
        return super().learn(experience)


from helpers_streams import SmallNumbers


class LeakyNumbers(SmallNumbers):
    """small-numbers with the first 4 training items of every task copied into its test split."""

    name = "leaky-numbers"

    def build(self, cache_dir=None, progress=True):
        from datasets import concatenate_datasets

        ts = super().build(cache_dir, progress)

        def leak(e):
            return replace(e, test=concatenate_datasets([e.train.select(range(4)), e.test]))

        return replace(ts, name=self.name, base=leak(ts.base), experiences=tuple(map(leak, ts.experiences)))


from cl_bench.api.strategy import Declaration  # noqa: E402
from cl_bench.strategies.adapters import AdapterPerModality  # noqa: E402


class TaskRouterSaysModality(AdapterPerModality):
    """An adapter set per task (run it with -o route=task) that declares routing by modality: on a stream with two
    tasks of one modality, it answers them with different weights."""

    def declaration(self):
        return Declaration(task_weights=True, modality_routed=True)


class ModalityRouterSaysTask(AdapterPerModality):
    """An adapter set per modality that declares routing by task."""

    def declaration(self):
        return Declaration(task_weights=True, task_routed=True)

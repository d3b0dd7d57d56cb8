"""Joint training: the multi-task upper bound, re-trained on every task seen so far at each stage.

At stage k the model starts again from the base (LM and freshly initialised projectors,
by default) and trains on the union of the base text task's training split and the
training splits of modalities 1..k, each batch drawn from one task in proportion to the
tasks' sizes. Its accuracy R[k, k] is the a*_k of intransigence (Chaudhry et al. 2018).
It is not a continual learner: it keeps every earlier training split.

`single-ft` is the per-task reference beside it: each stage starts again from the base and
fine-tunes on that stage's modality alone, within the stage budget. Here joint training
mixes tasks and can learn a modality less well than fine-tuning on it alone, so the
leaderboard's a*_k is the better of the two (see cl_bench.analysis.metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cl_bench.streams.experience import Experience
from cl_bench.api.strategy import Declaration, Memory, Strategy


@dataclass(frozen=True)
class SingleTaskConfig:
    """Single-task fine-tuning options (joint training has these and more)."""

    lr: float = field(default=1e-4, metadata={"help": "learning rate of the language model"})  # chosen by clbench tune, results/hparams/vision-audio.md
    projector_lr: float = field(default=1e-2, metadata={"help": "learning rate of the modality projectors"})  # tuned

    def __post_init__(self) -> None:
        for name in ("lr", "projector_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{type(self).__name__}.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class JointConfig(SingleTaskConfig):
    """Joint multi-task training options."""

    # mix, projector_lr and lr: chosen by clbench tune, results/hparams/vision-audio.md
    lr: float = field(default=1e-3, metadata={"help": "learning rate of the language model"})
    projector_lr: float = field(default=5e-3, metadata={"help": "learning rate of the modality projectors"})
    include_text: bool = field(default=True, metadata={
        "help": "mix the base text task's training split in (the data the base was pre-trained on)"})
    from_scratch: bool = field(default=True, metadata={
        "help": "start each stage again from the base model; false continues from the previous stage"})
    scale_steps: bool = field(default=True, metadata={
        "help": "train k x the budget's steps at stage k, as many as a sequential learner has had by then"})
    mix: str = field(default="equal", metadata={
        "help": "how batches are shared among the tasks: size (in proportion to their training splits) or equal "
                "(the same share each, so a large text split does not take most batches)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mix not in ("size", "equal"):
            raise ValueError(f"JointConfig.mix must be 'size' or 'equal', got {self.mix!r}")


class Joint(Strategy):
    """Multi-task training on the base text task and every modality seen so far (the upper bound)."""

    setup_keeps_outputs = True  # row 0 is shared (cl_bench.run.shared; tests/test_shared.py checks it)
    shares_fits = True  # plain fits on the stage's own split: each computed once (cl_bench.run.shared.FitStore)

    Config = JointConfig
    tuning = {"mix": ("size", "equal"), "projector_lr": ("1e-3", "3e-3", "1e-2"),
              "lr": ("1e-4", "3e-4", "1e-3", "3e-3")}
    declares = Declaration(past_train=True, budget="k x the stage budget at stage k (the multi-task reference)")
    earlier, word = True, "joint"  # train on every modality seen so far

    def declaration(self) -> Declaration:
        if self._option("scale_steps"):
            return self.declares
        return Declaration(past_train=True)

    def memory(self) -> Memory:
        tasks = ([self.context.base] if self._option("include_text") and self.context.base is not None else []) + self._seen
        return Memory(past_train_items={e.name: len(e.train) for e in tasks})

    def setup(self, model, context) -> None:
        super().setup(model, context)
        self._seen: list[Experience] = []
        self._task_data: dict[str, object] = {}
        # The starting point of every stage; a CPU copy (the whole model: this is a baseline, not a CL method).
        self._start = {k: v.detach().to("cpu", copy=True) for k, v in super().state_dict().items()}

    def _option(self, name: str, default: bool = False) -> bool:
        """A JointConfig switch; single-task fine-tuning has none of them (their defaults there: off, from the base)."""
        return getattr(self.config, name, default)

    def resumed(self, experiences: list[Experience]) -> None:
        self._seen = list(experiences)

    def _train_data(self, experience: Experience):
        from cl_bench.api.training import TaskData

        if experience.name not in self._task_data:
            self._task_data[experience.name] = TaskData(experience.train, self.model, experience.modality)
        return self._task_data[experience.name]

    def footprint(self, model, modality: str):
        """The LM and the projectors of every modality trained together so far (all of them when joint)."""
        from cl_bench.api.footprint import Footprint, numel, projector

        seen = model.__dict__.setdefault("_plan_modalities", [])
        seen[:] = ([m for m in seen if m != modality] if self.earlier else []) + [modality]
        return Footprint(trainable=numel(model.lm) + sum(numel(projector(model, m)) for m in seen))

    def learn(self, experience: Experience) -> dict:
        if experience.test is not None:
            raise RuntimeError("a strategy was handed test data; the runner must pass experience.without_test()")
        self._seen = [e for e in self._seen if e.name != experience.name] + [experience]
        m = self.model
        if self._option("from_scratch", True):
            m.load_state_dict(self._start, strict=False)
        tasks = list(self._seen) if self.earlier else [experience]
        if self._option("include_text"):
            if self.context.base is None:
                raise ValueError("joint: include_text needs the base task's training split, which this run does "
                                 "not provide; pass -o include-text=false")
            tasks.insert(0, self.context.base)
        self.freeze_all()
        m.lm.requires_grad_(True)
        groups = [{"params": list(m.lm.parameters()), "lr": self.config.lr}]
        projectors = [m.projectors[e.modality] for e in tasks if e.modality in m.projectors]
        for p in dict.fromkeys(projectors):
            p.requires_grad_(True)
            groups.append({"params": list(p.parameters()), "lr": self.config.projector_lr})
        k = len(self._seen)
        steps = self.context.budget.steps * (k if self._option("scale_steps") else 1)
        stats = self.fit(experience, groups, desc=f"{self.word} {'+'.join(e.name for e in tasks)}", steps=steps,
                         # the stage's own split alone (single-ft): the plain fit, which is shared
                         data=None if tasks == [experience] else [self._train_data(e) for e in tasks],
                         **({"mix": [1.0] * len(tasks)} if self._option("mix", "size") == "equal" and len(tasks) > 1
                            else {}))
        stats["tasks"] = [e.name for e in tasks]
        stats["summary"] = f"{self.word} on {' + '.join(e.name for e in tasks)}, {steps} steps"
        return stats


class SingleTask(Joint):
    """Each modality fine-tuned alone from the base (the per-task reference of intransigence and plasticity)."""

    Config = SingleTaskConfig
    tuning = {"projector_lr": ("1e-3", "3e-3", "1e-2"), "lr": ("3e-5", "1e-4", "3e-4", "1e-3")}
    tuning_score = "own"  # a per-task reference: each task right after its own stage, not what it keeps
    declares = Declaration()
    earlier, word = False, "single-task"
    shares_fits = True  # declared by each class (cl_bench.api.strategy.shares_fits)

    def declaration(self) -> Declaration:
        return self.declares

    def memory(self) -> Memory:
        return Memory()

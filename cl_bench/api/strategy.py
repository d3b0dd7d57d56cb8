"""The Strategy interface every method implements, built-in or third-party.

The runner owns the loop; a strategy only:
- ``setup`` once on the base model (before row 0 of the accuracy matrix is measured),
- ``learn`` one experience from its training and validation splits (never test),
- gives, with ``model_for``, the model to evaluate a task with,
- reports its ``cost`` (trainable, added and total parameters),
- saves and loads its ``state_dict`` between stages, so that a killed run resumes,
- declares what it keeps from past tasks and knows at test time (``declares``, ``memory``),
  which the leaderboard shows next to its scores and `clbench validate` checks.
"""

from __future__ import annotations

import abc
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from cl_bench.config import Budget
from cl_bench.models.multimodal import MultimodalLM, count_parameters
from cl_bench.streams.experience import Experience, TaskInfo


@dataclass(frozen=True)
class NoOptions:
    """A strategy without options of its own."""


@dataclass(frozen=True)
class RunContext:
    """What a strategy may know about the run: never the test data or the evaluator."""

    device: torch.device
    seed: int
    budget: Budget
    stream: str
    tasks: tuple[TaskInfo, ...]  # column order of the accuracy matrix, text first
    progress: bool = True
    # The base text task's train and val splits (test removed): the data the base model was
    # pre-trained on, for strategies that rehearse it (joint training, replay). None when unknown.
    base: Experience | None = None
    # checkpoint(label): the runner evaluates every task's validation split now and records it
    # under the stage's "checkpoints" (Strategy.checkpoint); the strategy gets nothing back.
    checkpoint: Callable[[str], None] | None = None
    # The stored fits (cl_bench.run.shared.FitStore) where the strategy declares shares_fits and sharing is on; None
    # otherwise. Strategy.fit uses it.
    fits: Any = None


def shares_fits(cls: type) -> bool:
    """Whether strategy class `cls` itself declares ``shares_fits`` (not inherited from a base class)."""
    return bool(vars(cls).get("shares_fits", False))


@dataclass(frozen=True)
class Cost:
    """Parameter counts after a stage.

    trainable: parameters the stage updated; added: parameters held beyond the base LM
    (projectors, adapters, experts, ...); total: every parameter the strategy holds.
    """

    trainable: int
    added: int
    total: int

    def __post_init__(self) -> None:
        if min(self.trainable, self.added, self.total) < 0 or self.trainable > self.total or self.added > self.total:
            raise ValueError(f"inconsistent cost report {self}")


@dataclass(frozen=True)
class Declaration:
    """What a strategy keeps from past tasks and knows at test time, shown next to its scores.

    Every strategy picks a modality's projector by the input's modality (each modality has its
    own encoder); `modality_routed` and `task_routed` are about the language model's weights (and,
    for a strategy routed by task, the projector it kept for that task). A stream may hold two
    tasks of one modality: a strategy routed by modality then answers both with the same weights,
    one routed by task keeps them apart, being told which task an input belongs to.
    """

    past_train: bool = False  # keeps items of earlier tasks' training splits (replay, joint)
    past_val: bool = False  # keeps earlier tasks' validation splits (e.g. to re-tune on them)
    task_weights: bool = False  # keeps weights per task or from past tasks (experts, adapters, masks, teachers)
    modality_routed: bool = False  # answers an input with LM weights chosen by its modality
    task_routed: bool = False  # answers an input with LM weights chosen by its task (told the task at test time)
    budget: str = "equal"  # "equal": the stage budget of training examples; otherwise what it spends instead

    def __post_init__(self) -> None:
        if not self.budget:
            raise ValueError("Declaration.budget must be 'equal' or say what the strategy spends instead")
        if self.modality_routed and self.task_routed:
            raise ValueError("Declaration: a strategy routes by modality or by task, not both")

    def short(self) -> str:
        """A compact label, e.g. "past train, routed by modality" ("-" when nothing is declared)."""
        parts = [name for flag, name in ((self.past_train, "past train"), (self.past_val, "past val"),
                                         (self.task_weights, "task weights"),
                                         (self.modality_routed, "routed by modality"),
                                         (self.task_routed, "routed by task")) if flag]
        if self.budget != "equal":
            parts.append(f"budget: {self.budget}")
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class Memory:
    """What a strategy holds of past tasks after a stage, counted (see Declaration).

    past_train_items / past_val_items: task name -> items of that task's training /
    validation split kept (tasks learned before the current stage, the base text task
    included); task_weight_bytes: bytes of weights kept per task or from past tasks,
    projectors excluded (every strategy has one per modality).
    """

    past_train_items: dict = field(default_factory=dict)
    past_val_items: dict = field(default_factory=dict)
    task_weight_bytes: int = 0

    def __post_init__(self) -> None:
        counts = [*self.past_train_items.values(), *self.past_val_items.values(), self.task_weight_bytes]
        if any(not isinstance(c, int) or c < 0 for c in counts):
            raise ValueError(f"Memory counts must be integers >= 0, got {self}")


def encode_state(value) -> torch.Tensor:
    """A JSON value (a dict of counters, the options chosen so far) as a uint8 tensor, for ``Strategy.state_dict``:
    a saved state holds tensors only. ``decode_state`` gives the value back."""
    import json

    return torch.tensor(list(json.dumps(value, sort_keys=True).encode()), dtype=torch.uint8)


def decode_state(tensor: torch.Tensor):
    """The JSON value `encode_state` made `tensor` from (in ``Strategy.load_state_dict``)."""
    import json

    return json.loads(bytes(tensor.cpu().tolist()).decode())


ROUTES = ("modality", "task")


def route_option(weights: str):
    """The `route` option of a strategy with weights per modality (a Config field; `weights`: what it keeps, e.g.
    "adapter set"): "modality" (one per modality; a modality's later task trains it on) or "task" (one, and a
    projector copy, per task: Declaration.task_routed). Added later than the strategies: keyed only when changed."""
    return field(default="modality", metadata={
        "keyed": "changed",  # runs from before it (at its default) keep their keys (cl_bench.run.keys)
        "help": f"modality: one {weights} per modality (a modality's later task trains it on); task: one {weights} "
                "and projector copy per task, picked by the task an input belongs to"})


def check_route(config) -> None:
    """Refuse a `route` option other than modality or task, naming the Config."""
    if config.route not in ROUTES:
        raise ValueError(f"{type(config).__name__}.route must be modality or task, got {config.route!r}")


def weights_key(route: str, task) -> str:
    """What a routed strategy keys a task's weights by: its modality, or its name with route=task."""
    return task.name if route == "task" else task.modality


def latest_weights(route: str, tasks, have, modality: str) -> str | None:
    """The key of the weights that answer an input of `modality` now, among `have` (keys in learning order):
    the modality's own, or (route=task) its latest task's; None when it has none yet."""
    if route != "task":
        return modality if modality in have else None
    of = {t.name: t.modality for t in tasks}
    mine = [k for k in have if of.get(k) == modality]
    return mine[-1] if mine else None


class TaskProjectors:
    """Each task's own copy of its modality's projector, for a strategy routed by task (Declaration.task_routed).

    Two tasks of one modality share its encoder and projector in the model; a strategy that keeps the tasks apart
    keeps each task's projector as it was after the task's stage (``keep``), starts a new task of a modality from
    that modality's latest copy (``start``) and puts a task's copy back before answering its inputs (``use``).
    ``state_dict``/``load_state_dict`` carry the copies through a resume, under keys that start with `prefix`.
    """

    def __init__(self, prefix: str = "task_projector.") -> None:
        self.prefix = prefix
        self.copies: dict[str, dict[str, torch.Tensor]] = {}  # task name -> projector state, in learning order
        self.modality: dict[str, str] = {}  # task name -> its modality

    def keep(self, model, task: str, modality: str) -> None:
        self.copies[task] = {k: v.detach().clone() for k, v in model.projectors[modality].state_dict().items()}
        self.modality[task] = modality

    def start(self, model, modality: str) -> None:
        latest = [t for t in self.copies if self.modality[t] == modality]
        if latest:
            model.projectors[modality].load_state_dict(self.copies[latest[-1]])

    def use(self, model, task: TaskInfo) -> None:
        if task.name in self.copies:
            model.projectors[task.modality].load_state_dict(self.copies[task.name])

    def extra_bytes(self) -> int:
        """Bytes of the copies beyond one per modality (the model's own projector), for Memory.task_weight_bytes."""
        latest = {m: t for t, m in self.modality.items()}
        return tensor_bytes(v for t, c in self.copies.items() if latest[self.modality[t]] != t for v in c.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"{self.prefix}{t}.{k}": v for t, c in self.copies.items() for k, v in c.items()}
        out[f"{self.prefix}order"] = encode_state([[t, self.modality[t]] for t in self.copies])
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take the copies out of `state` (the keys under `prefix` are removed from it)."""
        order = decode_state(state.pop(f"{self.prefix}order")) if f"{self.prefix}order" in state else []
        self.copies, self.modality = {}, {}
        for task, modality in order:
            head = f"{self.prefix}{task}."
            self.copies[task] = {k[len(head):]: state.pop(k) for k in [k for k in state if k.startswith(head)]}
            self.modality[task] = modality


def tensor_bytes(tensors) -> int:
    """Bytes held by `tensors` (an iterable of tensors or parameters)."""
    return sum(t.numel() * t.element_size() for t in tensors)


class Strategy(abc.ABC):
    """Base class of continual-learning strategies. Subclasses implement ``learn``.

    Resuming: a killed run continues after its last saved stage in a new process, with a new instance. The runner
    calls ``setup(model, context)`` on the fresh base model, then ``load_state_dict`` with what ``state_dict``
    returned after that stage (saved with torch.save, loaded with weights_only=True: tensors only), then
    ``resumed(experiences learned before)``. So a strategy that holds more than the model's weights must:

    - put in ``state_dict`` every tensor it needs to continue, its own bookkeeping included: counters and choices
      as tensors (``encode_state`` / ``decode_state`` carry any JSON value);
    - in ``load_state_dict``, first recreate what later stages added to the model (adapters, experts, a
      per-modality copy), so that the saved tensors have somewhere to go, then load them;
    - in ``resumed``, rebuild what it derives from earlier experiences' data (replay buffers, validation sets);
    - draw its randomness from ``seed_for(experience)``, which is the same whether or not the run was resumed.

    A resumed run should give the result an uninterrupted one gives: kill one after a stage (``clbench run``,
    Ctrl-C) and run the same command again to check.
    """

    Config: ClassVar[type] = NoOptions
    declares: ClassVar[Declaration] = Declaration()
    # The values `clbench tune` tries on validation data: option name -> values (as on the command line), tuned
    # one option at a time in this order (cl_bench.engines.tune). Empty: nothing to tune.
    tuning: ClassVar[dict[str, tuple[str, ...]]] = {}
    # What tuning maximises: "final" (the final validation ACC, every task) or "own" (each new task's validation
    # accuracy right after its own stage: a per-task reference, which is not meant to keep earlier tasks).
    tuning_score: ClassVar[str] = "final"
    # True when ``setup`` leaves the model's outputs bit for bit as they were (zero-initialised additions,
    # identity wrappers): the run's row 0 is then the one every such strategy gets and is shared across runs
    # (cl_bench.run.shared). False by default: the strategy's own row 0 is always evaluated.
    setup_keeps_outputs: ClassVar[bool] = False
    # True when every ``fit`` of this strategy trains a model whose forward pass its parameters, buffers and module
    # classes determine (no hooks, no attributes set on modules, no extra loss), on the experience's own training
    # split: such a fit is then computed once and shared across runs and strategies, keyed by a hash of that state,
    # the parameter groups, the budget and the seed (cl_bench.run.shared.FitStore). False by default, and declared by
    # each class itself: a subclass, which may add hooks, does not inherit it.
    shares_fits: ClassVar[bool] = False

    def __init__(self, config=None) -> None:
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(self.config).__name__}")
        self.model: MultimodalLM | None = None
        self.context: RunContext | None = None

    # -- the interface -------------------------------------------------------------
    def setup(self, model: MultimodalLM, context: RunContext) -> None:
        """Take the base model (with fresh projectors) once, before anything is measured."""
        self.model, self.context = model, context
        self._base_parameters = count_parameters(model.lm)

    @abc.abstractmethod
    def learn(self, experience: Experience) -> dict:
        """Learn one experience (its ``test`` is None).

        Returns statistics for the result file; a "summary" entry (one short line) is
        also printed under the run's summary table.
        """

    def model_for(self, task: TaskInfo) -> MultimodalLM:
        """The model that answers inputs of `task` (the same one for every task by default)."""
        return self.model

    def cost(self) -> Cost:
        """Parameter counts of ``self.model``: trainable ones are those with requires_grad set."""
        m = self.model
        total = count_parameters(m.lm) + count_parameters(m.projectors)
        trainable = count_parameters(m.lm, True) + count_parameters(m.projectors, True)
        return Cost(trainable=trainable, added=total - self._base_parameters, total=total)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything needed to continue after a stage (encoders are rebuilt, not saved)."""
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith("encoders.")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"checkpoint does not fit {type(self).__name__}: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}; start the run again with --restart")
        self.model.load_state_dict(state, strict=False)

    def frozen(self) -> list[torch.nn.Parameter]:
        """Parameters this strategy promises never to change during a run (checked by `clbench validate`).

        Called once after ``setup``; none by default.
        """
        return []

    def memory(self) -> Memory:
        """What the strategy holds of past tasks now (called by the runner after every stage)."""
        return Memory()

    def footprint(self, model: MultimodalLM, modality: str):
        """What a stage of `modality` trains and holds, for the memory plan (cl_bench.run.plan; `clbench plan`).

        `model` is a copy on torch's meta device (no memory), the same one for every stage, called
        in stream order: add to it what the stage would add (new experts, adapters) and return a
        cl_bench.run.plan.Footprint. Called without ``setup``. Default: planned as full fine-tuning, with
        a note saying so.
        """
        import dataclasses

        from cl_bench.api.footprint import full_model_footprint

        return dataclasses.replace(full_model_footprint(model, modality),
                                   note=f"{type(self).__name__} plans no footprint of its own: planned as full "
                                        "fine-tuning (Strategy.footprint)")

    def declaration(self) -> Declaration:
        """The declaration for this strategy's options (``declares`` by default; options may change it)."""
        return self.declares

    def record_training(self, phase: str, steps: int, examples: int, tokens: int = 0, flops: float = 0.0) -> None:
        """Account one training phase of the current stage (``fit`` does this; call it from a loop of your own).

        The runner sums the phases of a stage into its training record: examples seen are the
        budget the protocol compares, FLOPs an estimate (cl_bench.api.training.FlopMeter).
        """
        self.__dict__.setdefault("_phases", []).append(
            {"phase": phase, "steps": int(steps), "examples": int(examples), "tokens": int(tokens),
             "flops": float(flops)})

    def take_training_record(self) -> list[dict]:
        """The phases recorded since the last call (the runner calls it after each stage)."""
        phases, self._phases = self.__dict__.get("_phases", []), []
        return phases

    def resumed(self, experiences: list[Experience]) -> None:
        """Called on resume, after ``load_state_dict``, with the experiences learned before (test removed).

        For strategies that keep something of earlier experiences' train/val data
        (validation sets, replay buffers) beyond their saved state. Does nothing by default.
        """

    # -- helpers for subclasses --------------------------------------------------------
    def checkpoint(self, label: str) -> None:
        """Have every task's validation accuracy recorded at this point of the stage, under `label`
        (e.g. MoExtend's "after-surgery"). For analysis: the strategy never sees the numbers."""
        if self.context is not None and self.context.checkpoint is not None:
            self.context.checkpoint(label)

    def seed_for(self, experience: Experience) -> int:
        """A seed for this run and experience, the same whether or not the run was resumed."""
        return (self.context.seed * 1_000_003 + zlib.crc32(experience.name.encode())) % 2**31

    def fit(self, experience: Experience, param_groups: list[dict], desc: str | None = None, steps: int | None = None,
            data=None, **train_kwargs) -> dict:
        """Train `param_groups` on the experience's training split (the run's budget unless `steps` is given).

        `data`: TaskData (or a list of them, mixed in proportion to their sizes) to train on
        instead of the experience's training split. `train_kwargs` go to
        cl_bench.api.training.train (router_aux_loss, extra_loss, ...). Where the class declares
        ``shares_fits`` and trains on the experience's own split without an extra loss, a fit
        computed before from the same state is read instead (cl_bench.run.shared.FitStore).
        """
        from cl_bench.api.training import train

        if experience.test is not None:
            raise RuntimeError("a strategy was handed test data; the runner must pass experience.without_test()")
        ctx = self.context
        steps, seed = steps or ctx.budget.steps, self.seed_for(experience)

        def compute():
            return train(self.model, self.data(experience, "train") if data is None else data, param_groups,
                         steps=steps, batch_size=ctx.budget.batch_size, seed=seed, device=ctx.device,
                         warmup_fraction=ctx.budget.warmup_fraction, desc=desc or f"{experience.name}",
                         progress=ctx.progress, **train_kwargs)

        store, key = ctx.fits if shares_fits(type(self)) else None, None
        if store is not None and data is None:  # the experience's own training split: fixed by the run's identity
            key = store.key(self.model, experience, param_groups, steps=steps, batch_size=ctx.budget.batch_size,
                            warmup_fraction=ctx.budget.warmup_fraction, seed=seed, device=ctx.device,
                            train_kwargs=train_kwargs)
        stats = compute() if key is None else store.fit(key, self.model, param_groups, desc or experience.name,
                                                        ctx.device, compute)
        self.record_training(desc or experience.name, stats.steps, stats.examples, stats.tokens, stats.flops)
        return {"steps": stats.steps, "first_loss": round(stats.first_loss, 5), "last_loss": round(stats.last_loss, 5),
                "seconds_per_step": round(stats.seconds_per_step, 5)}

    def shared_seconds(self) -> float:
        """Seconds of fits read from the store instead of computed (what they took when computed, less the reading):
        add the change over a phase to its wall time to time it as if computed (the runner does for each stage)."""
        store = self.context.fits if self.context is not None else None
        return store.credit if store is not None else 0.0

    def data(self, experience: Experience, split: str):
        """The experience's `split` ("train" or "val") as batches for this model, built once per stage."""
        from cl_bench.api.training import TaskData
        from cl_bench.streams.experience import SplitWithheld

        if split == "test":
            raise SplitWithheld(f"task {experience.name!r}: the test split is withheld from strategies (the runner "
                                "alone evaluates on it); train and val are the strategy's")
        cache = self.__dict__.setdefault("_data_cache", {})
        key = (experience.name, split)
        if key not in cache:
            if any(k[0] != experience.name for k in cache):
                cache.clear()  # one stage's data at a time
            cache[key] = TaskData(experience.split(split), self.model, experience.modality)
        return cache[key]

    def freeze_all(self) -> None:
        self.model.requires_grad_(False)


def strategy_class(name: str) -> type[Strategy]:
    """The Strategy subclass registered as `name`, checked: a PluginError naming the plug-in when it is not a
    Strategy subclass or its Config cannot take options (an UnknownName when nothing registers `name`)."""
    from cl_bench import registry
    from cl_bench.config import check_config_class
    from cl_bench.errors import PluginError

    cls = registry.strategies.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise PluginError(registry.strategies.label(name), f"is {cls!r}, not a cl_bench.Strategy subclass")
    try:
        check_config_class(cls.Config, f"strategy {name!r}")
    except TypeError as e:
        raise PluginError(registry.strategies.label(name), str(e).removeprefix(f"strategy {name!r}: ")) from e
    return cls

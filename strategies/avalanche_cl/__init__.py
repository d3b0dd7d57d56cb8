"""Classic continual-learning baselines run through avalanche-lib's own plugins.

`ewc` (EWCPlugin), `lwf` (LwFPlugin with a vocabulary distillation) and `replay`
(ReplayPlugin) train like full fine-tuning (every LM parameter and the modality's
projector), inside avalanche's SupervisedTemplate; `glue` says what was adapted.

By default the base text task is avalanche's experience 0: it gets no training steps
(the base was pre-trained on it), but the plugins' after-experience hooks run on its
training split, so that EWC's Fisher, LwF's teacher and the replay buffer cover text
from the first modality on.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import torch

from cl_bench.streams.experience import Experience, column
from cl_bench.api.strategy import Declaration, Memory, Strategy, tensor_bytes

PREFIX = "avalanche."


@dataclass(frozen=True)
class AvalancheConfig:
    """Options shared by the avalanche strategies."""

    lr: float = field(default=3e-4, metadata={"help": "learning rate of the language model"})
    projector_lr: float = field(default=5e-3, metadata={"help": "learning rate of the modality projector"})
    include_text: bool = field(default=True, metadata={
        "help": "make the base text task's training split avalanche's experience 0 (no training steps; the "
                "plugins' after-experience hooks run on it)"})

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in ("lr", "projector_lr"):
            if not getattr(self, f) > 0:
                raise ValueError(f"{name}.{f} must be > 0, got {getattr(self, f)}")


@dataclass(frozen=True)
class EWCConfig(AvalancheConfig):
    """EWC options (avalanche's EWCPlugin)."""

    # Avalanche's Fisher squares mini-batch gradients (about 3e-5 a weight on average here), hence the scale;
    # chosen by clbench tune, results/hparams/vision-audio.md.
    ewc_lambda: float = field(default=1e4, metadata={"help": "weight of the EWC penalty"})
    projector_lr: float = field(default=1e-2, metadata={"help": "learning rate of the modality projector"})  # tuned
    mode: str = field(default="separate", metadata={
        "help": "separate: one penalty per earlier experience; online: one running Fisher (needs decay-factor)"})
    decay_factor: float | None = field(default=None, metadata={"help": "decay of the online Fisher, in (0, 1]"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.ewc_lambda) and self.ewc_lambda >= 0):
            raise ValueError(f"EWCConfig.ewc_lambda must be a finite number >= 0, got {self.ewc_lambda}")
        if self.mode not in ("separate", "online"):
            raise ValueError(f"EWCConfig.mode must be 'separate' or 'online', got {self.mode!r}")
        if self.mode == "online" and not (self.decay_factor is not None and 0 < self.decay_factor <= 1):
            raise ValueError(f"EWCConfig: mode 'online' needs decay_factor in (0, 1], got {self.decay_factor}")
        if self.mode == "separate" and self.decay_factor is not None:
            raise ValueError("EWCConfig: decay_factor is only used with mode 'online'; drop it or set mode=online")


@dataclass(frozen=True)
class LwFConfig(AvalancheConfig):
    """LwF options (avalanche's LwFPlugin, distilling next-token distributions)."""

    projector_lr: float = field(default=1e-2, metadata={"help": "learning rate of the modality projector"})  # tuned
    alpha: float = field(default=1.0, metadata={"help": "weight of the distillation loss"})
    temperature: float = field(default=2.0, metadata={"help": "softmax temperature of the distillation"})
    positions: str = field(default="all", metadata={
        "help": "where to distil: all (every position that predicts a real text token), prompt (those that "
                "predict prompt tokens: not the answer, which the teacher has not learnt for a new modality) "
                "or answer (answer tokens only)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"LwFConfig.alpha must be a finite number >= 0, got {self.alpha}")
        if not self.temperature > 0:
            raise ValueError(f"LwFConfig.temperature must be > 0, got {self.temperature}")
        if self.positions not in ("all", "prompt", "answer"):
            raise ValueError(f"LwFConfig.positions must be 'all', 'prompt' or 'answer', got {self.positions!r}")


@dataclass(frozen=True)
class ReplayConfig(AvalancheConfig):
    """Experience replay options (avalanche's ReplayPlugin with an experience-balanced buffer)."""

    lr: float = field(default=1e-3, metadata={"help": "learning rate of the language model"})  # chosen by clbench tune, results/hparams/vision-audio.md
    projector_lr: float = field(default=5e-3, metadata={"help": "learning rate of the modality projector"})  # tuned
    mem_size: int = field(default=500, metadata={"help": "items kept in the buffer, shared equally by experiences"})
    memory_fraction: float = field(default=0.25, metadata={
        "help": "share of each batch drawn from the buffer (the batch keeps the budget's size)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mem_size < 1:
            raise ValueError(f"ReplayConfig.mem_size must be >= 1, got {self.mem_size}")
        if not 0 < self.memory_fraction < 1:
            raise ValueError(f"ReplayConfig.memory_fraction must be in (0, 1), got {self.memory_fraction}")

    def split(self, batch_size: int) -> tuple[int, int]:
        """(current, memory) examples of a batch of `batch_size`; each at least 1."""
        if batch_size < 2:
            raise ValueError(f"replay needs a batch size of at least 2 (current + memory), got {batch_size}")
        memory = min(batch_size - 1, max(1, round(batch_size * self.memory_fraction)))
        return batch_size - memory, memory


@dataclass(frozen=True)
class SmallReplayConfig(ReplayConfig):
    """Experience replay with a 50-item buffer (registered as replay-small, beside replay's 500)."""

    lr: float = field(default=1e-4, metadata={"help": "learning rate of the language model"})  # chosen by clbench tune, results/hparams/vision-audio.md
    projector_lr: float = field(default=1e-2, metadata={"help": "learning rate of the modality projector"})  # tuned
    mem_size: int = field(default=50, metadata={"help": "items kept in the buffer, shared equally by experiences"})


class AvalancheStrategy(Strategy):
    """Full fine-tuning inside avalanche's SupervisedTemplate, with the avalanche plugins of `plugins()`."""

    setup_keeps_outputs = True  # row 0 is shared (cl_bench.run.shared; tests/test_shared.py checks it)

    Config = AvalancheConfig

    # -- what a method adds ----------------------------------------------------------------
    def plugins(self) -> list:
        """This method's avalanche plugins (called once, in ``setup``)."""
        return []

    def plugin_state(self) -> dict[str, torch.Tensor]:
        """The plugins' state as tensors, keys without the ``avalanche.`` prefix."""
        return {}

    def load_plugin_state(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def stage_stats(self) -> dict:
        return {}

    def footprint(self, model, modality: str):
        from cl_bench.api.footprint import full_model_footprint

        model._plan_stage = getattr(model, "_plan_stage", 0) + 1
        return full_model_footprint(model, modality)

    # -- the Strategy interface ------------------------------------------------------------
    def setup(self, model, context) -> None:
        from cl_bench.strategies.avalanche_cl import glue  # before any other avalanche import: it imports it quietly

        from avalanche.training.plugins import LRSchedulerPlugin  # noqa: I001

        super().setup(model, context)
        if model.compute_dtype == torch.float16:
            raise ValueError(f"{type(self).__name__}: --dtype float16 needs its loss scaled, which avalanche's "
                             "training loop does not do; use --dtype bfloat16")
        self.collate = glue.Collate()
        self.module = glue.LMModule(model)
        self.budget = glue.StepBudget()
        self.method_plugins = self.plugins()
        # Placeholders: each experience gets its own optimizer and schedule (see _train).
        placeholder = torch.optim.AdamW(model.lm.parameters())
        self._lr_plugin = LRSchedulerPlugin(torch.optim.lr_scheduler.LambdaLR(placeholder, lambda s: 1.0),
                                            step_granularity="iteration")
        self.template = glue.LMTemplate(
            model=self.module, optimizer=placeholder, criterion=glue.answer_loss,
            train_mb_size=context.budget.batch_size, device=context.device,
            plugins=[*self.method_plugins, self._lr_plugin, self.budget], evaluator=glue.quiet_evaluator())

    def learn(self, experience: Experience) -> dict:
        if experience.test is not None:
            raise RuntimeError("a strategy was handed test data; the runner must pass experience.without_test()")
        if self.config.include_text and self.template.clock.train_exp_counter == 0:
            if self.context.base is None:
                raise ValueError(f"{type(self).__name__.lower()}: include_text needs the base task's training split, "
                                 "which this run does not provide; pass -o include-text=false")
            self._train(self.context.base, steps=0)
        stats = self._train(experience, steps=self.context.budget.steps)
        stats.update(self.stage_stats())
        return stats

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = super().state_dict()
        state[PREFIX + "experiences"] = torch.tensor(self.template.clock.train_exp_counter)
        state.update({PREFIX + k: v for k, v in self.plugin_state().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
        weights = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
        expected = set(super().state_dict())
        missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
        if missing or unexpected or "experiences" not in own:
            raise ValueError(f"checkpoint does not fit {type(self).__name__}: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}; start the run again with --restart")
        self.model.load_state_dict(weights, strict=False)
        self.template.clock.train_exp_counter = int(own.pop("experiences"))
        self.load_plugin_state(own)

    # -- helpers ---------------------------------------------------------------------------
    def _avalanche_experience(self, experience: Experience, index: int):
        """`experience`'s training split as avalanche experience number `index`."""
        from cl_bench.api.training import TaskData
        from cl_bench.strategies.avalanche_cl import glue

        data = TaskData(experience.train, self.model, experience.modality)
        answers = list(experience.answer_set)
        targets = [answers.index(a) if a in answers else -1 for a in column(experience.train, "answer")]
        task_label = [t.name for t in self.context.tasks].index(experience.name)
        return glue.make_experience(self.collate, experience.name, data, targets, task_label, index)

    def _train(self, experience: Experience, steps: int) -> dict:
        """Train like full fine-tuning for exactly `steps` iterations through avalanche's template."""
        from avalanche.training.plugins import LRSchedulerPlugin

        from cl_bench.api.training import cosine_with_warmup, master_weights

        m, ctx = self.model, self.context
        self.freeze_all()
        for p in m.parameters():  # EWC's Fisher squares every .grad: none may be left from an earlier stage
            p.grad = None
        m.lm.requires_grad_(True)
        groups = [{"params": list(m.lm.parameters()), "lr": self.config.lr}]
        if experience.modality in m.projectors:
            m.projectors[experience.modality].requires_grad_(True)
            groups.append({"params": list(m.projectors[experience.modality].parameters()),
                           "lr": self.config.projector_lr})
        master_weights(p for g in groups for p in g["params"])
        opt = torch.optim.AdamW(groups, weight_decay=0.0)
        warmup = max(1, int(ctx.budget.warmup_fraction * steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, steps, warmup))
        plugins = self.template.plugins
        lr_plugin = LRSchedulerPlugin(schedule, step_granularity="iteration")
        plugins[plugins.index(self._lr_plugin)] = self._lr_plugin = lr_plugin
        self.template.optimizer = opt
        self.template.train_epochs = max(1, steps)  # every epoch has at least one iteration; StepBudget stops
        self.budget.steps = steps
        index = self.template.clock.train_exp_counter
        exp = self._avalanche_experience(experience, index)
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # avalanche's loaders shuffle with the global generator
            torch.manual_seed(self.seed_for(experience))
            # avalanche 0.6's own ReplayPlugin calls its buffer's deprecated update(), and its deprecation decorator
            # resets the warning filters (simplefilter("once")) on every call, so an "ignore" filter cannot hold:
            # record the warnings instead and pass on every other one.
            with warnings.catch_warnings(record=True) as caught:
                self.template.train(exp, eval_streams=[], drop_last=True)
            for w in caught:
                if not str(w.message).startswith("Call to deprecated function update"):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        m.eval()
        done = len(self.budget.losses)
        if done != steps:
            raise RuntimeError(f"{experience.name}: avalanche ran {done} of {steps} steps; the training split "
                               f"({len(experience.train)} items) must hold at least one batch")
        losses = self.budget.losses
        meter = self.budget.meter
        self.record_training(f"{experience.name} (avalanche)", done, self.budget.examples, meter.tokens, meter.flops)
        return {"steps": done, "first_loss": round(losses[0], 5) if losses else float("nan"),
                "last_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 5),
                "seconds_per_step": round(self.budget.seconds / max(1, done), 5),
                "avalanche_experience": index}


class EWC(AvalancheStrategy):
    """Elastic weight consolidation: avalanche's EWCPlugin on full fine-tuning."""

    Config = EWCConfig
    tuning = {"projector_lr": ("1e-3", "3e-3", "1e-2"), "lr": ("1e-4", "3e-4", "1e-3"),
              "ewc_lambda": ("1e3", "1e4", "1e5")}
    declares = Declaration(task_weights=True)  # the anchor parameters and their Fisher importances

    def memory(self) -> Memory:
        kept = [p.data for d in (self.ewc.saved_params, self.ewc.importances) for exp in d.values()
                for p in exp.values()]
        return Memory(task_weight_bytes=tensor_bytes(kept))

    def footprint(self, model, modality: str):
        """Full fine-tuning, holding float32 anchors and importances of every earlier experience (the base text
        task's included; online mode: one set)."""
        import dataclasses

        fp = super().footprint(model, modality)
        sets = model._plan_stage if self.config.mode == "separate" else 1
        return dataclasses.replace(fp, held_bytes=2 * sets * 4 * sum(p.numel() for p in model.parameters()))

    def plugins(self) -> list:
        from avalanche.training.plugins import EWCPlugin

        c = self.config
        self.ewc = EWCPlugin(ewc_lambda=c.ewc_lambda, mode=c.mode, decay_factor=c.decay_factor)
        return [self.ewc]

    def plugin_state(self) -> dict[str, torch.Tensor]:
        from cl_bench.strategies.avalanche_cl.glue import params_state

        return {**params_state(self.ewc.saved_params, "ewc.params."),
                **params_state(self.ewc.importances, "ewc.importances.")}

    def load_plugin_state(self, state: dict[str, torch.Tensor]) -> None:
        from collections import defaultdict

        from cl_bench.strategies.avalanche_cl.glue import load_params_state

        device = self.context.device
        self.ewc.saved_params = defaultdict(dict, load_params_state(state, "ewc.params.", device))
        self.ewc.importances = defaultdict(dict, load_params_state(state, "ewc.importances.", device))

    def stage_stats(self) -> dict:
        c = self.config
        return {"fisher_sets": len(self.ewc.importances),
                "summary": f"EWC (avalanche), lambda {c.ewc_lambda:g}, {c.mode}, "
                           f"Fisher of {len(self.ewc.importances)} experience(s)"}


class LwF(AvalancheStrategy):
    """Learning without forgetting: avalanche's LwFPlugin, distilling next-token distributions."""

    Config = LwFConfig
    tuning = {"projector_lr": ("1e-3", "3e-3", "1e-2"), "lr": ("1e-4", "3e-4", "1e-3"),
              "positions": ("all", "prompt", "answer")}
    declares = Declaration(task_weights=True)  # the previous model, kept as the teacher

    def memory(self) -> Memory:
        teacher = self.lwf.lwf.prev_model
        if teacher is None:
            return Memory()
        return Memory(task_weight_bytes=tensor_bytes(v for k, v in teacher.state_dict().items()
                                                     if not k.startswith("mm.encoders.")))

    def footprint(self, model, modality: str):
        """Full fine-tuning, holding the teacher: a float32 copy of the model after the previous experience."""
        import dataclasses

        fp = super().footprint(model, modality)
        return dataclasses.replace(fp, held_bytes=4 * sum(p.numel() for p in model.parameters()))

    def plugins(self) -> list:
        from avalanche.training.plugins import LwFPlugin

        from cl_bench.strategies.avalanche_cl.glue import VocabularyLwF

        c = self.config
        self.lwf = LwFPlugin(alpha=c.alpha, temperature=c.temperature)
        self.lwf.lwf = VocabularyLwF(alpha=c.alpha, temperature=c.temperature, positions=c.positions)
        return [self.lwf]

    def plugin_state(self) -> dict[str, torch.Tensor]:
        d = self.lwf.lwf
        state = {"lwf.expcount": torch.tensor(d.expcount)}
        state.update({f"lwf.classes.{t}": torch.tensor(sorted(c), dtype=torch.long)
                      for t, c in d.prev_classes_by_task.items()})
        if d.prev_model is not None:
            state.update({f"lwf.teacher.{k}": v for k, v in d.prev_model.state_dict().items()
                          if not k.startswith("mm.encoders.")})
        return state

    def load_plugin_state(self, state: dict[str, torch.Tensor]) -> None:
        d = self.lwf.lwf
        d.expcount = int(state["lwf.expcount"])
        for k, v in state.items():
            if k.startswith("lwf.classes."):
                d.prev_classes_by_task[int(k.rsplit(".", 1)[1])] = set(v.tolist())
        teacher = {k[len("lwf.teacher."):]: v for k, v in state.items() if k.startswith("lwf.teacher.")}
        if teacher:
            d.prev_model = copy.deepcopy(self.module)
            d.prev_model.load_state_dict(teacher, strict=False)
            d.prev_model.eval().requires_grad_(False)

    def stage_stats(self) -> dict:
        c, d = self.config, self.lwf.lwf
        return {"last_distillation": round(d.last_penalty, 6),
                "summary": f"LwF (avalanche), alpha {c.alpha:g}, T {c.temperature:g}, {c.positions} positions, "
                           f"last distillation {d.last_penalty:.4f}"}


class Replay(AvalancheStrategy):
    """Experience replay: avalanche's ReplayPlugin with an experience-balanced buffer on full fine-tuning."""

    Config = ReplayConfig
    tuning = {"projector_lr": ("1e-3", "3e-3", "1e-2"), "lr": ("1e-4", "3e-4", "1e-3")}
    declares = Declaration(past_train=True)  # the buffer of earlier experiences' training items

    def memory(self) -> Memory:
        counts: dict[str, int] = {}
        for item in self.replay.storage_policy.sources():
            counts[item.source] = counts.get(item.source, 0) + 1
        return Memory(past_train_items=counts)

    def plugins(self) -> list:
        from avalanche.training.plugins import ReplayPlugin

        from cl_bench.strategies.avalanche_cl.glue import SeededBuffer

        c = self.config
        current, memory = c.split(self.context.budget.batch_size)
        self.replay = ReplayPlugin(mem_size=c.mem_size, batch_size=current, batch_size_mem=memory,
                                   storage_policy=SeededBuffer(c.mem_size, seed=self.context.seed))
        return [self.replay]

    def resumed(self, experiences: list[Experience]) -> None:
        # The buffer is rebuilt, not saved: each experience's draw is seeded (SeededBuffer).
        if self.config.include_text and self.context.base is None:
            raise ValueError("replay: include_text needs the base task's training split, which this run does not "
                             "provide; pass -o include-text=false (and --restart)")
        earlier = ([self.context.base] if self.config.include_text else []) + list(experiences)
        for i, e in enumerate(earlier):
            self.replay.storage_policy.post_adapt(self.template, self._avalanche_experience(e, i))

    def stage_stats(self) -> dict:
        counts = self.memory().past_train_items
        current, memory = self.config.split(self.context.budget.batch_size)
        return {"buffer": counts, "batch": {"current": current, "memory": memory},
                "summary": f"replay (avalanche), buffer {counts}, batches of {current} current + {memory} memory"}


class SmallReplay(Replay):
    """Experience replay with a small buffer (50 items by default): replay's memory-light setting."""

    Config = SmallReplayConfig
    tuning = {"projector_lr": ("1e-3", "3e-3", "1e-2"), "lr": ("1e-4", "3e-4", "1e-3")}

"""Glue that lets avalanche-lib's templates and plugins train clbench's multimodal LM.

Avalanche is written for image classification: items are (image, class, task),
a model maps an image batch to class logits, the loss is cross-entropy over classes.
What was adapted so that its SupervisedTemplate, EWCPlugin, LwFPlugin and
ReplayPlugin run unchanged on next-token prediction over several modalities:

- Data: an experience's split is a task-aware supervised AvalancheDataset of
  (Item(source, index), target) pairs, with the attributes ``targets`` (the answer's
  index in the task's answer set) and ``targets_task_labels`` (the task's column in
  the accuracy matrix). Tokens and encoder features stay in clbench's TaskData, one
  per source task, held by `Collate`.
- Collate: `Collate` turns items of one or several tasks (replay mixes modalities)
  into [MixedBatch, labels, task labels]; a MixedBatch holds one clbench Batch per
  source and has ``.to(device, non_blocking)``. Experiences are wrapped
  ``with_task_labels``, without which avalanche's train loader ignores the collate.
- Model: `LMModule` wraps MultimodalLM; forward(MixedBatch) runs the LM once per
  source and returns `LMOutput`: next-token logits padded to (B, L, V) in the
  collated row order, and in training mode the MoE router loss.
- Criterion: `answer_loss`, cross-entropy over every answer token of the batch
  (what MultimodalLM computes for a one-modality batch) plus the router loss.
- Evaluation: an EvaluationPlugin with no metrics and no loggers; clbench's runner
  evaluates, and there are no classes for avalanche's accuracy.
- Optimizer: made by the strategy for each experience from the parameters that
  require grad (LM and projector learning rates). `LMTemplate.make_optimizer` keeps
  it, where avalanche would put every model parameter into one group.
- Budget: `StepBudget` stops training after exactly N iterations (0 for the base
  text task, whose after-experience hooks still run) and clips gradients; the
  learning rate follows clbench's warmup + cosine through avalanche's LRSchedulerPlugin.
- LwF: `VocabularyLwF` distils the teacher's next-token distribution over the whole
  vocabulary at chosen positions, where avalanche's LwF distils class logits.
- Replay: `SeededBuffer` is avalanche's ExperienceBalancedBuffer with its reservoir
  sampling seeded per stored experience, so that a resumed run rebuilds the same buffer.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import DataAttribute, TaskAwareSupervisedClassificationDataset
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from avalanche.training.regularization import LearningWithoutForgetting
from avalanche.training.storage_policy import ExperienceBalancedBuffer
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.utils import ParamData
from torch import nn

from cl_bench.engine import TaskData
from cl_bench.models.multimodal import Batch, MultimodalLM


class Item(NamedTuple):
    """One example: row `index` of the TaskData registered under `source`."""

    source: str
    index: int


class _Items(torch.utils.data.Dataset):
    def __init__(self, source: str, targets: list[int]) -> None:
        self.source, self.targets = source, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return Item(self.source, i), self.targets[i]


@dataclass
class MixedBatch:
    """Rows of one or more sources, grouped by source; L = the longest row of any part."""

    parts: list[Batch]  # one clbench Batch per source, in row order
    labels: torch.Tensor  # (B, L) token ids at answer tokens, -100 elsewhere
    tokens: torch.Tensor  # (B, L) bool, True at real text tokens (not padding, not input slots)

    def to(self, device, non_blocking: bool = False) -> "MixedBatch":
        return MixedBatch([p.to(device) for p in self.parts], self.labels.to(device, non_blocking=non_blocking),
                          self.tokens.to(device, non_blocking=non_blocking))

    def __len__(self) -> int:
        return self.labels.shape[0]


class Collate:
    """Avalanche's collate_fn: items (Item, target, task label) -> [MixedBatch, labels, task labels]."""

    def __init__(self) -> None:
        self.sources: dict[str, TaskData] = {}

    def __call__(self, items) -> list:
        by_source: dict[str, list[tuple[int, int]]] = {}
        for item, _, task in items:
            by_source.setdefault(item.source, []).append((item.index, int(task)))
        parts = [self.sources[s].batch([i for i, _ in rows]) for s, rows in by_source.items()]
        L = max(p.ids.shape[1] for p in parts)
        labels = torch.cat([F.pad(p.ids.masked_fill(~p.answer, -100), (0, L - p.ids.shape[1]), value=-100)
                            for p in parts])
        tokens = torch.cat([F.pad(p.attention.bool() if p.slots is None else p.attention.bool() & ~p.slots,
                                  (0, L - p.ids.shape[1])) for p in parts])
        tasks = torch.tensor([t for rows in by_source.values() for _, t in rows], dtype=torch.long)
        return [MixedBatch(parts, labels, tokens), labels, tasks]


def make_dataset(collate: Collate, source: str, data: TaskData, answers: list[int], task_label: int):
    """A task-aware avalanche dataset over one clbench split already tokenized in `data`."""
    collate.sources[source] = data
    return TaskAwareSupervisedClassificationDataset(
        [_Items(source, answers)],
        data_attributes=[DataAttribute(answers, "targets"),
                         DataAttribute([task_label] * len(answers), "targets_task_labels", use_in_getitem=True)],
        collate_fn=collate)


def make_experience(collate: Collate, source: str, data: TaskData, answers: list[int], task_label: int,
                    index: int):
    """An avalanche experience (with task labels) over one clbench split already tokenized in `data`."""
    dataset = make_dataset(collate, source, data, answers, task_label)
    return with_task_labels(DatasetExperience(dataset=dataset, current_experience=index))


@dataclass
class LMOutput:
    """What LMModule returns to avalanche (its ``mb_output``)."""

    logits: torch.Tensor  # (B, L, V) next-token logits, zero at padding
    router_loss: torch.Tensor | None  # the MoE load-balancing loss, weighted by its coefficient


class LMModule(nn.Module):
    """The model avalanche trains: MultimodalLM fed MixedBatches, one LM pass per source."""

    def __init__(self, mm: MultimodalLM, router_aux_loss: bool = True) -> None:
        super().__init__()
        self.mm = mm
        self.router_aux_loss = router_aux_loss

    def forward(self, x: MixedBatch) -> LMOutput:
        L = x.labels.shape[1]
        aux = self.training and self.router_aux_loss
        kwargs = {"output_router_logits": True} if aux else {}
        logits, router, weights = [], [], []
        for b in x.parts:
            with self.mm.autocast():
                embeds, _ = self.mm.inputs(b)  # (b, L_b, d)
                out = self.mm.lm(inputs_embeds=embeds, attention_mask=b.attention, **kwargs)
            logits.append(F.pad(out.logits, (0, 0, 0, L - out.logits.shape[1])))  # (b, L, V)
            if aux and getattr(out, "aux_loss", None) is not None:
                router.append(out.aux_loss)
                weights.append(b.attention.sum())
        router_loss = None
        if router:  # the per-source losses, weighted by their real tokens
            w = torch.stack(weights).to(router[0].dtype)
            router_loss = self.mm.lm.config.router_aux_loss_coef * (torch.stack(router) * w).sum() / w.sum()
        return LMOutput(torch.cat(logits), router_loss)


def answer_loss(output: LMOutput, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch's answer tokens, plus the router loss (the criterion)."""
    logits = output.logits[:, :-1].float()  # position t predicts token t+1
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    return loss if output.router_loss is None else loss + output.router_loss


class LMTemplate(SupervisedTemplate):
    """SupervisedTemplate whose optimizer is set by the strategy before each ``train``."""

    def make_optimizer(self, **kwargs):
        pass  # keep the strategy's parameter groups (only parameters that require grad)

    def optimizer_step(self):
        from cl_bench.engine import optimizer_step

        budget = next((p for p in self.plugins if isinstance(p, StepBudget)), None)
        optimizer_step(self.optimizer, "avalanche training", len(budget.losses) + 1 if budget else 0,
                       budget.steps if budget else 0)


def quiet_evaluator() -> EvaluationPlugin:
    """No metrics, no loggers: clbench's runner evaluates."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "No loggers specified")
        return EvaluationPlugin(loggers=[])


class StepBudget(SupervisedPlugin):
    """Stops training after exactly `steps` iterations, clips gradients, records losses, time,
    examples seen and a FLOP estimate (cl_bench.engine.FlopMeter)."""

    def __init__(self, max_grad_norm: float = 1.0) -> None:
        super().__init__()
        self.steps, self.max_grad_norm = 0, max_grad_norm
        self.losses: list[float] = []
        self.seconds = 0.0
        self.examples, self.meter = 0, None

    def before_training_exp(self, strategy, **kwargs):
        from cl_bench.engine import FlopMeter

        self.losses, self.seconds, self._t0 = [], 0.0, time.perf_counter()
        self.examples, self.meter = 0, FlopMeter()
        if self.steps == 0:
            strategy.stop_training()  # no epoch runs; the after-experience hooks still do

    def before_training_iteration(self, strategy, **kwargs):
        x = strategy.mbatch[0]  # a MixedBatch
        self.examples += len(x)
        self.meter.start_step(int(sum(p.attention.sum() for p in x.parts)))

    def before_backward(self, strategy, **kwargs):
        from cl_bench.engine import Diverged

        value = strategy.loss.item()
        if not math.isfinite(value):
            raise Diverged("avalanche training", len(self.losses) + 1, self.steps, f"loss {value}")

    def before_update(self, strategy, **kwargs):
        from cl_bench.engine import Diverged

        self.meter.end_step()  # forward and backward of the first iteration measured
        params = [p for g in strategy.optimizer.param_groups for p in g["params"]]
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
        if not math.isfinite(norm):
            raise Diverged("avalanche training", len(self.losses) + 1, self.steps, f"gradient norm {norm}")

    def after_training_iteration(self, strategy, **kwargs):
        self.losses.append(strategy.loss.item())
        if len(self.losses) >= self.steps:
            self.seconds = time.perf_counter() - self._t0  # the steps alone, not the after-experience hooks
            strategy.stop_training()


def positions_mask(x: MixedBatch, positions: str) -> torch.Tensor:
    """(B, L-1) bool: the positions whose next-token distribution is distilled."""
    answer = x.labels[:, 1:] != -100
    if positions == "answer":
        return answer
    if positions == "prompt":  # predicts a real prompt token: the teacher knows those
        return x.tokens[:, 1:] & ~answer
    return x.tokens[:, 1:]  # "all": every position followed by a real text token


class VocabularyLwF(LearningWithoutForgetting):
    """Avalanche's LwF over an LM: distils the previous model's next-token distributions.

    The distillation is avalanche's own (``_distillation_loss``: KL at temperature T,
    averaged over rows, times alpha), applied with the vocabulary as the "units" and
    one row per distilled position: every position that predicts a real text token of
    the prompt or answer (``positions="all"``, the default), only those that predict
    prompt tokens (``"prompt"``: not the answer, where the teacher, which has not learnt
    the new modality and whose projector for it is untrained, mostly guesses), or only
    those that predict answer tokens (``"answer"``). The teacher sees the student's batch.
    """

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0, positions: str = "all") -> None:
        super().__init__(alpha=alpha, temperature=temperature)
        self.positions = positions
        self.last_penalty = 0.0

    def _lwf_penalty(self, out, x, curr_model):
        if self.prev_model is None:
            return 0
        with torch.no_grad():
            prev = self.prev_model(x)
        mask = positions_mask(x, self.positions)  # (B, L-1)
        student, teacher = out.logits[:, :-1][mask], prev.logits[:, :-1][mask]  # (N, V)
        penalty = self._distillation_loss(student, teacher, range(student.shape[-1]))
        self.last_penalty = penalty.detach().item()
        return penalty

    def post_adapt(self, agent, exp):
        super().post_adapt(agent, exp)
        self.prev_model.eval().requires_grad_(False)  # the teacher: no router loss, no gradients


class SeededBuffer(ExperienceBalancedBuffer):
    """Avalanche's experience-balanced reservoir buffer, each experience's draw seeded."""

    def __init__(self, max_size: int, seed: int) -> None:
        super().__init__(max_size=max_size, adaptive_size=True)
        self.seed = seed

    def post_adapt(self, agent, exp):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + self._num_exps)
            super().post_adapt(agent, exp)

    def sources(self) -> list[Item]:
        """The buffered items (for inspection)."""
        return [self.buffer[i][0] for i in range(len(self.buffer))]


# -- saving plugin state as flat tensors (clbench checkpoints are dict[str, Tensor]) ----------
def params_state(saved: dict[int, dict[str, ParamData]], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{t}.{name}": p.data for t, params in saved.items() for name, p in params.items()}


def load_params_state(state: dict[str, torch.Tensor], prefix: str, device) -> dict[int, dict[str, ParamData]]:
    out: dict[int, dict[str, ParamData]] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            t, name = key[len(prefix):].split(".", 1)
            out.setdefault(int(t), {})[name] = ParamData(name, init_tensor=value.to(device), device=device)
    return out

"""Glue that lets avalanche-lib's templates and plugins train clbench's multimodal LM.

Avalanche is written for image classification: items are (image, class, task),
a model maps an image batch to class logits, the loss is cross-entropy over classes.
What was adapted so that its SupervisedTemplate, EWCPlugin, LwFPlugin and
ReplayPlugin run unchanged on next-token prediction over several modalities:

- Data, collate, model and criterion: cl_bench.interop.avalanche_data (`Collate`,
  `LMModule`, `answer_loss`, ...), shared with `avalanche_benchmark` for avalanche users.
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

import torch

# first: the interop's data module imports avalanche-lib without qpsolvers' 'no QP solver found' warning (qpsolvers
# warns once, as avalanche first imports it), so the imports below print nothing either
from cl_bench.interop.avalanche_data import (Collate, Item, LMModule, LMOutput, MixedBatch, answer_loss,  # noqa: F401
                                              make_dataset, make_experience)
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from avalanche.training.regularization import LearningWithoutForgetting
from avalanche.training.storage_policy import ExperienceBalancedBuffer
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.utils import ParamData


class LMTemplate(SupervisedTemplate):
    """SupervisedTemplate whose optimizer is set by the strategy before each ``train``."""

    def make_optimizer(self, **kwargs):
        pass  # keep the strategy's parameter groups (only parameters that require grad)

    def optimizer_step(self):
        from cl_bench.api.training import optimizer_step

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
    examples seen and a FLOP estimate (cl_bench.api.training.FlopMeter)."""

    def __init__(self, max_grad_norm: float = 1.0) -> None:
        super().__init__()
        self.steps, self.max_grad_norm = 0, max_grad_norm
        self.losses: list[float] = []
        self.seconds = 0.0
        self.examples, self.meter = 0, None

    def before_training_exp(self, strategy, **kwargs):
        from cl_bench.api.training import FlopMeter

        self.losses, self.seconds, self._t0 = [], 0.0, time.perf_counter()
        self.examples, self.meter = 0, FlopMeter()
        if self.steps == 0:
            strategy.stop_training()  # no epoch runs; the after-experience hooks still do

    def before_training_iteration(self, strategy, **kwargs):
        x = strategy.mbatch[0]  # a MixedBatch
        self.examples += len(x)
        self.meter.start_step(int(sum(p.attention.sum() for p in x.parts)))

    def before_backward(self, strategy, **kwargs):
        from cl_bench.api.training import Diverged

        value = strategy.loss.item()
        if not math.isfinite(value):
            raise Diverged("avalanche training", len(self.losses) + 1, self.steps, f"loss {value}")

    def before_update(self, strategy, **kwargs):
        from cl_bench.api.training import Diverged

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

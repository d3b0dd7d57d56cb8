"""Evaluation: every task's accuracy, its items' correctness, the probes and the routing, in the model each
task is answered by. The evaluation data are the runner's alone: a strategy never receives them."""

from __future__ import annotations

import torch

from cl_bench.analysis import scoring as scorer
from cl_bench.api.training import TaskData, generate, item_correct, longest_answer
from cl_bench.models import routing
from cl_bench.results import pack_items
from cl_bench.streams.experience import column


class Evaluator:
    """Scores a strategy's models on the stream's evaluation split (test, or val for tuning runs).

    Args:
        stream: the TaskStream (its tasks in column order).
        model: the MultimodalLM the strategy extends (it featurizes the splits once).
        strategy: the Strategy (`model_for(task)` answers each task).
        device: where evaluation runs.
        batch_size: examples per evaluation batch.
        split: "test" (results, with probes) or "val" (hyperparameter selection, no probes).
        limit: only the first `limit` items of each split and probe (None: every item).
        scoring: "teacher-forced" (exact match of the answer tokens given the gold prefix) or "generated" (greedy
            decoding, scored by cl_bench.analysis.scoring).
        max_new_tokens: generated scoring's bound on the tokens decoded per answer (None: each split's longest
            reference answer).
    """

    def __init__(self, stream, model, strategy, device, batch_size: int, split: str = "test",
                 limit: int | None = None, scoring: str = "teacher-forced", max_new_tokens: int | None = None) -> None:
        if scoring not in ("teacher-forced", "generated"):
            raise ValueError(f"scoring must be teacher-forced or generated, got {scoring!r}")
        self.stream, self.model, self.strategy = stream, model, strategy
        self.device, self.batch_size, self.split, self.limit = device, batch_size, split, limit
        self.scoring, self.max_new_tokens = scoring, max_new_tokens
        self.tasks: list = []  # (task, TaskData) of the evaluation split, built by prepare()
        self.references: list[list[str]] = []  # each task's reference answers, in item order (prepare())
        # generated scoring: the decoded answers of the last evaluate(), per task in item order; None otherwise
        self.predictions: list[list[str]] | None = None
        self.probes: dict = {}
        self._val: list = []
        self.checkpoints: dict[str, dict[str, float]] = {}  # this stage's Strategy.checkpoint records

    def prepare(self) -> None:
        """Tokenize and featurize the evaluation splits (the runner calls it once the strategy is set up)."""
        self.tasks, self.references = [], []
        for t in self.stream.tasks:
            data, answers = self._data(getattr(t, self.split), t.modality)
            self.tasks.append((t, data))
            self.references.append(answers)
        self.probes = {f"{t.name}/{name}": (t, *self._data(s, t.modality))
                       for t in self.stream.tasks for name, s in t.probes.items()} if self.split == "test" else {}
        if self.split == "test":  # mixed-modality probes: answered through model_for(probe.info), never learned
            self.probes.update({f"mixed/{p.name}": (p, *self._data(p.test, p.modality)) for p in self.stream.mixed})

    def limited(self, split):
        return split if self.limit is None else split.select(range(min(len(split), self.limit)))

    def _data(self, split, modality: str) -> tuple[TaskData, list[str]]:
        """`split` (limited) as a TaskData, and its reference answers in item order."""
        split = self.limited(split)
        return TaskData(split, self.model, modality), column(split, "answer")

    def _correct(self, model, data: TaskData, answers: list[str]) -> tuple[torch.Tensor, list[str] | None]:
        """Whether each item of `data` is answered correctly (bool (N,), on the CPU) by the run's scoring, and the
        decoded answers (generated scoring; None when teacher-forced)."""
        if self.scoring == "teacher-forced":
            return item_correct(model, data, self.device, self.batch_size), None
        decoded = generate(model, data, self.device, self.batch_size, self.max_new_tokens)
        return torch.tensor([scorer.score(p, r) for p, r in zip(decoded, answers)], dtype=torch.bool), decoded

    def evaluate(self) -> tuple[list[float], list[str], dict[str, float], dict | None]:
        """Accuracy of every task, its items' correctness (packed), the probes' accuracies and, for an MoE
        model, the share of each task's tokens routed to each expert of each layer (cl_bench.models.routing).
        Generated scoring leaves each task's decoded answers in `self.predictions`."""
        items, shares, layout, decoded = [], {}, None, []
        for (t, d), answers in zip(self.tasks, self.references):
            m = self.strategy.model_for(t.info)
            # generated scoring: the shares count the tokens of every decoding step's forward, the prompt's at each
            # step (with one-token answers: each prompt token once)
            with routing.RoutingRecorder(m.lm) as rec:
                correct, predicted = self._correct(m, d, answers)
            items.append(correct)
            decoded.append(predicted)
            if rec.layers:
                shares[t.name] = [[round(x, 6) for x in layer] for layer in rec.shares()]
                layout = layout or routing.record(m.lm)  # layers and who added each expert: one model's
        routed = None if layout is None else {**layout, "shares": shares}
        self.predictions = None if self.scoring == "teacher-forced" else decoded
        row = [int(c.sum()) / len(c) for c in items]
        extra = {k: self._accuracy(t, d, a) for k, (t, d, a) in self.probes.items()}
        return row, [pack_items(c.numpy()) for c in items], extra, routed

    def checkpoint(self, label: str) -> None:
        """Strategy.checkpoint: every task's validation accuracy now, recorded under `label` for this stage."""
        if label in self.checkpoints:
            raise ValueError(f"checkpoint {label!r} was recorded twice in one stage; give each its own label")
        if not self._val:  # built on first use
            self._val = [(t, *self._data(t.val, t.modality)) for t in self.stream.tasks]
        self.checkpoints[label] = {t.name: round(self._accuracy(t, d, a), 6) for t, d, a in self._val}

    def take_checkpoints(self) -> dict[str, dict[str, float]]:
        """This stage's checkpoint records, cleared for the next stage."""
        out, self.checkpoints = self.checkpoints, {}
        return out

    def _accuracy(self, task, data: TaskData, answers: list[str]) -> float:
        """Accuracy of the model answering `task` on `data` (a probe, a validation split), by the run's scoring."""
        correct, _ = self._correct(self.strategy.model_for(task.info), data, answers)
        return int(correct.sum()) / len(data)

    def record(self) -> dict:
        """How answers were scored, for the result file: the method, and for generated answers the scorer, its
        version and the bound on the tokens decoded per task."""
        if self.scoring == "teacher-forced":
            return {"method": "teacher-forced"}
        bounds = {t.name: self.max_new_tokens or longest_answer(d) for t, d in self.tasks}
        return {"method": "generated", "decoding": "greedy", "scorer": scorer.SCORER,
                "scorer_version": scorer.SCORER_VERSION, "max_new_tokens": bounds}

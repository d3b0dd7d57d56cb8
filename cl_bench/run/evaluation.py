"""Evaluation: every task's accuracy, its items' correctness, the probes and the routing, in the model each
task is answered by. The evaluation data are the runner's alone: a strategy never receives them."""

from __future__ import annotations

from cl_bench.api.training import TaskData, accuracy, item_correct
from cl_bench.models import routing
from cl_bench.results import pack_items


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
    """

    def __init__(self, stream, model, strategy, device, batch_size: int, split: str = "test",
                 limit: int | None = None) -> None:
        self.stream, self.model, self.strategy = stream, model, strategy
        self.device, self.batch_size, self.split, self.limit = device, batch_size, split, limit
        self.tasks: list = []  # (task, TaskData) of the evaluation split, built by prepare()
        self.probes: dict = {}
        self._val: list = []
        self.checkpoints: dict[str, dict[str, float]] = {}  # this stage's Strategy.checkpoint records

    def prepare(self) -> None:
        """Tokenize and featurize the evaluation splits (the runner calls it once the strategy is set up)."""
        model = self.model
        self.tasks = [(t, TaskData(self.limited(getattr(t, self.split)), model, t.modality))
                      for t in self.stream.tasks]
        self.probes = {f"{t.name}/{name}": (t, TaskData(self.limited(s), model, t.modality))
                       for t in self.stream.tasks for name, s in t.probes.items()} if self.split == "test" else {}

    def limited(self, split):
        return split if self.limit is None else split.select(range(min(len(split), self.limit)))

    def evaluate(self) -> tuple[list[float], list[str], dict[str, float], dict | None]:
        """Accuracy of every task, its items' correctness (packed), the probes' accuracies and, for an MoE
        model, the share of each task's tokens routed to each expert of each layer (cl_bench.models.routing)."""
        items, shares, layout = [], {}, None
        for t, d in self.tasks:
            m = self.strategy.model_for(t.info)
            with routing.RoutingRecorder(m.lm) as rec:
                items.append(item_correct(m, d, self.device, self.batch_size))
            if rec.layers:
                shares[t.name] = [[round(x, 6) for x in layer] for layer in rec.shares()]
                layout = layout or routing.record(m.lm)  # layers and who added each expert: one model's
        routed = None if layout is None else {**layout, "shares": shares}
        row = [int(c.sum()) / len(c) for c in items]
        extra = {k: self._accuracy(t, d) for k, (t, d) in self.probes.items()}
        return row, [pack_items(c.numpy()) for c in items], extra, routed

    def checkpoint(self, label: str) -> None:
        """Strategy.checkpoint: every task's validation accuracy now, recorded under `label` for this stage."""
        if label in self.checkpoints:
            raise ValueError(f"checkpoint {label!r} was recorded twice in one stage; give each its own label")
        if not self._val:  # built on first use
            self._val = [(t, TaskData(self.limited(t.val), self.model, t.modality)) for t in self.stream.tasks]
        self.checkpoints[label] = {t.name: round(self._accuracy(t, d), 6) for t, d in self._val}

    def take_checkpoints(self) -> dict[str, dict[str, float]]:
        """This stage's checkpoint records, cleared for the next stage."""
        out, self.checkpoints = self.checkpoints, {}
        return out

    def _accuracy(self, task, data) -> float:
        return accuracy(self.strategy.model_for(task.info), data, self.device, self.batch_size)

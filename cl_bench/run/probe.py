"""What a strategy trains on, measured by the runner around each stage instead of reported by the strategy.

Every batch a TaskData builds is seen (cl_bench.api.training.batch_watchers), whichever loop asks for it: clbench's
`train`, avalanche's template (its collate builds TaskData batches), a strategy's own. The rows of the batches built
with gradients on and the strategy's model in training mode are trained on when an optimizer next steps (torch's
global step hook); a batch no step follows (a Fisher pass in eval mode, the batch a data loader fetches before it
stops) is not. Given the stream's item identities, every row is also named by the task and split it comes from, by
content (prompt, answer, input), whichever Dataset object holds it: so a strategy that reloads the stream and trains
on its test split, or on earlier tasks' items, is seen doing so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import weakref
from collections import Counter
from collections.abc import Callable

import numpy as np

SPLITS = ("train", "val", "test")
UNKNOWN = "?"  # a row whose item is in no split of the stream (made up by the strategy)


def _input_bytes(x) -> bytes:
    """An input's content as bytes: numbers as float64 (a Dataset gives int16 audio and float32 images as Python
    numbers or numpy arrays, by its format), anything else by its repr."""
    if x is None:
        return b""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return json.dumps(x, sort_keys=True, default=repr).encode()
    return str(a.shape).encode() + a.tobytes()


def item_keys(split) -> list[str]:
    """One identity per row of `split` (a datasets.Dataset, or a dict of columns): a hash of its prompt, its answer
    and its input (none for text). The same item has the same key in any split or copy."""
    columns = getattr(split, "column_names", None) or list(split)
    if hasattr(split, "with_format"):
        rows = (r for b in split.with_format("numpy").iter(batch_size=256) for r in _rows(b))
    else:
        rows = _rows(split)
    out = []
    for prompt, answer, x in rows:
        h = hashlib.blake2b(json.dumps([str(prompt), str(answer)]).encode(), digest_size=12)
        if "input" in columns:
            h.update(_input_bytes(x))
        out.append(h.hexdigest())
    return out


def _rows(columns):
    """(prompt, answer, input) of each row of a dict of columns."""
    inputs = columns["input"] if "input" in columns else [None] * len(columns["prompt"])
    return zip(columns["prompt"], columns["answer"], inputs)


def item_index(stream) -> dict[str, set[str]]:
    """Item key -> the "task/split" names that hold it, over every split of every task of `stream`."""
    index: dict[str, set[str]] = {}
    for t in stream.tasks:
        for s in SPLITS:
            for k in item_keys(getattr(t, s)):
                index.setdefault(k, set()).add(f"{t.name}/{s}")
    return index


def test_overlap(stream, index: dict[str, set[str]] | None = None) -> list[str]:
    """One line per split a strategy sees (train and val of every task) that shares items with a test split: a
    stream whose test items can be trained on measures memory, not learning."""
    index = item_index(stream) if index is None else index
    shared: Counter = Counter()
    for origins in index.values():
        tests = sorted(o for o in origins if o.endswith("/test"))
        for seen in sorted(o for o in origins if not o.endswith("/test")):
            for t in tests:
                shared[(seen, t)] += 1
    return [f"the stream's test split {t} shares {n} items (same prompt, answer and input) with the {seen} split, "
            "which strategies see: test items must never be trainable" for (seen, t), n in sorted(shared.items())]


class Probe:
    """Counts what a strategy trains on during a stage (`watching`), and with `index` (item_index) where it comes
    from. `training()` says whether the strategy's model is in training mode."""

    def __init__(self, training: Callable[[], bool], index: dict[str, set[str]] | None = None) -> None:
        self.training, self.index = training, index
        self._origins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # TaskData -> each row's origin
        self._pending: list[tuple[object, list[int]]] = []  # batches built since the last optimizer step
        self._paused = 0
        self._reset()

    def _reset(self) -> None:
        self.steps, self.examples = 0, 0
        self.trained: Counter = Counter()  # "task/split" -> rows trained on (with repeats)
        self.read: Counter = Counter()  # "task/split" -> rows batched in any mode (evaluations included)
        self._pending = []

    def origin(self, data, i: int) -> str:
        """The "task/split" the row `i` of TaskData `data` comes from (a split strategies see where a leaky stream's
        test split holds it too: test_overlap reports that; UNKNOWN where no split holds it)."""
        rows = self._origins.get(data)
        if rows is None:
            rows = self._origins[data] = [self._name(k) for k in item_keys(data.split)]
        return rows[i]

    def _name(self, key: str) -> str:
        where = sorted(self.index.get(key, ()), key=lambda o: (o.endswith("/test"), o))
        return where[0] if where else UNKNOWN

    def batched(self, data, index: list[int]) -> None:
        import torch

        if self._paused:
            return
        if self.index is not None:
            self.read.update(self.origin(data, i) for i in index)
        if torch.is_grad_enabled() and self.training():
            self._pending.append((data, index))

    def stepped(self, optimizer, args, kwargs) -> None:
        """An optimizer stepped: the rows batched for training since the last step were trained on."""
        if self._paused or not self._pending:
            return
        self.steps += 1
        for data, index in self._pending:
            self.examples += len(index)
            if self.index is not None:
                self.trained.update(self.origin(data, i) for i in index)
        self._pending = []

    @contextlib.contextmanager
    def watching(self):
        """Measure from here to the end of the block (one stage's learning); counts start at zero."""
        from torch.optim.optimizer import register_optimizer_step_post_hook

        from cl_bench.api.training import batch_watchers

        self._reset()
        batch_watchers.append(self.batched)
        handle = register_optimizer_step_post_hook(self.stepped)
        try:
            yield self
        finally:
            handle.remove()
            batch_watchers.remove(self.batched)
            self._pending = []  # batched but never stepped on: not trained on

    @contextlib.contextmanager
    def paused(self):
        """Not measured: the runner's own evaluation inside a stage (Strategy.checkpoint)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def record(self) -> dict:
        """The stage's measurement for its training record: steps and examples, and with an index the rows trained
        on and read by origin."""
        out = {"steps": self.steps, "examples": self.examples}
        if self.index is not None:
            out.update(trained=dict(sorted(self.trained.items())), read=dict(sorted(self.read.items())))
        return out

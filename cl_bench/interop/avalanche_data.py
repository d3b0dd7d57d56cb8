"""avalanche-lib's view of clbench's data and model: datasets, collate, module and criterion.

Avalanche is written for image classification: items are (image, class, task), a model maps an
image batch to class logits, the loss is cross-entropy over classes. What is adapted here, so that
avalanche's templates and plugins run on next-token prediction over several modalities (used by
the built-in EWC/LwF/replay strategies and by `avalanche_benchmark` for avalanche users):

- Data: a split is a task-aware supervised AvalancheDataset of (Item(source, index), target)
  pairs, with the attributes ``targets`` (the answer's index in the task's answer set) and
  ``targets_task_labels`` (the task's column in the accuracy matrix). Tokens and encoder features
  stay in clbench's TaskData, one per source task, held by `Collate`.
- Collate: `Collate` turns items of one or several tasks (replay mixes modalities) into
  [MixedBatch, labels, task labels]; a MixedBatch holds one clbench Batch per source and has
  ``.to(device, non_blocking)``. Experiences are wrapped ``with_task_labels``, without which
  avalanche's train loader ignores the collate.
- Model: `LMModule` wraps MultimodalLM; forward(MixedBatch) runs the LM once per source and
  returns `LMOutput`: next-token logits padded to (B, L, V) in the collated row order, and in
  training mode the MoE router loss.
- Criterion: `answer_loss`, cross-entropy over every answer token of the batch (what
  MultimodalLM computes for a one-modality batch) plus the router loss.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():  # often the first import of avalanche-lib in a process (a sweep's, an avalanche user's)
    # avalanche imports qpsolvers for GEM, which clbench does not use; qpsolvers warns when no QP solver is installed
    warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)
    from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    from avalanche.benchmarks.utils import DataAttribute, TaskAwareSupervisedClassificationDataset

from cl_bench.api.training import TaskData
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

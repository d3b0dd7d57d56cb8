"""A stream: clbench's number questions in text, then the same questions about a tally of k marks."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cl_bench import (Stream, TaskStream, build_text, cached_splits, default_cache_dir, number_experience,
                      number_questions, stable_hash)

from clbench_tally.modality import CELLS


@dataclass(frozen=True)
class TallyConfig:
    """Sizes of the built data."""

    train_inputs: int = field(default=600, metadata={"help": "tallies in training"})
    seed: int = field(default=0, metadata={"help": "seed of the data build"})


def build_tallies(config: TallyConfig) -> dict:
    from datasets import Dataset

    out = {}
    for k, (split, n) in enumerate((("train", config.train_inputs), ("val", 100), ("test", 200))):
        rng = np.random.default_rng([config.seed, k])
        values = [int(v) for v in rng.integers(0, 10, n)]
        inputs = []
        for v in values:
            # paper grain under the marks and marks of uneven ink make every row its own: a test item must never
            # equal one a strategy trains on (clbench validate checks it), and 32 cells of 0/1 repeat too often
            row = rng.uniform(0.0, 0.2, CELLS).astype(np.float32)
            row[rng.choice(CELLS, v, replace=False)] = rng.uniform(0.6, 1.0, v)
            inputs.append(row)
        rows = number_questions(values, seed=100 * config.seed + k)  # (input index, template, prompt, answer)
        out[split] = Dataset.from_dict({"input": [inputs[i] for i, *_ in rows], "template": [t for _, t, _, _ in rows],
                                        "prompt": [p for *_, p, _ in rows], "answer": [a for *_, a in rows]})
    return out


class TallyNumbers(Stream):
    """Number questions in text, then about tally marks (a plug-in's stream)."""

    name = "tally-numbers"
    tasks = {"tally": "tally"}
    Config = TallyConfig

    def build(self, cache_dir: Path | None = None, progress: bool = True) -> TaskStream:
        root = Path(cache_dir or default_cache_dir()) / "data" / "tally"
        key = stable_hash(self.config.__dict__)
        text = cached_splits(root / "text", build_text)
        tally = cached_splits(root / f"tally-{key}", lambda: build_tallies(self.config))
        # Questions of another kind (a table of classes, say) make their task with cl_bench.task_experience, and
        # cl_bench.stream_tasks("vision-audio") gives a registered stream's tasks to reuse.
        return TaskStream(self.name, number_experience("text", "text", "number-questions", text),
                          (number_experience("tally", "tally", "tally-questions", tally),))

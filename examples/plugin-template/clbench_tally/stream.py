"""A stream: clbench's number questions in text, then the same questions about a tally of k marks."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cl_bench import Experience, Stream, TaskStream, build_text
from cl_bench.streams.data import cached_splits, default_cache_dir, stable_hash
from cl_bench.streams import numbers

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
            row = np.zeros(CELLS, np.float32)
            row[rng.choice(CELLS, v, replace=False)] = 1.0
            inputs.append(row)
        rows = numbers.modality_questions(values, seed=100 * config.seed + k)
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

        def exp(name, modality, task, d):
            templates = {t: numbers.template_text(t) for t in sorted(set(d["train"]["template"]))}
            return Experience(name=name, modality=modality, task=task, train=d["train"], val=d["val"], test=d["test"],
                              prompt_templates=templates, answer_set=numbers.ANSWERS,
                              chance=numbers.chance_level(d["test"]["template"]))

        return TaskStream(self.name, exp("text", "text", "number-questions", text),
                          (exp("tally", "tally", "tally-questions", tally),))

"""Task builders: the base text task and number-question tasks, for built-in streams, stream files and plug-ins."""

from __future__ import annotations

from cl_bench.streams import numbers
from cl_bench.streams.experience import Experience


def build_text() -> dict:
    from datasets import Dataset

    return {k: Dataset.from_list(v) for k, v in numbers.split_text().items()}


def number_experience(name: str, modality: str, task: str, d, probes: dict | None = None) -> Experience:
    """A task of number questions from its splits `d` ({train, val, test}): the answers 0-18, chance by
    question form, the canonical wording of each template."""
    templates = {t: numbers.template_text(t) for t in sorted(set(d["train"]["template"]))}
    return Experience(name=name, modality=modality, task=task, train=d["train"], val=d["val"], test=d["test"],
                      prompt_templates=templates, answer_set=numbers.ANSWERS,
                      chance=numbers.chance_level(d["test"]["template"]), probes=probes or {})

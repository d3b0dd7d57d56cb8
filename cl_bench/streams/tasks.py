"""Task builders: the base text task and number-question tasks, for built-in streams, stream files and plug-ins.

Public (``from cl_bench import ...``): `build_text`, `number_questions`, `number_experience`, `task_experience`
and `chance_level`; a plug-in builds its tasks with these rather than with clbench's internal modules.
`label_questions` and `balanced_labels` build questions whose answer is a class word of the input itself.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from cl_bench.streams import numbers
from cl_bench.streams.experience import Experience, column


def build_text() -> dict:
    """The base text task's splits, {"train", "val", "test"} -> datasets.Dataset (columns prompt, answer, template):
    number questions in words, the task whose retention every number stream measures. Cache it with
    `cached_splits`; `number_experience("text", "text", "number-questions", splits)` makes it the stream's base."""
    from datasets import Dataset

    return {k: Dataset.from_list(v) for k, v in numbers.split_text().items()}


def number_questions(values: list[int], seed: int, per_input: int = 1) -> list[tuple[int, str, str, str]]:
    """Number questions about inputs that each stand for a number: for each input (by index) with true value
    0-9 in `values`, `per_input` rows (index, template, prompt, answer), the question form drawn by `seed`.

    Args:
        values: the number each input stands for (0-9).
        seed: seed of the draw of question forms and operands.
        per_input: questions asked about each input.

    The prompt holds INPUT_MARKER where the input's tokens go ("the number is <input> . what is the number plus
    two ?"); the template is the question form ("read", "add", "sub", "next", "prev").
    """
    return numbers.modality_questions(values, seed, per_input)


def label_questions(labels: Sequence[str], wordings: Mapping[str, str], seed: int,
                    per_input: int = 1) -> list[tuple[int, str, str, str]]:
    """Questions whose answer is a label of the input itself (a class word: "left", "bold"): for each input (by
    index), `per_input` rows (index, template, prompt, answer), the question's wording drawn by `seed`.

    Args:
        labels: each input's answer, one word of the task's answer set.
        wordings: template id -> prompt, each holding INPUT_MARKER once ("the clip is <input> . which way does
            the digit move ?"); every wording asks the same question, so they share one answer set.
        seed: seed of the draw of wordings.
        per_input: questions asked about each input.
    """
    if not wordings:
        raise ValueError("label_questions: no wordings given")
    rng = random.Random(seed)
    forms = sorted(wordings)
    return [(i, form, wordings[form], str(label)) for i, label in enumerate(labels) for form in
            (rng.choice(forms) for _ in range(per_input))]


def balanced_labels(classes: Sequence[str], n: int, rng) -> list[str]:
    """`n` labels, each class as often as `n` allows (counts differ by at most one), in an order drawn by `rng`
    (a numpy Generator)."""
    return [classes[k] for k in rng.permutation(n) % len(classes)]


def chance_level(splits: Mapping) -> float:
    """The accuracy of guessing, from a task's own answers: the mean over test items of 1 / (the number of
    distinct answers the item's question form has in the task's splits).

    Args:
        splits: {"train", "val", "test"} -> a datasets.Dataset or a dict of lists with an "answer" column and
            optionally a "template" column (the question form; without it, every item is one form).

    This is a uniform guess among the answers a question can have: 1/3 for a three-class table, and for number
    questions about values 0-2 asked in clbench's mix of forms about 0.27 (reading has 3 answers, adding 12).
    It is the chance of Experience.chance and the floor of the transfer matrix (docs: metrics).
    """
    def forms(split) -> list:
        return column(split, "template") if "template" in _columns(split) else [None] * len(split["answer"])

    answers: dict = {}
    for split in splits.values():
        for form, answer in zip(forms(split), column(split, "answer")):
            answers.setdefault(form, set()).add(answer)
    test = forms(splits["test"])
    if not test:
        raise ValueError("chance_level: the test split is empty")
    # summed in item order, as clbench <= 0.4 did: the same float for the built-in streams
    return sum(1.0 / len(answers[f]) for f in test) / len(test)


def _columns(split) -> list[str]:
    return list(getattr(split, "column_names", None) or split.keys())


def number_experience(name: str, modality: str, task: str, d, probes: dict | None = None) -> Experience:
    """A task of number questions (`build_text`, `number_questions`): the answers 0-18, the canonical wording of
    each question form, chance from the task's own answers (`chance_level`).

    Args:
        name: the task's name ("text" for the base task).
        modality: "text" or a registered modality.
        task: what is asked, e.g. "digit-questions".
        d: its splits, {"train", "val", "test"} -> datasets.Dataset (prompt, answer, template and, beyond text,
            input).
        probes: extra evaluation sets, name -> Dataset.
    """
    templates = {t: numbers.template_text(t) for t in sorted(set(column(d["train"], "template")))}
    return Experience(name=name, modality=modality, task=task, train=d["train"], val=d["val"], test=d["test"],
                      prompt_templates=templates, answer_set=numbers.ANSWERS, chance=chance_level(d),
                      probes=probes or {})


def task_experience(name: str, modality: str, task: str, d, prompt_templates: Mapping[str, str] | None = None,
                    probes: dict | None = None) -> Experience:
    """A task of any questions and answers (a table of classes, say): its answer set and chance from its data.

    Args:
        name: the task's name.
        modality: "text" or a registered modality.
        task: what is asked.
        d: its splits, {"train", "val", "test"} -> datasets.Dataset with columns prompt, answer, template and,
            beyond text, input.
        prompt_templates: question form -> its wording, for the result file; by default each form's first
            training prompt.
        probes: extra evaluation sets, name -> Dataset.
    """
    if prompt_templates is None:
        prompt_templates = {}
        for form, prompt in zip(column(d["train"], "template"), column(d["train"], "prompt")):
            prompt_templates.setdefault(form, prompt)
    answers = sorted({a for split in d.values() for a in column(split, "answer")})
    return Experience(name=name, modality=modality, task=task, train=d["train"], val=d["val"], test=d["test"],
                      prompt_templates=dict(prompt_templates), answer_set=tuple(answers), chance=chance_level(d),
                      probes=probes or {})

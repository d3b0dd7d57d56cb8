"""Questions about numbers in words: the base text task and the question forms that
images and audio reuse.

The text task holds each arithmetic fact in two forms, plain ("what is seven plus two ?")
and in context ("the number is seven . what is the number plus two ?"). Held-out text
items are context-form facts whose plain form is in training, so the base model must
compose what it knows. In the image and audio tasks the modality input takes the place
of the number word ("the number is <input> ."), so answering "what is the number plus two ?" about an image
needs the knowledge that forgetting destroys.
"""

from __future__ import annotations

import random

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ANSWERS = tuple(str(v) for v in range(19))  # 0 .. 9 + 9

# template id -> (question about "the number", plain question, answer function, validity check)
QUESTIONS = {
    "read": ("what is the number ?", "what is {a} ?", lambda a, b: a, lambda a, b: True),
    "add": ("what is the number plus {b} ?", "what is {a} plus {b} ?", lambda a, b: a + b, lambda a, b: True),
    "sub": ("what is the number minus {b} ?", "what is {a} minus {b} ?", lambda a, b: a - b, lambda a, b: b <= a),
    "next": ("what comes after the number ?", "what comes after {a} ?", lambda a, b: a + 1, lambda a, b: True),
    "prev": ("what comes before the number ?", "what comes before {a} ?", lambda a, b: a - 1, lambda a, b: a >= 1),
}
USES_B = {"add", "sub"}
CONTEXT = "the number is {a} ."
INPUT_PREFIX = "the number is <input> ."  # modality prompts: the input takes the place of the number word

# How often each question form is asked about an image or a clip.
MODALITY_MIX = {"read": 0.4, "add": 0.3, "sub": 0.1, "next": 0.1, "prev": 0.1}


def question(kind: str, a: int, b: int = 0) -> tuple[str, str]:
    """(question about "the number", answer) for value a and operand b."""
    about, _, answer, ok = QUESTIONS[kind]
    if not ok(a, b):
        raise ValueError(f"question {kind!r} is not defined for a={a}, b={b}")
    return about.format(b=WORDS[b]), str(answer(a, b))


def text_items() -> list[dict]:
    """Every text item: plain and context form of every fact. Deterministic order."""
    items = []
    for kind, (about, plain, answer, ok) in QUESTIONS.items():
        for a in range(10):
            for b in (range(10) if kind in USES_B else [0]):
                if not ok(a, b):
                    continue
                ans = str(answer(a, b))
                fact = f"{kind}:{a}:{b}"
                items.append({"prompt": plain.format(a=WORDS[a], b=WORDS[b]), "answer": ans,
                              "template": f"plain-{kind}", "fact": fact})
                items.append({"prompt": f"{CONTEXT.format(a=WORDS[a])} {about.format(b=WORDS[b])}", "answer": ans,
                              "template": f"context-{kind}", "fact": fact})
    return items


def split_text(n_test: int = 48, n_val: int = 24, seed: int = 0) -> dict[str, list[dict]]:
    """Train / val / test text items; val and test are held-out context-form arithmetic facts."""
    items = text_items()
    held = [it for it in items if it["template"].startswith("context-") and it["template"] != "context-read"]
    random.Random(seed).shuffle(held)
    test, val = held[:n_test], held[n_test:n_test + n_val]
    out_ids = {id(it) for it in test + val}
    train = [it for it in items if id(it) not in out_ids]
    return {"train": train, "val": val, "test": test}


def modality_questions(values: list[int], seed: int, per_input: int = 1) -> list[tuple[int, str, str, str]]:
    """For each input (by index) with true value v: `per_input` (index, template, prompt, answer) rows."""
    rng = random.Random(seed)
    kinds, weights = zip(*MODALITY_MIX.items())
    rows = []
    for i, v in enumerate(values):
        for _ in range(per_input):
            while True:
                kind = rng.choices(kinds, weights)[0]
                b = rng.randrange(10) if kind in USES_B else 0
                if QUESTIONS[kind][3](v, b):
                    break
            q, ans = question(kind, v, b)
            rows.append((i, kind, f"{INPUT_PREFIX} {q}", ans))
    return rows


def template_text(template: str) -> str:
    """Human-readable form of a template id ("plain-add", "context-sub", "read", ...)."""
    form, _, kind = template.rpartition("-")
    about, plain, _, _ = QUESTIONS[kind]
    if form == "plain":
        return plain
    if form == "context":
        return f"{CONTEXT} {about}"
    return f"{INPUT_PREFIX} {about}"


def chance_level(templates: list[str]) -> float:
    """Mean over items of 1 / (number of answers its question form can have)."""
    n_answers = {}
    for kind, (_, _, answer, ok) in QUESTIONS.items():
        n_answers[kind] = len({answer(a, b) for a in range(10) for b in range(10) if ok(a, b)})
    kinds = [t.split("-")[-1] for t in templates]
    return sum(1.0 / n_answers[k] for k in kinds) / len(kinds)

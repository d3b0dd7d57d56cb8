"""Questions about numbers in words: the base text task and the question forms that
images and audio reuse.

The text task holds each arithmetic fact in two forms, plain ("what is seven plus two ?")
and in context ("the number is seven . what is the number plus two ?"), each in several
wordings: every question kind has WORDINGS ways of asking (wording 0 is the one the image
and audio prompts use), and a context item starts with one of LEADS ("the number is seven .",
"my number is seven .", ...). Every plain item is in training. Held-out text items are
context-form items of (fact, wording) cells whose context form is never trained, while the
same fact in the same wording is trained in plain form and the same lead and wording are
trained with other facts; so the base model must compose what it knows. In the image and
audio tasks the modality input takes the place of the number word ("the number is <input> ."),
so answering "what is the number plus two ?" about an image needs the knowledge that
forgetting destroys.
"""

from __future__ import annotations

import random

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ANSWERS = tuple(str(v) for v in range(19))  # 0 .. 9 + 9

# kind -> (answer function, validity check)
KINDS = {
    "read": (lambda a, b: a, lambda a, b: True),
    "add": (lambda a, b: a + b, lambda a, b: True),
    "sub": (lambda a, b: a - b, lambda a, b: b <= a),
    "next": (lambda a, b: a + 1, lambda a, b: True),
    "prev": (lambda a, b: a - 1, lambda a, b: a >= 1),
}
# kind -> wordings of the question, each as (about "the number", plain with {a}); wording 0 is the canonical one.
WORDINGS = {
    "read": (("what is the number ?", "what is {a} ?"),
             ("say the number .", "say {a} ."),
             ("name the number .", "name {a} ."),
             ("what is the value of the number ?", "what is the value of {a} ?")),
    "add": (("what is the number plus {b} ?", "what is {a} plus {b} ?"),
            ("what is {b} more than the number ?", "what is {b} more than {a} ?"),
            ("what is the sum of the number and {b} ?", "what is the sum of {a} and {b} ?"),
            ("add {b} to the number . what do you get ?", "add {b} to {a} . what do you get ?")),
    "sub": (("what is the number minus {b} ?", "what is {a} minus {b} ?"),
            ("what is {b} less than the number ?", "what is {b} less than {a} ?"),
            ("what is the number take away {b} ?", "what is {a} take away {b} ?"),
            ("subtract {b} from the number . what do you get ?", "subtract {b} from {a} . what do you get ?")),
    "next": (("what comes after the number ?", "what comes after {a} ?"),
             ("what number follows the number ?", "what number follows {a} ?"),
             ("which number comes after the number ?", "which number comes after {a} ?"),
             ("what is the next number after the number ?", "what is the next number after {a} ?")),
    "prev": (("what comes before the number ?", "what comes before {a} ?"),
             ("what number precedes the number ?", "what number precedes {a} ?"),
             ("which number comes before the number ?", "which number comes before {a} ?"),
             ("what is the number just before the number ?", "what is the number just before {a} ?")),
}
USES_B = {"add", "sub"}
# Context lead-ins; lead 0 is the canonical one, which the modality prompts use.
LEADS = ("the number is {a} .", "my number is {a} .", "take the number {a} .", "let the number be {a} .")
CONTEXT = LEADS[0]
INPUT_PREFIX = "the number is <input> ."  # modality prompts: the input takes the place of the number word
HELD_OUT = ("add", "sub", "next", "prev")  # kinds whose context cells are held out ("read" is only copying)
TEST_FRACTION, VAL_FRACTION = 0.36, 0.11  # of each kind's (fact, wording) cells, per wording

# How often each question form is asked about an image or a clip.
MODALITY_MIX = {"read": 0.4, "add": 0.3, "sub": 0.1, "next": 0.1, "prev": 0.1}


def question(kind: str, a: int, b: int = 0) -> tuple[str, str]:
    """(question about "the number", answer) for value a and operand b, in the canonical wording."""
    answer, ok = KINDS[kind]
    if not ok(a, b):
        raise ValueError(f"question {kind!r} is not defined for a={a}, b={b}")
    return WORDINGS[kind][0][0].format(b=WORDS[b]), str(answer(a, b))


def facts() -> list[tuple[str, int, int]]:
    """Every (kind, a, b) fact, b = 0 for kinds without an operand. Deterministic order."""
    return [(kind, a, b) for kind, (_, ok) in KINDS.items() for a in range(10)
            for b in (range(10) if kind in USES_B else [0]) if ok(a, b)]


def text_items() -> list[dict]:
    """Every text item: each fact in every wording, plain and after every lead. Deterministic order.

    Columns: prompt, answer, template ("plain-add" / "context-add"), fact ("add:7:2"), wording (index
    into WORDINGS[kind]) and lead (index into LEADS, -1 for plain items).
    """
    items = []
    for kind, a, b in facts():
        ans, fact = str(KINDS[kind][0](a, b)), f"{kind}:{a}:{b}"
        for w, (about, plain) in enumerate(WORDINGS[kind]):
            items.append({"prompt": plain.format(a=WORDS[a], b=WORDS[b]), "answer": ans, "template": f"plain-{kind}",
                          "fact": fact, "wording": w, "lead": -1})
            for lead_id, lead in enumerate(LEADS):
                items.append({"prompt": f"{lead.format(a=WORDS[a])} {about.format(b=WORDS[b])}", "answer": ans,
                              "template": f"context-{kind}", "fact": fact, "wording": w, "lead": lead_id})
    return items


def split_text(seed: int = 0) -> dict[str, list[dict]]:
    """Train / val / test text items.

    For each held-out kind and wording, a random TEST_FRACTION (VAL_FRACTION) of the kind's facts
    is drawn; those (fact, wording) cells go to test (val) in context form, after every lead. All
    plain items and the other context cells are training items.
    """
    rng = random.Random(seed)
    by_kind: dict[str, list[str]] = {}
    for kind, a, b in facts():
        by_kind.setdefault(kind, []).append(f"{kind}:{a}:{b}")
    where: dict[tuple[str, int], str] = {}
    for kind in HELD_OUT:
        n = len(by_kind[kind])
        n_test, n_val = round(TEST_FRACTION * n), round(VAL_FRACTION * n)
        for w in range(len(WORDINGS[kind])):
            cells = list(by_kind[kind])
            rng.shuffle(cells)
            where.update({(f, w): "test" for f in cells[:n_test]})
            where.update({(f, w): "val" for f in cells[n_test:n_test + n_val]})
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for it in text_items():
        split = "train" if it["lead"] < 0 else where.get((it["fact"], it["wording"]), "train")
        out[split].append(it)
    return out


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
                if KINDS[kind][1](v, b):
                    break
            q, ans = question(kind, v, b)
            rows.append((i, kind, f"{INPUT_PREFIX} {q}", ans))
    return rows


def template_text(template: str) -> str:
    """Human-readable form of a template id ("plain-add", "context-sub", "read", ...), canonical wording."""
    form, _, kind = template.rpartition("-")
    about, plain = WORDINGS[kind][0]
    if form == "plain":
        return plain
    if form == "context":
        return f"{CONTEXT} {about}"
    return f"{INPUT_PREFIX} {about}"


def chance_level(templates: list[str]) -> float:
    """Mean over items of 1 / (number of answers its question form can have)."""
    n_answers = {kind: len({answer(a, b) for a in range(10) for b in range(10) if ok(a, b)})
                 for kind, (answer, ok) in KINDS.items()}
    kinds = [t.split("-")[-1] for t in templates]
    return sum(1.0 / n_answers[k] for k in kinds) / len(kinds)

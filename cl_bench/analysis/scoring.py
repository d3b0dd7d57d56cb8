"""The scorer of generated answers: normalise both texts, then exact match (torch-free, versioned).

A run scored on generated answers (RunConfig.scoring = "generated") records SCORER and SCORER_VERSION beside its
decoded strings, so that anyone can score the file again with the same rules (rescore). Any change to what
`normalise` returns for some text is a new SCORER_VERSION: results of two versions are not compared.

The rules, in the order applied (each pinned by tests/test_scoring.py):
  1. Unicode NFKC, then case folding: "Seven" == "seven", full-width digits are digits.
  2. Punctuation becomes a space: . , ; : ! ? ¿ ¡ and every quote, apostrophe, bracket and dash (Unicode
     categories Ps Pe Pi Pf Pd, and the ASCII ones), except where it belongs to a number: a "." or "," between
     two digits (3.5, 1,000) and a "-", "+" or "." that starts a number (-7, +7, .5). Other symbols
     (% / & # $ ...) are content and stay: "50%" != "50".
  3. Whitespace runs collapse to one space; the ends are stripped.
  4. A leading article (a, an, the) is dropped when a word follows it: "the cat" == "cat"; a lone "a" stays
     (a multiple-choice letter).
  5. Numbers take one form: digits with thousands commas lose them (1,000 -> 1000); a signed integer is written
     canonically (007 -> 7, +7 -> 7); cardinal number words from zero to 999 become digits ("seven" -> 7,
     "twenty one" and "twenty-one" -> 21, "three hundred and five" -> 305), each maximal run of them one number.
Deliberately not done: dropping other words ("the number seven" != "7"), ordinals ("seventh"), fractions,
"a hundred", "thousand" and above, "minus seven", decimal equivalence ("7.0" != "7"), stemming, spelling.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

SCORER = "normalised-exact-match"
SCORER_VERSION = 1

_UNIT = {w: i for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                     "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                                     "seventeen", "eighteen", "nineteen"])}
_TENS = {w: 10 * (i + 2) for i, w in enumerate(["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty",
                                                 "ninety"])}
_ARTICLES = frozenset({"a", "an", "the"})
_SENTENCE = set(".,;:!?¿¡…'\"`")  # ASCII punctuation removed besides the categories below
_CATEGORIES = ("Ps", "Pe", "Pi", "Pf", "Pd")  # brackets, quotes, dashes
_INTEGER = re.compile(r"[-+]?\d+")
_GROUPED = re.compile(r"([-+]?)(\d{1,3}(?:,\d{3})+)")


def _removed(text: str, i: int) -> bool:
    """Whether the character text[i] is punctuation that rule 2 turns into a space."""
    c = text[i]
    if c not in _SENTENCE and unicodedata.category(c) not in _CATEGORIES:
        return False
    before = text[i - 1] if i else " "
    after = text[i + 1] if i + 1 < len(text) else " "
    if c in ".," and before.isdigit() and after.isdigit():
        return False  # a decimal point or a thousands separator
    return not (c in "-+." and after.isdigit() and (before.isspace() or i == 0))  # a sign, or ".5"


def _cardinal(words: list[str], i: int) -> tuple[int, int] | None:
    """The number that the number words from words[i] spell, and the index after them; None if none starts there.

    Grammar: [U "hundred" ["and"]] [T [U1-9] | U], with U a unit word (zero-nineteen), T a tens word
    (twenty-ninety); "zero" only on its own, "and" only between the hundreds and what follows them.
    """
    def rest(j: int, allow_zero: bool) -> tuple[int, int] | None:  # T [U1-9] | U
        if j < len(words) and words[j] in _TENS:
            value, j = _TENS[words[j]], j + 1
            if j < len(words) and words[j] in _UNIT and 1 <= _UNIT[words[j]] <= 9:
                value, j = value + _UNIT[words[j]], j + 1
            return value, j
        if j < len(words) and words[j] in _UNIT and (allow_zero or _UNIT[words[j]] > 0):
            return _UNIT[words[j]], j + 1
        return None

    if i + 1 < len(words) and words[i] in _UNIT and 1 <= _UNIT[words[i]] <= 9 and words[i + 1] == "hundred":
        hundreds, j = 100 * _UNIT[words[i]], i + 2
        k = j + 1 if j < len(words) and words[j] == "and" else j
        tail = rest(k, allow_zero=False)
        return (hundreds + tail[0], tail[1]) if tail else (hundreds, j)
    return rest(i, allow_zero=True)


def _numbers(words: list[str]) -> list[str]:
    """Rule 5 over a text's words."""
    out, i = [], 0
    while i < len(words):
        found = _cardinal(words, i)
        if found:
            out.append(str(found[0]))
            i = found[1]
            continue
        w = words[i]
        if grouped := _GROUPED.fullmatch(w):
            w = grouped[1] + grouped[2].replace(",", "")
        out.append(str(int(w)) if _INTEGER.fullmatch(w) else w)
        i += 1
    return out


def normalise(text: str) -> str:
    """`text` in the normal form the scorer compares (rules 1-5 of this module's docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if _removed(text, i) else c for i, c in enumerate(text))
    words = text.split()
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(_numbers(words))


def score(prediction: str, reference: str) -> bool:
    """Whether `prediction` is the `reference` answer: their normal forms are equal."""
    return normalise(prediction) == normalise(reference)


def rescore(predictions: Sequence[Sequence[Sequence[str]]], references: Sequence[Sequence[str]]) -> list[list[float]]:
    """The accuracy matrix that stored decoded answers give: predictions[i][j][k] is item k of task j's answer after
    stage i, references[j][k] that item's reference."""
    matrix = []
    for row in predictions:
        if len(row) != len(references):
            raise ValueError(f"a row of predictions covers {len(row)} tasks, the references {len(references)}")
        cells = []
        for preds, refs in zip(row, references):
            if len(preds) != len(refs) or not refs:
                raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
            cells.append(sum(score(p, r) for p, r in zip(preds, refs)) / len(refs))
        matrix.append(cells)
    return matrix

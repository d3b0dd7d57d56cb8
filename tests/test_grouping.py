"""Letter groups of statistically tied strategies (cl_bench.analysis.grouping) and the leaderboard's Group column.

Hand-built per-seed values, no training. The invariant checked throughout: two strategies share a letter if and
only if their paired t-test over shared seeds, Holm-adjusted over all pairs, is not significant at 0.05.
"""

import csv
import html
import json
import math
import random
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from cl_bench.analysis import grouping, stats
from cl_bench.reporting import formats, leaderboard

FIXTURES = Path(__file__).parent / "fixtures"

A = [0.60, 0.62, 0.58, 0.61, 0.59]
B = [a - 0.05 + e for a, e in zip(A, [0.06, -0.05, 0.04, -0.06, 0.03])]  # noisy, not significantly below A
C = [a - 0.10 + e for a, e in zip(A, [0.004, -0.003, 0.002, -0.004, 0.001])]  # steadily 0.1 below A


def _seeds(values):
    return dict(enumerate(values))


def _share(letters, u, w):
    return bool(set(letters[u]) & set(letters[w]))


def _maximal_cliques(names, differ):
    """Brute force: every maximal set of names with no differing pair in it."""
    bad = {frozenset(p) for p in differ}
    ok = [frozenset(s) for k in range(1, len(names) + 1) for s in combinations(names, k)
          if not any(frozenset(p) in bad for p in combinations(s, 2))]
    return {s for s in ok if not any(s < t for t in ok)}


# -- the letters ------------------------------------------------------------------------------
def test_the_walking_tier_failure_case_gets_a_ab_b():
    # a ~ b and b ~ c, but a != c: the walking tiers put b with a and c alone; the letters show both ties
    g = grouping.letter_groups(["c", "a", "b"], [_seeds(C), _seeds(A), _seeds(B)])
    assert g.order == ["a", "b", "c"]
    assert g.letters == {"a": "a", "b": "ab", "c": "b"}
    raw = [sps.ttest_rel(A, B).pvalue, sps.ttest_rel(A, C).pvalue, sps.ttest_rel(B, C).pvalue]
    holm = stats.holm(raw)
    assert g.adjusted[("a", "b")] == pytest.approx(holm[0]) and g.adjusted[("c", "a")] == pytest.approx(holm[1])
    assert g.adjusted[("b", "c")] == pytest.approx(holm[2]) and holm[2] > 0.05 and holm[0] > 0.05 > holm[1]
    assert g.differ("a", "c") and not g.differ("a", "b") and not g.differ("c", "b") and g.pairs == 3
    assert "Holm-adjusted over all 3 pairs, p < 0.05" in g.rule()


def _walking_tiers(g):
    """The old rule, for contrast: walking down the ranking, a new tier starts at the first strategy that differs
    from the current tier's first one."""
    tier, leader, current = {}, None, 0
    for nm in g.order:
        if leader is None or g.differ(leader, nm):
            leader, current = nm, current + 1
        tier[nm] = current
    return tier


def test_near_equal_neighbours_share_a_letter():
    # A chain: each strategy 0.003 below the one before, seed noise SD 0.004 over a shared seed effect; the ends
    # differ. Walking tiers cut the chain between two tied neighbours; the letters keep every tied pair together.
    rng = np.random.default_rng(4)
    base = rng.normal(0.6, 0.05, size=6)  # the seed effect every strategy shares (same seed = same base model)
    names = [f"s{k}" for k in range(8)]
    g = grouping.letter_groups(names, [_seeds(base - 0.003 * k + rng.normal(0, 0.004, size=6)) for k in range(8)])
    assert g.order == names and g.differ("s0", "s7")  # not one big tie: the test could fail
    neighbours = list(zip(g.order, g.order[1:]))
    assert not any(g.differ(u, w) for u, w in neighbours)
    tier = _walking_tiers(g)
    assert any(tier[u] != tier[w] for u, w in neighbours)  # the old failure: tied neighbours in different tiers
    for u, w in neighbours:
        assert _share(g.letters, u, w), (u, w, g.letters)
    assert g.letters == dict(zip(names, ["a", "abc", "ab", "abcde", "bcd", "cde", "e", "de"]))


@pytest.mark.parametrize("seed", range(6))
def test_shares_a_letter_iff_not_significantly_different(seed):
    rng = np.random.default_rng(seed)
    n, seeds = int(rng.integers(3, 8)), int(rng.integers(3, 8))
    names = [f"m{k}" for k in rng.permutation(n)]
    shared = rng.normal(0.5, 0.05, size=seeds)
    means = np.sort(rng.uniform(0.3, 0.6, size=n))
    vals = [_seeds(shared + m + rng.normal(0, 0.02, size=seeds)) for m in means]
    g = grouping.letter_groups(names, vals)
    differ = [(u, w) for u, w in combinations(names, 2) if g.differ(u, w)]
    for u, w in combinations(names, 2):
        assert _share(g.letters, u, w) == (not g.differ(u, w)), (u, w, g.letters)
    # the letters are the maximal sets of mutual ties, and 'a' is held by the best strategy
    groups = {frozenset(nm for nm in names if ch in g.letters[nm]) for ch in "".join(g.letters.values())}
    assert groups == _maximal_cliques(names, differ)
    assert "a" in g.letters[g.order[0]]
    letters = sorted(set("".join(g.letters.values())))
    assert letters == list(grouping.LETTERS[:len(letters)])  # a, b, c, ... with no gap


@pytest.mark.parametrize("seed", range(20))
def test_the_display_is_exact_for_any_pattern_of_differences(seed):
    """compact_letter_display alone, on random graphs of differing pairs (patterns p-values rarely make)."""
    rnd = random.Random(seed)
    names = [f"t{k}" for k in range(rnd.randint(1, 8))]
    differ = [p for p in combinations(names, 2) if rnd.random() < 0.5]
    letters = grouping.compact_letter_display(names, differ)
    for u, w in combinations(names, 2):
        assert _share(letters, u, w) == ((u, w) not in differ), (u, w, letters)
    groups = {frozenset(nm for nm in names if ch in letters[nm]) for ch in "".join(letters.values())}
    assert groups == _maximal_cliques(names, differ)
    shuffled = [(w, u) if rnd.random() < 0.5 else (u, w) for u, w in differ]
    rnd.shuffle(shuffled)
    assert grouping.compact_letter_display(names, shuffled) == letters  # whatever the order of the pairs
    # letters in ranking order: the first letter ever seen walking down the ranking is 'a', then 'b', ...
    seen = []
    for nm in names:
        seen += [ch for ch in letters[nm] if ch not in seen]
    assert seen == sorted(seen)


def test_letters_past_the_alphabet_stay_apart():
    names = [f"n{k}" for k in range(60)]
    letters = grouping.compact_letter_display(names, list(combinations(names, 2)))  # every pair differs
    assert len(set(letters.values())) == 60 and letters["n0"] == "a1" and letters["n26"] == "a2"
    assert all("," not in v for v in letters.values())  # one letter each
    two = grouping.compact_letter_display(names, [p for p in combinations(names, 2) if p != ("n0", "n1")])
    assert two["n0"] == two["n1"] == "a1" and two["n2"] == "b1"


def test_undefined_means_get_no_letter_and_untested_pairs_are_ties():
    nan = float("nan")
    g = grouping.letter_groups(["a", "one", "none", "c", "empty"],
                               [_seeds(A), {0: 0.1}, {0: nan, 1: nan}, _seeds(C), {}])
    assert g.order == ["a", "c", "one", "empty", "none"]  # no mean: last, by name
    assert g.letters["none"] == "" and g.letters["empty"] == ""
    assert ("none", "a") not in g.adjusted and g.pairs == 1  # NaN means are in no test, and not in Holm's family
    # one seed: nothing to pair, so tied with both; a and c differ
    assert g.letters == {"a": "a", "c": "b", "one": "ab", "none": "", "empty": ""}
    assert math.isnan(g.adjusted[("a", "one")]) and not g.differ("a", "one")
    assert "over the 1 pair with 2 or more shared seeds, p < 0.05; the other 2 pairs, untested" in g.rule()
    assert grouping.letter_groups([], []).letters == {}
    with pytest.raises(ValueError, match="unique"):
        grouping.letter_groups(["a", "a"], [_seeds(A), _seeds(A)])


def test_lower_is_better_and_equal_means():
    g = grouping.letter_groups(["a", "c"], [_seeds(A), _seeds(C)], higher_is_better=False)  # e.g. forgetting
    assert g.order == ["c", "a"] and g.letters == {"c": "a", "a": "b"}
    same = grouping.letter_groups(["y", "x"], [_seeds(A), _seeds(A)])  # equal means: by name, one group
    assert same.order == ["x", "y"] and same.letters == {"x": "a", "y": "a"}


def test_deterministic_and_independent_of_the_input_order():
    rng = np.random.default_rng(7)
    shared = rng.normal(0.5, 0.05, size=5)
    names = [f"m{k}" for k in range(7)]
    vals = [_seeds(shared + 0.01 * k + rng.normal(0, 0.01, size=5)) for k in range(7)]
    first = grouping.letter_groups(names, vals)
    assert len(set(first.letters.values())) > 2  # something to reorder
    for perm_seed in range(5):
        perm = np.random.default_rng(perm_seed).permutation(len(names))
        # names permuted, and each strategy's seeds given in another order too
        shuffled = [dict(sorted(vals[i].items(), key=lambda kv: (kv[0] * (perm_seed + 3)) % 5)) for i in perm]
        g = grouping.letter_groups([names[i] for i in perm], shuffled)
        assert g.order == first.order and g.letters == first.letters and g.adjusted == first.adjusted


# -- the leaderboard's Group column -----------------------------------------------------------
def _write_runs(root: Path, acc: dict[str, list[float]]) -> None:
    """One result file per strategy and seed, made from a fixture run, its final row all `acc[s][seed]`."""
    src = json.loads((FIXTURES / "results/runs/vision-audio/full-ft/mixtral-tiny-seed0-full0.json").read_text())
    for name, values in acc.items():
        (root / "runs" / "vision-audio" / name).mkdir(parents=True)
        for seed, v in enumerate(values):
            doc = json.loads(json.dumps(src))
            doc["config"]["strategy"], doc["config"]["seed"], doc["seed"] = name, seed, seed
            doc["run_key"] = f"{name}-{seed}"
            doc["accuracy_matrix"][-1] = [v, v, v]  # ACC = v
            (root / "runs" / "vision-audio" / name / f"seed{seed}.json").write_text(json.dumps(doc))


def test_the_leaderboard_shows_the_groups_and_what_a_shared_letter_means(tmp_path):
    _write_runs(tmp_path, {"gamma": C, "alpha": A, "beta": B})
    board = leaderboard.build(tmp_path)
    (t,) = board.tables
    assert [(r.label, r.text["group"]) for r in t.rows] == [("alpha", "a"), ("beta", "ab"), ("gamma", "b")]
    assert t.columns[0].header == "Group" and t.groups.pairs == 3
    rule = ("Group (letters in order of mean ACC, 'a' for the best): strategies sharing a letter are not significantly "
            "different in ACC (paired t-test over shared seeds, Holm-adjusted over all 3 pairs, p < 0.05); strategies "
            "with no letter in common differ.")
    md = formats.to_markdown(board)
    assert "| Strategy | Group | ACC |" in md and "| beta | ab | " in md and "| gamma | b | " in md
    assert f"\n{rule}\n" in md  # a paragraph of its own under the table
    group = {x["label"]: x for x in csv.DictReader(formats.to_csv(board).splitlines()) if x["column"] == "group"}
    assert group["beta"]["value"] == "ab" and group["beta"]["header"] == "Group" and rule in group["beta"]["method"]
    latex = formats.to_latex(board)
    assert f"% {rule}" in latex.splitlines() and "beta & ab & " in latex
    page = formats.to_html(board)
    assert "<th data-desc='0'>Group</th>" in page and "<td data-v='0.0'>ab</td>" in page
    assert f"<p class='note'>{html.escape(rule)}</p>" in page
    readme = leaderboard.readme_section(board)
    assert "| Strategy | Group | ACC |" in readme and f"\n{rule}\n" in readme
    # sorting by the column: by first letter (a, a, b), then label
    assert [r.label for r in leaderboard.sort_rows(t.rows, t.columns, "group")] == ["alpha", "beta", "gamma"]
    assert [r.label for r in leaderboard.sort_rows(t.rows, t.columns, "Group")][-1] == "gamma"


def test_rows_with_the_same_label_still_get_their_own_letters(tmp_path):
    _write_runs(tmp_path, {"alpha": A, "gamma": C})
    rows = leaderboard.build(tmp_path).tables[0].rows
    for r in rows:
        r.label = "same"
    g = leaderboard._set_groups(rows)
    assert sorted(g.letters.values()) == ["a", "b"] and sorted(r.text["group"] for r in rows) == ["a", "b"]


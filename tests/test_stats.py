"""cl_bench.analysis.stats against hand-computed cases and scipy, and `clbench compare` on the fixture result files."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize
from scipy import stats as sps

from cl_bench.analysis import stats
from cl_bench.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


# -- bootstrap intervals ---------------------------------------------------------------------
def test_expanded_level_by_hand():
    # n = 5: t_{0.975, 4} = 2.776445 (t table), z' = sqrt(5/4) * 2.776445 = 3.104160, 1 - 2 (1 - Phi(z')) = 0.998092
    assert stats.expanded_level(0.95, 5) == pytest.approx(0.998092, abs=1e-6)
    assert stats.expanded_level(0.95, 10_000) == pytest.approx(0.95, abs=1e-3)  # no widening for many seeds
    assert math.isnan(stats.expanded_level(0.95, 1))


def test_interval_is_scipy_bootstrap_at_the_expanded_level():
    x = [0.52, 0.61, 0.47, 0.58, 0.66]
    ci = stats.bootstrap_ci(x)
    z = math.sqrt(5 / 4) * sps.t.ppf(0.975, 4)  # Hesterberg's expanded percentile interval, written out again
    ref = sps.bootstrap((np.array(x),), np.mean, n_resamples=10_000, confidence_level=1 - 2 * sps.norm.sf(z),
                        method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert (ci.low, ci.high) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12))
    assert ci.mean == pytest.approx(np.mean(x)) and ci.n == 5
    assert stats.bootstrap_ci(x) == ci  # seeded: the same numbers every time
    plain = stats.bootstrap_ci(x, expand=False)
    assert ci.low <= plain.low <= plain.high <= ci.high  # the widening widens


@pytest.mark.parametrize("values", [[0, 1, 1, 0, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 0], [0.0, 1.0]])
def test_interval_stays_inside_the_range_at_its_edges(values):
    ci = stats.bootstrap_ci(values)
    assert 0.0 <= min(values) <= ci.low <= ci.mean <= ci.high <= max(values) <= 1.0
    # the Student-t interval leaves [0, 1] on the same data, which is what this replaces
    sd = np.std(values, ddof=1)
    half = sps.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
    assert np.mean(values) - half < 0 or np.mean(values) + half > 1


def test_interval_degenerate_cases():
    assert stats.bootstrap_ci([1.0, 1.0, 1.0]) == stats.Interval(1.0, 1.0, 1.0, 3)  # identical: a point
    assert stats.bootstrap_ci([0.1] * 5).low == 0.1  # no rounding outside the data
    one = stats.bootstrap_ci([0.7, float("nan")])  # NaN dropped; one value: no interval
    assert one.mean == 0.7 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    none = stats.bootstrap_ci([float("nan")])
    assert none.n == 0 and math.isnan(none.mean)
    two = stats.bootstrap_ci(torch.tensor([0.4, 0.6], dtype=torch.float64))  # torch in, floats out
    assert (two.low, two.high) == (pytest.approx(0.4), pytest.approx(0.6))  # 2 seeds: the widened level is ~1


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=6))
def test_interval_inside_the_data_for_any_accuracies(values):
    ci = stats.bootstrap_ci(values, n_resamples=999)
    assert min(values) <= ci.low <= ci.high <= max(values)


def test_two_level_bootstrap_adds_the_test_sets_error():
    acc = [[0.50, 0.60], [0.70, 0.80], [0.60, 0.60]]  # [seeds, tasks]
    seeds_only = stats.bootstrap_ci(np.mean(acc, axis=1))
    small = stats.two_level_bootstrap_ci(acc, [48, 50])
    huge = stats.two_level_bootstrap_ci(acc, [10**7, 10**7])
    assert small.mean == pytest.approx(seeds_only.mean)
    assert 0 <= small.low < huge.low and huge.high < small.high <= 1  # 48 items widen it
    assert huge.low == pytest.approx(seeds_only.low, abs=0.01) and huge.high == pytest.approx(seeds_only.high, abs=0.01)
    perfect = stats.two_level_bootstrap_ci([[1.0, 1.0], [1.0, 1.0]], [48, 50])
    assert (perfect.low, perfect.high) == (1.0, 1.0)
    with pytest.raises(ValueError, match="seeds, tasks"):
        stats.two_level_bootstrap_ci([0.5, 0.6], [48])


def test_column_intervals_are_bootstrap_ci_per_column_clipped_to_the_range():
    acc = [[0.9, 0.5, 0.3], [0.9, 0.7, 0.5], [0.9, 0.6, 0.4]]  # [seeds, stages]: one task across stages
    mean, lo, hi = stats.column_intervals(acc, lower=0.0, upper=0.55)
    for j, col in enumerate(zip(*acc)):
        ci = stats.bootstrap_ci(list(col))
        assert (mean[j], lo[j], hi[j]) == (pytest.approx(ci.mean), pytest.approx(min(ci.low, 0.55)),
                                           pytest.approx(min(ci.high, 0.55)))
    assert (lo[0], hi[0]) == (0.55, 0.55)  # a point at 0.9, clipped to the range given
    m, low, high = stats.column_intervals([0.4])  # a flat input: 0-d results; one seed: no interval
    assert m == pytest.approx(0.4) and np.isnan(low) and np.isnan(high)


def test_mean_over_seeds_ignores_nan():
    got = stats.mean_over_seeds([[[0.2, math.nan]], [[0.4, math.nan]], [[math.nan, math.nan]]])
    assert got.shape == (1, 2) and got[0, 0] == pytest.approx(0.3) and np.isnan(got[0, 1])


# -- paired comparison and power -------------------------------------------------------------
def test_paired_comparison_is_scipy_paired_t():
    a, b = [0.50, 0.60, 0.70, 0.55, 0.65], [0.40, 0.55, 0.60, 0.50, 0.60]
    r = stats.paired_comparison(a, b)
    ref = sps.ttest_rel(a, b)
    assert r.n == 5 and r.mean_diff == pytest.approx(0.07)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (r.low, r.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # by hand: diffs .1 .05 .1 .05 .05, sd 0.027386, d = .07 / .027386 = 2.556
    assert r.effect_size == pytest.approx(2.5560, abs=1e-4)
    assert r.p_a_better == 1.0


def test_wins_count_ties_half_and_nan_pairs_are_dropped():
    r = stats.paired_comparison([0.5, 0.6, 0.7, float("nan")], [0.5, 0.7, 0.6, 0.1])
    assert r.n == 3 and r.p_a_better == pytest.approx((0.5 + 0 + 1) / 3)
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired_comparison([0.1, 0.2], [0.1])


def test_paired_comparison_degenerate_cases():
    same = stats.paired_comparison([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])  # a tie on every seed
    assert same.p_value == 1.0 and same.effect_size == 0 and same.seeds_80 == math.inf and same.p_a_better == 0.5
    shift = stats.paired_comparison([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])  # the same gain on every seed
    assert shift.p_value == 0.0 and shift.effect_size == math.inf and shift.seeds_95 == 2
    assert (shift.low, shift.high) == (pytest.approx(0.1), pytest.approx(0.1))
    one = stats.paired_comparison([0.6], [0.5])
    assert one.n == 1 and math.isnan(one.p_value) and one.seeds_80 is None and one.p_a_better == 1.0


def test_seeds_needed_against_known_values():
    # R's pwr::pwr.t.test(d = 0.5, sig.level = 0.05, power = 0.80, type = "one.sample") gives n = 33.36713
    # (statsmodels' TTestPower: 33.367); a paired t-test is a one-sample test of the differences.
    root = optimize.brentq(lambda n: stats.paired_t_power(0.5, n) - 0.8, 2, 200)
    assert root == pytest.approx(33.36713, abs=1e-5)
    assert stats.seeds_needed(0.5, 0.8) == 34 and stats.seeds_needed(-0.5, 0.8) == 34
    assert stats.paired_t_power(0.5, 33) < 0.8 <= stats.paired_t_power(0.5, 34)
    # normal approximation by hand: ((z_.975 + z_.95) / d)^2 = ((1.960 + 1.645) / 0.5)^2 = 52.0; t adds about 2
    assert stats.seeds_needed(0.5, 0.95) == 54
    assert stats.seeds_needed(0.0) == math.inf and stats.seeds_needed(float("nan")) is None
    assert stats.seeds_needed(1e-9, max_n=1000) == math.inf


def test_order_effect_test_pairs_two_orders_and_uses_friedman_for_more():
    a, b, c = [0.50, 0.62, 0.55], [0.45, 0.60, 0.49], [0.40, 0.51, 0.47]  # per order, seeds 0, 1, 2
    assert stats.order_effect_test([a, b]) == ("paired t", pytest.approx(sps.ttest_rel(a, b).pvalue))
    assert stats.order_effect_test([a, b, c]) == ("Friedman", pytest.approx(sps.friedmanchisquare(a, b, c).pvalue))
    test, p = stats.order_effect_test([a[:2], b[:2], c[:2]])  # Friedman needs 3 seeds
    assert test == "" and math.isnan(p)
    test, p = stats.order_effect_test([a[:1], b[:1]])  # a paired t-test needs 2
    assert test == "" and math.isnan(p)


# -- Holm (letter groups: tests/test_grouping.py) ---------------------------------------------
def test_holm_on_the_textbook_example():
    # Holm (1979) as on Wikipedia: p = .01, .04, .03, .005 with alpha .05 rejects H1 and H4.
    # Sorted .005 .01 .03 .04 times 4 3 2 1 = .02 .03 .06 .04, made monotone: .02 .03 .06 .06.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    adj = stats.holm([0.01, float("nan"), 0.02])  # NaN is not a test: m = 2
    assert adj[0] == pytest.approx(0.02) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.02)
    assert stats.holm([]) == []


# -- clbench compare -------------------------------------------------------------------------
def test_cli_compare_on_the_fixtures(monkeypatch):
    monkeypatch.chdir(FIXTURES)
    out = CliRunner().invoke(main, ["compare", "full-ft", "joint", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    text = out.stdout
    # ACC per seed: full-ft .4667 .6667, joint .8833 .8833; diffs -.4167 -.2167
    assert "over 2 shared seeds (0, 1)" in text
    assert "0          0.467     0.883    -0.417" in text and "1          0.667     0.883    -0.217" in text
    p = sps.ttest_rel([0.3 + 0.4 + 0.7, 0.5 + 0.6 + 0.9], [0.85 + 0.85 + 0.95] * 2).pvalue  # 3x the ACCs: same p
    assert f"p = {p:.3g}" in text and "P(A > B): 0.00" in text
    assert "mean difference A - B: -0.317" in text and "at 95% power" in text and "at 80% power" in text
    assert text.rstrip().endswith(f"no significant difference: a tie at this number of seeds (p={p:.3g})")


def test_cli_compare_errors_name_the_fix(monkeypatch):
    monkeypatch.chdir(FIXTURES)
    runner = CliRunner()
    out = runner.invoke(main, ["compare", "full-ft", "align-only", "--device", "cpu"])
    assert out.exit_code != 0 and "share 1 seed(s)" in out.output and "at least 2" in out.output
    out = runner.invoke(main, ["compare", "full-ft", "nope", "--device", "cpu"])
    assert out.exit_code != 0 and "no finished runs of 'nope'" in out.output
    out = runner.invoke(main, ["compare", "full-ft", "joint", "--metric", "speed", "--device", "cpu"])
    assert out.exit_code != 0 and "choose --metric from: acc, bwt" in out.output


def _copy_run(src: Path, dst: Path, seed: int, last_row: list[float]) -> None:
    doc = json.loads(src.read_text())
    doc["seed"] = doc["config"]["seed"] = seed
    doc["accuracy_matrix"][-1] = last_row
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(doc))


def test_cli_compare_calls_a_clear_difference(tmp_path):
    runs = FIXTURES / "results" / "runs" / "vision-audio"
    ft, joint = next((runs / "full-ft").glob("*seed0*")), next((runs / "joint").glob("*seed0*"))
    for seed, e in enumerate([0.0, 0.01, -0.01, 0.02, 0.0]):
        _copy_run(ft, tmp_path / "runs" / "s" / "full-ft" / f"{seed}.json", seed, [0.3 + e, 0.4, 0.7])
        _copy_run(joint, tmp_path / "runs" / "s" / "joint" / f"{seed}.json", seed, [0.85 + 2 * e, 0.85, 0.95])
    out = CliRunner().invoke(main, ["compare", "joint", "full-ft", "--results-dir", str(tmp_path), "--device", "cpu",
                                    "--metric", "ACC"])
    assert out.exit_code == 0, out.output
    assert "over 5 shared seeds (0, 1, 2, 3, 4)" in out.stdout and "P(A > B): 1.00" in out.stdout
    assert "verdict: joint > full-ft on acc (higher is better) (p=" in out.stdout

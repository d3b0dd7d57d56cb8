"""The figures and the HTML page as a reader sees them (fixture results: tests/fixtures/results).

Fixture runs (vision-audio: text, vision, audio): full-ft seeds 0 and 1 (ACC .467 and .667, whose
Student-t interval [-0.70, 1.84] leaves [0, 1]), align-only seed 0, joint seeds 0 and 1.
"""

import itertools
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.text import Text

from cl_bench.reporting import formats, leaderboard

from cl_bench.reporting import figures as plots

FIXTURES = Path(__file__).parent / "fixtures"
BUILTINS = ["full-ft", "align-only", "moextend", "mmer", "lora", "lora-per-modality", "joint", "adapter",
            "adapter-per-modality", "ewc", "lwf", "replay"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plots._pyplot().close("all")


@pytest.fixture(scope="module")
def table():
    return leaderboard.build(FIXTURES / "results").tables[0]


def row(table, label):
    return next(r for r in table.rows if r.label == label)


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    """Twelve rows, one per built-in strategy, all with full-ft's two runs: every point coincides."""
    root = tmp_path_factory.mktemp("crowded")
    for name in BUILTINS:
        for src in sorted((FIXTURES / "results" / "runs" / "vision-audio" / "full-ft").glob("*.json")):
            doc = json.loads(src.read_text())
            doc["config"]["strategy"] = name
            dst = root / "runs" / "vision-audio" / name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(json.dumps(doc))
    (t,) = leaderboard.build(root).tables
    assert sorted(r.strategy for r in t.rows) == sorted(BUILTINS)
    return t


def _lab(color) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour."""
    rgb = np.array(to_rgb(color))
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
    f = np.cbrt(np.maximum(xyz / np.array([0.95047, 1.0, 1.08883]), 0.008856 ** 3))
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_every_builtin_strategy_has_its_own_stable_colour_and_marker():
    from cl_bench.registry import strategies

    assert set(BUILTINS) <= set(strategies.names())
    styles = {name: plots.style(name) for name in BUILTINS}
    assert styles == {name: plots.style(name) for name in reversed(BUILTINS)}  # not by position
    colors = [s[0] for s in styles.values()]
    gaps = {(a, b): float(np.linalg.norm(_lab(styles[a][0]) - _lab(styles[b][0])))
            for a, b in itertools.combinations(BUILTINS, 2)}
    closest = min(gaps, key=gaps.get)
    assert gaps[closest] > 20, f"{closest} look alike: CIELAB distance {gaps[closest]:.1f}"
    assert len({s[1] for s in styles.values()}) == len(BUILTINS)  # markers, for where colours meet
    assert all(_lab(c)[0] < 85 for c in colors)  # none too pale to see on white
    assert plots.style("my-plugin") == plots.style("my-plugin")  # others: by a stable hash of the name


def test_a_strategy_has_the_same_colour_in_every_figure(table, crowded):
    def line_colors(fig):
        ax = fig.axes[0]
        return {ln.get_label(): to_rgb(ln.get_color()) for ln in ax.get_lines() if not ln.get_label().startswith("_")}

    small, big = line_colors(plots.forgetting_curves_figure(table)), line_colors(plots.forgetting_curves_figure(crowded))
    assert small["full-ft"] == big["full-ft"] == to_rgb(plots.style("full-ft")[0])
    assert small["joint"] == big["joint"] == to_rgb(plots.style("joint")[0])
    assert len(set(big.values())) == len(BUILTINS)
    fig = plots.pareto_figure(crowded)
    marks = {c.get_label(): to_rgb(c.lines[0].get_color()) for c in fig.axes[0].containers}
    assert marks == big


def test_transfer_heatmap_is_diverging_and_centred_on_zero(table):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PendingDeprecationWarning)  # seaborn's cmap.set_bad warning is gone
        fig = plots.matrix_heatmaps_figure(row(table, "full-ft"), table, "transfer")
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 3  # seed 0, seed 1, mean
    for im in images:
        norm, cmap = im.norm, im.get_cmap()
        assert norm(0.0) == pytest.approx(0.5) and norm.vmin == pytest.approx(-norm.vmax)
        white, loss, gain = (np.array(cmap(norm(v))[:3]) for v in (0.0, -0.5, 0.5))
        assert white.min() > 0.9  # no change: near white, not the colour of forgetting
        assert loss[0] > loss[2] + 0.2 and gain[2] > gain[0] + 0.2  # forgetting and gain: opposite hues
        shown = np.ma.compressed(im.get_array())
        assert norm.vmin <= shown.min() and shown.max() <= norm.vmax  # every value on the scale
    acc = plots.matrix_heatmaps_figure(row(table, "full-ft"), table, "accuracy")
    assert all((im.norm.vmin, im.norm.vmax) == (0.0, 1.0) for ax in acc.axes for im in ax.images)


def test_pareto_error_bars_stay_inside_the_metric_range(table):
    fig = plots.pareto_figure(table)
    seeds_acc = [(0.3 + 0.4 + 0.7) / 3, (0.5 + 0.6 + 0.9) / 3]  # full-ft's ACC per seed
    for ax in fig.axes:
        bars = {c.get_label(): c for c in ax.containers}
        assert set(bars) == {"joint", "align-only", "full-ft"}
        for label, c in bars.items():
            for coll in c[2]:
                for seg in coll.get_segments():
                    (x0, y0), (x1, y1) = seg
                    assert 0.0 <= min(y0, y1) and max(y0, y1) <= 1.0, (label, seg)
                    assert min(x0, x1) > 0  # costs: log axis, nothing at or below zero
        ys = [y for coll in bars["full-ft"][2] for seg in coll.get_segments() for _, y in seg]
        assert min(ys) >= min(seeds_acc) - 1e-9 and max(ys) <= max(seeds_acc) + 1e-9  # not a Student t bar
        assert max(ys) - min(ys) > 0.05  # but a bar there is


def _overlaps(a, b) -> bool:
    return min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0)


@pytest.mark.parametrize("which", ["fixture", "crowded"])
def test_pareto_labels_do_not_overlap(which, table, crowded):
    t = table if which == "fixture" else crowded
    fig = plots.pareto_figure(t)
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [a for a in ax.texts if a.get_text()]
        assert sorted(a.get_text() for a in labels) == sorted(r.label for r in t.rows)
        for a in labels:
            a.update_positions(renderer)
        boxes = [Text.get_window_extent(a, renderer) for a in labels]  # the text, without its leader line
        for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
            assert not _overlaps(a, b), (labels[i].get_text(), labels[j].get_text())
        frame = ax.get_window_extent(renderer)
        assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)


def test_forgetting_curves_keep_equal_lines_visible_and_bars_in_range(crowded):
    fig = plots.forgetting_curves_figure(crowded)
    for ax in fig.axes[:3]:
        lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        assert len(lines) == len(BUILTINS)
        # the twelve rows are equal: each still shows, side by side, with its own marker
        assert len({tuple(ln.get_xdata()) for ln in lines}) == len(lines)
        assert len({ln.get_marker() for ln in lines}) == len(lines)
        for coll in ax.collections:  # the interval bars
            for seg in coll.get_segments():
                assert all(0.0 <= y <= 1.0 for _, y in seg)


def test_html_is_readable_sortable_and_self_contained():
    board = leaderboard.build(FIXTURES / "results")
    figs = {"pareto.png": b"\x89PNG fake", "full-ft-accuracy.png": b"\x89PNG fake",
            "full-ft-transfer.png": b"\x89PNG fake"}
    page = formats.to_html(board, {"vision-audio": figs})
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert re.search(r"(^|})\s*th\s*,\s*td\s*{[^}]*white-space:\s*nowrap", style)  # no wrapped intervals
    assert "overflow-x:auto" in style  # the wide table scrolls on a laptop screen
    assert re.search(r"figure img{[^}]*max-width:100%", style)  # figures as wide as the page
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    assert "addEventListener('click'" in script and ".sort(" in script and "dataset.v" in script
    assert "class='sortable'" in page
    for value in re.findall(r"data-v='([^']*)'", page):
        assert value == "" or float(value) == float(value)  # numbers to sort by
    links = re.findall(r"(?:src|href)\s*=\s*['\"]?([^'\" >]*)", page)
    assert links and all("http" not in v and not v.startswith("//") for v in links)
    assert "http" not in re.sub(r"<p[^>]*>.*?</p>", "", page)  # nothing fetched, no stylesheet or font
    (t,) = board.tables
    matrix = [ln for ln in formats.matrix_table(t) if ln.startswith("| ") and "---" not in ln][1:]
    assert len(matrix) == len(t.rows)
    for ln in matrix:  # the accuracy matrices, as in the markdown
        cells = [x.strip() for x in ln.strip("| ").split("|")]
        assert "<tr><td>" + "</td><td>".join(cells) + "</td></tr>" in page


def test_routing_figure_averages_runs_and_sums_each_stages_added_experts(tmp_path, table):
    """Two MoExtend-like runs: seed 0 extended layer 1 at the vision stage, seed 1 layer 0; the figure's
    "+vision" column holds each layer's mean share of the added experts, and is drawn only once added."""
    def layout(seed, stage):
        st = [[-1, -1], [-1, -1]]
        if stage >= 1:
            st[1 - seed] = [-1, -1, 0]
        return st

    def shares(seed, stage, task):
        out = []
        for st in layout(seed, stage):
            if len(st) == 3:
                out.append([0.2, 0.2, 0.6] if task == "vision" else [0.5, 0.5, 0.0])
            else:
                out.append([0.7, 0.3])
        return out

    for seed, src in enumerate(sorted((FIXTURES / "results" / "runs" / "vision-audio" / "full-ft").glob("*.json"))):
        doc = json.loads(src.read_text())
        doc["config"]["strategy"] = "moextend"
        doc["routing"] = {"rows": [{"layers": [0, 1], "expert_stage": layout(seed, i),
                                    "shares": {t: shares(seed, i, t) for t in ("text", "vision", "audio")}}
                                   for i in range(3)]}
        dst = tmp_path / "runs" / "vision-audio" / "moextend" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(json.dumps(doc))
    (t,) = leaderboard.build(tmp_path).tables
    r = row(t, "moextend")
    assert plots.has_routing(r)
    fig = plots.routing_figure(r, t)
    axes = np.array(fig.axes[:9]).reshape(3, 3)  # tasks x stages (the colour bar comes last)
    base = axes[1][0].images[0].get_array()
    after = axes[1][1].images[0].get_array()  # vision after the vision stage
    assert base.shape == after.shape == (2, 3)  # e0, e1, +vision
    np.testing.assert_allclose(base, [[0.7, 0.3, 0.0], [0.7, 0.3, 0.0]])
    # each layer: one run extended it (0.2, 0.2, 0.6), the other did not (0.7, 0.3, 0)
    np.testing.assert_allclose(after, [[0.45, 0.25, 0.3], [0.45, 0.25, 0.3]])
    assert [x.get_text() for x in axes[2][0].get_xticklabels()] == ["e0", "e1", "+vision"]
    assert not plots.has_routing(row(table, "full-ft"))  # its fixture runs predate the routing analysis

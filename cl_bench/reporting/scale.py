"""The scale axis: a table's strategies at each model size its runs have, and whether the sizes rank them alike.

Built from a leaderboard's tables (so from result files only, nothing re-run): within one stream, order and budget,
rows that differ only by config.model are one strategy at several sizes. Per size its ACC (mean and interval, as in
the table); per pair of sizes Kendall's tau between the two rankings by mean ACC, its bootstrap interval over seeds
and the pairs that flip (cl_bench.analysis.rank_agreement). formats.py writes it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

from cl_bench.analysis.rank_agreement import rank_agreement
from cl_bench.reporting.collect import Run
from cl_bench.reporting.tables import Row, ScaleRow, ScaleTable, Table


def model_label(run: Run) -> str:
    """A run's model size as the scale table names it: the preset, or a checkpoint directory's name."""
    model = str(run.config["model"])
    return model if (run.doc.get("base_model") or {}).get("source") != "checkpoint" else Path(model).name or model


def scale_key(run: Run) -> str:
    """A row's key without its model: the same strategy and options at another size."""
    c = json.loads(run.group_key())
    c.pop("model", None)
    return json.dumps(c, sort_keys=True)


def scale_tables(tables: list[Table], labels: Callable[[dict[str, list[Run]]], dict[str, str]],
                 level: float = 0.95) -> list[ScaleTable]:
    """A ScaleTable for each table whose rows hold two or more model sizes.

    Args:
        tables: the leaderboard's tables (one stream, order and budget each).
        labels: row key -> runs  ->  row key -> label (leaderboard's labelling, told apart by options, not by model).
        level: of the rank agreement's interval.
    """
    out = []
    for t in tables:
        by_key: dict[str, dict[str, Row]] = defaultdict(dict)  # scale key -> model -> row
        runs: dict[str, list[Run]] = {}
        for r in t.rows:
            key = scale_key(r.runs[0])
            by_key[key][model_label(r.runs[0])] = r
            runs.setdefault(key, r.runs)
        params: dict[str, int | None] = {}
        for r in t.rows:
            recorded = (r.runs[0].doc.get("base_model") or {}).get("parameters")
            params.setdefault(model_label(r.runs[0]), recorded if isinstance(recorded, int) else None)
        if len(params) < 2:
            continue
        models = sorted(params, key=lambda m: (params[m] is None, params[m] or 0, m))
        names = labels(runs)
        rows = []
        for key, at in by_key.items():
            acc = {m: (r.values["acc"][0], *r.ci.get("acc", (math.nan, math.nan))) for m, r in at.items()}
            rows.append(ScaleRow(names[key], acc, {m: len(r.runs) for m, r in at.items()}))
        first = models[0]
        rows.sort(key=lambda s: (first not in s.acc or math.isnan(s.acc[first][0]),
                                 -s.acc[first][0] if first in s.acc and not math.isnan(s.acc[first][0]) else 0.0,
                                 s.label))
        per_seed = {m: {names[k]: list(at[m].per_seed["acc"].values()) for k, at in by_key.items() if m in at}
                    for m in models}
        agreement = [(a, b, rank_agreement(per_seed[a], per_seed[b], level)) for a, b in combinations(models, 2)]
        out.append(ScaleTable(t.title, t.slug, models, params, rows, agreement))
    return out

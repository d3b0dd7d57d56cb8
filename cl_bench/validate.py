"""The strategy contract, checked on a tiny run: what `clbench validate` and the test suite run."""

from __future__ import annotations

import math
from pathlib import Path

REQUIRED_KEYS = ("schema_version", "status", "config", "seed", "stream", "base_model", "accuracy_matrix",
                 "extra_accuracy", "metrics", "stages", "timing", "environment")


def check_result(result: dict) -> list[str]:
    """Problems with a result document (empty when it is complete and consistent)."""
    problems = [f"result file lacks {k!r}" for k in REQUIRED_KEYS if k not in result]
    if problems:
        return problems
    T1 = len(result["stream"]["tasks"])
    R = result["accuracy_matrix"]
    if len(R) != T1 or any(len(row) != T1 for row in R):
        problems.append(f"accuracy matrix is not {T1}x{T1}")
    elif not all(isinstance(a, float) and 0.0 <= a <= 1.0 for row in R for a in row):
        problems.append("accuracy matrix has values outside [0, 1]")
    if len(result["stages"]) != T1 - 1:
        problems.append(f"{len(result['stages'])} stage records for {T1 - 1} stages")
    base = result["base_model"].get("parameters")
    for s in result["stages"]:
        c = s.get("cost", {})
        if not {"trainable", "added", "total"} <= set(c):
            problems.append(f"stage {s.get('experience')}: cost report incomplete: {c}")
            continue
        if base is not None and c["total"] != base + c["added"]:
            problems.append(f"stage {s['experience']}: cost does not add up: total {c['total']} != "
                            f"base {base} + added {c['added']}")
        if not 0 <= c["trainable"] <= c["total"]:
            problems.append(f"stage {s['experience']}: trainable {c['trainable']} outside [0, total]")
        if not (isinstance(s.get("train_seconds"), (int, float)) and math.isfinite(s["train_seconds"])):
            problems.append(f"stage {s['experience']}: no train_seconds")
    for k in ("acc", "bwt", "forgetting"):
        if result["metrics"].get(k) is None:
            problems.append(f"metric {k} missing")
    return problems


def validate(strategy: str, stream: str = "vision-audio", cache_dir: str | None = None,
             results_dir: str | None = None, steps: int = 2, options: dict | None = None) -> list[str]:
    """Run `strategy` on a tiny budget and return every broken promise (empty: the contract holds).

    Checks that the parameters the strategy declares frozen are bit-identical after the
    run, that its cost report adds up, and that the result file is complete.
    """
    import tempfile

    import torch

    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.runner import RunConfig, run

    snapshot: list = []
    problems: list[str] = []

    def inspect(event, strat):
        if event == "setup":
            snapshot.extend((p, p.detach().clone()) for p in strat.frozen())
        else:
            changed = sum(not torch.equal(p, before) for p, before in snapshot)
            if changed:
                problems.append(f"{changed} of the {len(snapshot)} parameters declared frozen changed")

    results_dir = results_dir or tempfile.mkdtemp(prefix="clbench-validate-")
    config = RunConfig(stream=stream, strategy=strategy, budget=Budget(steps=steps, batch_size=4),
                       pretrain=PretrainConfig(steps=5, batch_size=8), strategy_options=options or {},
                       results_dir=results_dir, cache_dir=cache_dir, device="cpu")
    result, path = run(config, progress=False, restart=True, inspect=inspect)
    problems += check_result(result)
    if not Path(path).exists():
        problems.append(f"no result file at {path}")
    return problems

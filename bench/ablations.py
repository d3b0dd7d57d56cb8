"""MoExtend's ablations on the default stream: one option changed at a time, against the default.

Usage: python bench/ablations.py [--seeds 0 1 2 3 4] [--threads 2] [--results-dir results/ablations]
                                 [--page docs/strategies.md] [--variants NAME ...]

Every variant runs the whole stream for every seed (finished runs are reused, so the bench
can be stopped and run again). Per variant: ACC, each task's final test accuracy, text's
validation accuracy right after the first surgery minus after the first alignment (the
surgery's own effect, from the stages' checkpoints), and the paired difference in ACC and
in final text accuracy against the default over shared seeds (paired t-interval, Holm-
adjusted p over the variants). Writes RESULTS_DIR/moextend.md and, with --page, the
page's ablation section between its markers (--readme is the option's former name).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

VARIANTS: list[tuple[str, dict[str, str]]] = [
    ("default (paper)", {}),
    ("router-init=outside", {"router-init": "outside"}),
    ("scope=input", {"scope": "input"}),
    ("scope=input-after", {"scope": "input-after"}),
    ("text-mix=0.1", {"text-mix": "0.1"}),
    ("text-mix=0.25", {"text-mix": "0.25"}),
    ("calibration-input=own", {"calibration-input": "own"}),
    ("keep-tuned-routers", {"keep-tuned-routers": "true"}),
    ("fraction=0.25", {"fraction": "0.25"}),
    ("fraction=1.0", {"fraction": "1.0"}),
    ("layer-choice=first-half", {"layer-choice": "first-half"}),
    ("layer-choice=random", {"layer-choice": "random"}),
]
PAGE = "docs/strategies.md"  # the published table's page (MoExtend, "Ablations")
BEGIN = f"<!-- ablations:begin (python bench/ablations.py --page {PAGE}) -->"
END = "<!-- ablations:end -->"


def run_variants(variants, seeds, results_dir, steps, pretrain_steps, eval_limit, cache_dir,
                 threads: int = 2) -> dict[str, dict]:
    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.runner import RunConfig, run

    docs: dict[str, dict] = {}
    for name, options in variants:
        docs[name] = {}
        for seed in seeds:
            print(f"{name} seed {seed}", file=sys.stderr, flush=True)
            doc, _ = run(RunConfig(strategy="moextend", seed=seed, strategy_options=dict(options),
                                   budget=Budget(steps=steps),
                                   pretrain=PretrainConfig(**({} if pretrain_steps is None else
                                                              {"steps": pretrain_steps})),
                                   eval_limit=eval_limit, results_dir=str(results_dir), cache_dir=cache_dir,
                                   threads=threads),
                         progress=False, reuse=True, echo=lambda s: print(s, file=sys.stderr))
            docs[name][seed] = doc
    return docs


def surgery_effect(doc: dict, task: str = "text") -> float:
    """`task`'s validation accuracy right after the first stage's surgery minus after its alignment."""
    cp = doc["stages"][0].get("checkpoints") or {}
    if not {"after-alignment", "after-surgery"} <= set(cp):
        return math.nan
    return cp["after-surgery"][task] - cp["after-alignment"][task]


def table(docs: dict[str, dict]) -> str:
    import numpy as np

    from cl_bench.analysis.stats import bootstrap_ci, holm, paired_comparison

    names = list(docs)
    tasks = [t["name"] for t in next(iter(docs[names[0]].values()))["stream"]["tasks"]]
    seeds = sorted(set.intersection(*(set(d) for d in docs.values())))

    def values(name, f):
        return np.array([f(docs[name][s]) for s in seeds], dtype=float)

    def acc(doc):
        return doc["metrics"]["acc"]

    def final(j):
        return lambda doc: doc["accuracy_matrix"][-1][j]

    def cell(v):
        ci = bootstrap_ci(v)  # inside [min, max] of the seeds' values, so inside [0, 1]
        return f"{ci.mean:.3f}" if math.isnan(ci.low) else f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]"

    base = names[0]
    comps = {n: (paired_comparison(values(n, acc), values(base, acc)),
                 paired_comparison(values(n, final(0)), values(base, final(0)))) for n in names[1:]}
    p_acc = dict(zip(names[1:], holm([comps[n][0].p_value for n in names[1:]])))
    p_text = dict(zip(names[1:], holm([comps[n][1].p_value for n in names[1:]])))

    def versus(c, p):
        if math.isnan(c.low):
            return f"{c.mean_diff:+.3f}"
        verdict = "tie" if not p < 0.05 else ("better" if c.mean_diff > 0 else "worse")
        shown = "p < 0.001" if p < 0.001 else f"p {p:.2g}"
        return f"{c.mean_diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}], {shown}: {verdict}"

    head = (["variant", "ACC"] + [f"{t} (final)" for t in tasks] + ["text: surgery's effect (val)",
                                                                     "ΔACC vs default", "Δtext vs default"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        row = [n, cell(values(n, acc))] + [cell(values(n, final(j))) for j in range(len(tasks))]
        eff = values(n, surgery_effect)
        row.append(f"{np.nanmean(eff):+.3f}" if np.isfinite(eff).any() else "n/a")
        row += (["-", "-"] if n == base else [versus(comps[n][0], p_acc[n]), versus(comps[n][1], p_text[n])])
        lines.append("| " + " | ".join(row) + " |")
    budget = next(iter(docs[base].values()))["config"]["budget"]["steps"]
    lines += ["", f"MoExtend on vision-audio, {len(seeds)} seeds ({', '.join(map(str, seeds))}), {budget} steps a "
              "stage; mean [95% bootstrap interval over seeds]; Δ: paired difference against the default over the "
              "same seeds [paired t-interval], Holm-adjusted p over the variants; 'tie' where p >= 0.05."]
    return "\n".join(lines) + "\n"


def main() -> None:
    from cl_bench.results import check_markers, write_between

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--results-dir", default="results/ablations")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--variants", nargs="+", default=None, help="variant names (default: all)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--pretrain-steps", type=int, default=None,
                    help="pre-training steps of the base (default: the shipped base's)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every run (part of its key)")
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--page", "--readme", dest="page", type=Path, default=None,
                    help=f"write the table into this page between its markers (the published one: {PAGE})")
    a = ap.parse_args()
    if a.page:
        check_markers(a.page, BEGIN, END, "ablation table", home=PAGE)
    chosen = VARIANTS if a.variants is None else [v for v in VARIANTS if v[0] in a.variants or v[0] == VARIANTS[0][0]]
    docs = run_variants(chosen, a.seeds, a.results_dir, a.steps, a.pretrain_steps, a.eval_limit, a.cache_dir,
                        a.threads)
    text = table(docs)
    from cl_bench.results import atomic_write_text

    atomic_write_text(Path(a.results_dir) / "moextend.md", text)
    print(text)
    if a.page:
        write_between(a.page, BEGIN, END, text, "ablation table", home=PAGE)


if __name__ == "__main__":
    from cl_bench.errors import script_main

    script_main(main)

"""MoExtend's ablations on the default stream: one option changed at a time, against the default.

Usage: python bench/ablations.py [--seeds 0 1 2 3 4] [--threads 2] [--results-dir results/ablations]
                                 [--page docs/strategies.md --page README.md]
                                 [--variants NAME ...]

Every variant runs the whole stream for every seed (finished runs are reused, so the bench
can be stopped and run again). Per variant: ACC, each task's final test accuracy, text's
validation accuracy right after the first surgery minus after the first alignment (the
surgery's own effect, from the stages' checkpoints), and the paired difference in ACC and
in final text accuracy against the default over shared seeds (paired t-interval, Holm-
adjusted p over the variants). Writes RESULTS_DIR/moextend.md and, with --page (repeatable), each
page's ablation table and findings (the conclusions as sentences: MoExtend's text forgetting and
what keeps text tokens off its additions) between their markers (--readme is the option's former
name).
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
# A page gets whichever of the two sections it has markers for: the table (ablations) and the findings
# (ablation-findings: docs/strategies.md and the README, "<!-- ablation-findings:begin ... -->")
SECTIONS = ("ablations", "ablation-findings")


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


def compared(docs: dict[str, dict]) -> dict:
    """What the table and the findings read: the shared seeds, each variant's per-seed ACC, final accuracies and
    surgery effects, and each variant's paired comparison with the default (the first variant) on ACC and on final
    text accuracy, with Holm-adjusted p over the variants."""
    import numpy as np

    from cl_bench.analysis.stats import holm, paired_comparison

    names = list(docs)
    tasks = [t["name"] for t in next(iter(docs[names[0]].values()))["stream"]["tasks"]]
    seeds = sorted(set.intersection(*(set(d) for d in docs.values())))

    def values(name, f):
        return np.array([f(docs[name][s]) for s in seeds], dtype=float)

    acc = {n: values(n, lambda doc: doc["metrics"]["acc"]) for n in names}
    final = {n: [values(n, lambda doc, j=j: doc["accuracy_matrix"][-1][j]) for j in range(len(tasks))] for n in names}
    base, others = names[0], names[1:]
    comps = {n: (paired_comparison(acc[n], acc[base]), paired_comparison(final[n][0], final[base][0]))
             for n in others}
    p_acc = dict(zip(others, holm([comps[n][0].p_value for n in others])))
    p_text = dict(zip(others, holm([comps[n][1].p_value for n in others])))
    first = docs[base][seeds[0]]
    return {"names": names, "tasks": tasks, "seeds": seeds, "acc": acc, "final": final,
            "surgery": {n: values(n, surgery_effect) for n in names}, "comps": comps, "p_acc": p_acc,
            "p_text": p_text, "base_text": first["accuracy_matrix"][0][0], "steps": first["config"]["budget"]["steps"]}


def table(docs: dict[str, dict]) -> str:
    import numpy as np

    from cl_bench.analysis.stats import bootstrap_ci

    c = compared(docs)
    names, tasks, seeds, comps = c["names"], c["tasks"], c["seeds"], c["comps"]

    def cell(v):
        ci = bootstrap_ci(v)  # inside [min, max] of the seeds' values, so inside [0, 1]
        return f"{ci.mean:.3f}" if math.isnan(ci.low) else f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]"

    def versus(d, p):
        if math.isnan(d.low):
            return f"{d.mean_diff:+.3f}"
        shown = "p < 0.001" if p < 0.001 else f"p {p:.2g}"
        return f"{d.mean_diff:+.3f} [{d.low:+.3f}, {d.high:+.3f}], {shown}: {_verdict(d, p)}"

    head = (["variant", "ACC"] + [f"{t} (final)" for t in tasks] + ["text: surgery's effect (val)",
                                                                     "ΔACC vs default", "Δtext vs default"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        row = [n, cell(c["acc"][n])] + [cell(v) for v in c["final"][n]]
        eff = c["surgery"][n]
        row.append(f"{np.nanmean(eff):+.3f}" if np.isfinite(eff).any() else "n/a")
        row += (["-", "-"] if n == names[0] else [versus(comps[n][0], c["p_acc"][n]),
                                                  versus(comps[n][1], c["p_text"][n])])
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"MoExtend on vision-audio, {len(seeds)} seeds ({', '.join(map(str, seeds))}), {c['steps']} steps a "
              "stage; mean [95% bootstrap interval over seeds]; Δ: paired difference against the default over the "
              "same seeds [paired t-interval], Holm-adjusted p over the variants; 'tie' where p >= 0.05."]
    return "\n".join(lines) + "\n"


def _verdict(d, p: float) -> str:
    return "tie" if not p < 0.05 else ("better" if d.mean_diff > 0 else "worse")


# The findings' groups: the variants that keep text tokens off the additions, and those that rehearse text (the
# question the ablation answers: does MoExtend forget text because its additions act on text's own tokens?)
GROUPS = (("Keeping text tokens off the additions", ("scope=input", "scope=input-after", "router-init=outside")),
          ("Rehearsing text during fine-tuning, declared as rehearsal", ("text-mix=0.1", "text-mix=0.25")))


def findings(docs: dict[str, dict]) -> list[str]:
    """The ablation's conclusions, one sentence each, computed from the runs as the table is: MoExtend's text
    forgetting at its defaults, and each group of GROUPS against the default (final text accuracy, on how many
    seeds it is higher, Holm-adjusted p and the verdict; ACC alike)."""
    import numpy as np

    c = compared(docs)
    default, n = c["names"][0], len(c["seeds"])
    text0 = c["final"][default][0]
    eff0 = c["surgery"][default]
    out = [f"MoExtend at its defaults ({n} seeds) ends with final text accuracy {text0.mean():.3f} against the "
           f"base's {c['base_text']:.3f}"
           + (f"; its surgery alone moves text validation accuracy by {np.nanmean(eff0):+.3f} before fine-tuning."
              if np.isfinite(eff0).any() else ".")]

    def tested(names: list[str], index: int, values) -> str:
        """Means, seeds higher and Holm-adjusted verdicts of `names` on ACC (index 0) or final text (1)."""
        means = ", ".join(f"{values[m].mean():.3f}" for m in names)
        ref = f"the default's {values[default].mean():.3f}"
        if n < 2:
            return f"{means} against {ref} (one seed: no test)"
        higher = ", ".join(str(int((values[m] > values[default]).sum())) for m in names)
        ds = [c["comps"][m][index] for m in names]
        ps = [(c["p_acc"], c["p_text"])[index][m] for m in names]
        verdicts = [{"tie": "a tie", "better": "higher", "worse": "lower"}[_verdict(d, p)] for d, p in zip(ds, ps)]
        said = ("each a tie" if len(names) > 1 else "a tie") if set(verdicts) == {"a tie"} else ", ".join(verdicts)
        shown = ", ".join("< 0.001" if p < 0.001 else f"{p:.2g}" for p in ps)
        return f"{means} against {ref}, higher on {higher} of {n} seeds (Holm-adjusted p {shown}: {said})"

    text = {m: v[0] for m, v in c["final"].items()}
    for label, group in GROUPS:
        present = [m for m in group if m in c["comps"]]
        if present:
            out.append(f"{label} ({', '.join(present)}): final text accuracy {tested(present, 1, text)}; ACC "
                       f"{tested(present, 0, c['acc'])}.")
    return out


def findings_markdown(docs: dict[str, dict]) -> str:
    return "".join(f"- {line}\n" for line in findings(docs))


def main() -> None:
    from cl_bench.reporting.page import sections_present, write_sections

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
    ap.add_argument("--page", "--readme", dest="pages", type=Path, action="append", default=[],
                    help="write the table and/or the findings into this page between their markers (repeatable; "
                         f"the published ones: {PAGE} and README.md)")
    a = ap.parse_args()
    for page in a.pages:
        sections_present(page, SECTIONS, "ablation table or findings", home=PAGE)
    chosen = VARIANTS if a.variants is None else [v for v in VARIANTS if v[0] in a.variants or v[0] == VARIANTS[0][0]]
    docs = run_variants(chosen, a.seeds, a.results_dir, a.steps, a.pretrain_steps, a.eval_limit, a.cache_dir,
                        a.threads)
    text = table(docs)
    from cl_bench.results import atomic_write_text

    bodies = {"ablations": text, "ablation-findings": findings_markdown(docs)}
    atomic_write_text(Path(a.results_dir) / "moextend.md", text + "\n" + bodies["ablation-findings"])
    print(text + "\n" + bodies["ablation-findings"])
    for page in a.pages:
        write_sections(page, bodies, "ablation table or findings", home=PAGE)


if __name__ == "__main__":
    from cl_bench.errors import script_main

    script_main(main)

"""Plain-text summary of a result document (no torch needed)."""

from __future__ import annotations


# Seconds per training example of full fine-tuning on the CPU, measured by `python bench/step_time.py --steps 60`
# (2-core CPU, 2 threads, batch 32, 2026-11-29: 0.07 s a step). A run whose steps take SLOW_FACTOR times longer per
# example is sharing its CPUs with other work (or running more threads than cores).
REFERENCE_SECONDS_PER_EXAMPLE = {"mixtral-tiny": 0.07 / 32}
SLOW_FACTOR = 10


def slow_steps_warning(result: dict) -> str | None:
    """A warning line when a CPU run of a benchmarked preset trained far slower than the benchmark, else None."""
    ref = REFERENCE_SECONDS_PER_EXAMPLE.get(result["config"].get("model"))
    env = result.get("environment") or {}
    if ref is None or not str(env.get("device", "")).startswith("cpu"):
        return None
    rates = [s["train_stats"]["seconds_per_step"] / result["config"]["budget"]["batch_size"]
             for s in result["stages"] if (s.get("train_stats") or {}).get("seconds_per_step")]
    if not rates or max(rates) < SLOW_FACTOR * ref:
        return None
    return (f"warning: training steps took {max(rates) / ref:.0f}x the benchmark's time per example "
            f"(bench/step_time.py: {ref * 32:.2f} s a step of 32 on a 2-core CPU); other processes may be using "
            f"these CPUs: this run used {env.get('torch_threads')} thread(s); run fewer at once, or give each "
            "fewer with --threads N")


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1f}%" if pct else f"{v:.3f}"


def format_summary(result: dict, path=None) -> str:
    tasks = [t["name"] for t in result["stream"]["tasks"]]
    rows = result["accuracy_matrix"]
    labels = ["base"] + [f"after {s['experience']}" for s in result["stages"]]
    w = max(len(x) for x in labels) + 2
    st = result["stream"]
    order = st.get("order")
    reordered = f", order {' > '.join(order)}" if order and order != st.get("default_order", order) else ""
    out = [f"{result['config']['strategy']} on {st['name']} "
           f"(model {result['config']['model']}, seed {result['seed']}{reordered})", "",
           "accuracy matrix R[stage, task]:",
           " " * w + "".join(f"{t:>10}" for t in tasks)]
    for label, row in zip(labels, rows):
        out.append(f"{label:<{w}}" + "".join(f"{a:>10.3f}" for a in row))
    out.append(f"{'chance':<{w}}" + "".join(f"{t['chance']:>10.3f}" for t in result["stream"]["tasks"]))
    for name, vals in result.get("extra_accuracy", {}).items():
        out.append(f"{name} accuracy by row: " + " ".join(f"{v:.3f}" for v in vals))
    m = result["metrics"]
    out += ["", f"ACC {_fmt(m['acc'])}   BWT {_fmt(m['bwt'])}   FWT {_fmt(m['fwt'])} (vs base)   "
                f"forgetting {_fmt(m['forgetting'])}   text retention {_fmt(m['text_retention'], True)}", ""]
    out.append(f"{'stage':<12}{'train s':>9}{'s/step':>9}{'trainable':>12}{'added':>10}{'total':>12}")
    for s in result["stages"]:
        c = s["cost"]
        out.append(f"{s['experience']:<12}{s['train_seconds']:>9.1f}{s['train_stats'].get('seconds_per_step', 0):>9.3f}"
                   f"{c['trainable']:>12,}{c['added']:>10,}{c['total']:>12,}")
    for s in result["stages"]:
        if s["train_stats"].get("summary"):
            out.append(f"  {s['experience']}: {s['train_stats']['summary']}")
    t = result["timing"]
    out.append(f"\nset-up (data + base model) {t['setup_seconds']:.1f} s, training {t['train_seconds']:.1f} s, "
               f"this process {t['this_process_seconds']:.1f} s")
    if (warning := slow_steps_warning(result)) is not None:
        out.append(warning)
    if path is not None:
        out.append(f"result file: {path}")
    return "\n".join(out)

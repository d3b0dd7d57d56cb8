"""Plain-text summary of a result document (no torch needed)."""

from __future__ import annotations


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
    if path is not None:
        out.append(f"result file: {path}")
    return "\n".join(out)

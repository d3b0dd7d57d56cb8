"""The strategy contract, checked on a tiny run: what `clbench validate` and the test suite run."""

from __future__ import annotations

from pathlib import Path

from cl_bench.errors import ClbenchError
from cl_bench.results import check_result

def check_declaration(result: dict) -> list[str]:
    """What the run spent and kept must match what the strategy declares (schema 2)."""
    d = result.get("declaration") or {}
    problems = []
    for s in result["stages"]:
        t, m, name = s.get("training") or {}, s.get("memory") or {}, s.get("experience")
        if d.get("budget") == "equal" and t.get("examples") != t.get("budget_examples"):
            problems.append(f"stage {name}: trained on {t.get('examples')} examples, the stage budget is "
                            f"{t.get('budget_examples')}; spend the budget, or declare what is spent instead "
                            "(Declaration.budget)")
        for key, flag, what in (("past_train_items", "past_train", "training items"),
                                ("past_val_items", "past_val", "validation items")):
            kept = sum((m.get(key) or {}).values())
            if kept and not d.get(flag):
                problems.append(f"stage {name}: keeps {kept} {what} of past tasks but does not declare {flag}")
        if m.get("task_weight_bytes") and not d.get("task_weights"):
            problems.append(f"stage {name}: keeps {m['task_weight_bytes']} bytes of per-task weights but does not "
                            "declare task_weights")
    return problems


def _check_routing(strategy) -> list[str]:
    """Does the LM answer text differently depending on which task's model is asked? That is
    modality routing, and it must match the declaration."""
    import torch

    from cl_bench.api.training import TaskData

    base = strategy.context.base
    if base is None:
        return []
    with torch.no_grad():
        outputs = []
        for task in strategy.context.tasks:
            model = strategy.model_for(task)
            data = TaskData(base.val.select(range(min(8, len(base.val)))), model, "text")
            batch = data.batch(range(len(data))).to(strategy.context.device)
            model.eval()
            outputs.append(model.lm(input_ids=batch.ids, attention_mask=batch.attention).logits.float().cpu())
    routed = any(not torch.equal(outputs[0], o) for o in outputs[1:])
    declared = strategy.declaration().modality_routed
    if routed and not declared:
        return ["the LM's answers to the same text differ by the task asked for (model_for): the strategy routes "
                "by modality at test time but does not declare modality_routed"]
    if declared and not routed:
        return ["the strategy declares modality_routed, but model_for gives the same LM for every task"]
    return []


def validate_stream(stream: str, options: dict | None = None, encoders: dict | None = None,
                    cache_dir: str | None = None, order: str | None = None, progress: bool = False) -> list[str]:
    """Check a stream alone (empty list: well formed): it loads, builds and passes `cl_bench.streams.base.check`,
    and every new task's encoder reads its inputs into (items, tokens, out_dim) features."""
    import torch

    from cl_bench.streams import base as streams

    from cl_bench.streams import resolve
    from cl_bench.models.encoders import build_encoder

    s, ts = resolve.load(stream, options, order, cache_dir, progress=progress)  # raises on a malformed stream
    names = streams.encoder_names(s, ts, encoders)
    problems = []
    for e in ts.experiences:
        name = names[e.modality]
        try:
            enc = build_encoder(e.modality, name)
        except (ValueError, TypeError, LookupError, ClbenchError) as err:
            problems.append(f"task {e.name!r}: {err}")
            continue
        for split in ("train", "val", "test"):
            raw = list(getattr(e, split).select(range(min(4, len(getattr(e, split)))))["input"])
            try:
                with torch.no_grad():
                    out = enc(enc.featurize(raw))
            except Exception as err:  # noqa: BLE001 - any failure of a plug-in's encoder is the finding
                problems.append(f"task {e.name!r} {split} split: encoder {enc.name or type(enc).__name__!r} fails on "
                                f"its inputs: {type(err).__name__}: {err}")
                break
            if out.ndim != 3 or out.shape[0] != len(raw) or out.shape[1] < 1 or out.shape[2] != enc.out_dim:
                problems.append(f"task {e.name!r} {split} split: encoder gives shape {tuple(out.shape)}, not "
                                f"({len(raw)}, tokens >= 1, out_dim {enc.out_dim})")
                break
            if not torch.isfinite(out).all():
                problems.append(f"task {e.name!r} {split} split: encoder output has NaN or inf")
                break
    return problems


def validate(strategy: str, stream: str = "vision-audio", cache_dir: str | None = None,
             results_dir: str | None = None, steps: int = 2, options: dict | None = None,
             stream_options: dict | None = None, encoders: dict | None = None, order: str | None = None) -> list[str]:
    """Run `strategy` on a tiny budget and return every broken promise (empty: the contract holds).

    Checks that the parameters the strategy declares frozen are bit-identical after the
    run, that its cost report adds up, and that the result file is complete.
    """
    import tempfile

    import torch

    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.runner import RunConfig, run

    snapshot: list = []  # (name, parameter, its value after setup) of every parameter of the model
    frozen_ids: set[int] = set()
    changed: list[tuple[str, int]] = []  # (name, elements) of the parameters that changed during the run
    problems: list[str] = []

    def inspect(event, strat):
        if event == "setup":
            snapshot.extend((n, p, p.detach().clone()) for n, p in strat.model.named_parameters())
            frozen = strat.frozen()
            frozen_ids.update(id(p) for p in frozen)
            named = {id(p) for _, p, _ in snapshot}
            snapshot.extend((f"(frozen parameter {i})", p, p.detach().clone())
                            for i, p in enumerate(frozen) if id(p) not in named)
        else:
            changed.extend((n, p.numel()) for n, p, before in snapshot if not torch.equal(p, before))
            bad = [n for n, p, before in snapshot if id(p) in frozen_ids and not torch.equal(p, before)]
            if bad:
                problems.append(f"{len(bad)} of the {len(frozen_ids)} parameters declared frozen changed: "
                                + ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else ""))
            problems.extend(_check_routing(strat))

    results_dir = results_dir or tempfile.mkdtemp(prefix="clbench-validate-")
    config = RunConfig(stream=stream, strategy=strategy, budget=Budget(steps=steps, batch_size=4),
                       pretrain=PretrainConfig(steps=5, batch_size=8), strategy_options=options or {},
                       stream_options=stream_options or {}, encoders=encoders or {}, order=order,
                       eval_limit=64,  # the contract needs no precise accuracy
                       results_dir=results_dir, cache_dir=cache_dir, device="cpu")
    result, path = run(config, progress=False, restart=True, inspect=inspect)
    # What the strategy reports as trainable must cover what changed: a stage trains at most what it reports.
    reported = sum(st["cost"]["trainable"] for st in result["stages"])
    moved = sum(n for _, n in changed)
    if moved > reported:
        problems.append(f"the strategy reports {reported:,} trainable parameters over its stages (Strategy.cost), "
                        f"but {moved:,} changed: " + ", ".join(n for n, _ in changed[:5])
                        + (", ..." if len(changed) > 5 else ""))
    problems += check_result(result)
    problems += check_declaration(result)
    if not Path(path).exists():
        problems.append(f"no result file at {path}")
    return problems

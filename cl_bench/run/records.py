"""What a run records: each stage's training, memory and timing, and the result document written at the end."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

from cl_bench import registry
from cl_bench.config import Budget
from cl_bench.errors import PluginError
from cl_bench.results import SCHEMA_VERSION, environment


def training_record(phases: list[dict], budget: Budget) -> dict:
    """A stage's training, summed over its phases, against the budget of training examples."""
    total = {k: sum(p[k] for p in phases) for k in ("steps", "examples", "tokens", "flops")}
    return {**total, "budget_examples": budget.examples,
            "budget_ratio": round(total["examples"] / budget.examples, 6), "phases": phases}


def memory_record(memory, stream, current: str, plugin: str = "the strategy") -> dict:
    """The strategy's Memory of tasks other than the stage's own, each also as a share of its split; a
    PluginError naming `plugin` (the strategy) when it names tasks the stream does not have."""
    sizes = {t.name: (len(t.train), len(t.val)) for t in stream.tasks}
    for items in (memory.past_train_items, memory.past_val_items):
        unknown = set(items) - set(sizes)
        if unknown:
            raise PluginError(plugin, f"its memory names tasks that are not in the stream: {sorted(unknown)}")
    train = {k: v for k, v in memory.past_train_items.items() if k != current}
    val = {k: v for k, v in memory.past_val_items.items() if k != current}

    def share(items: dict, k: int) -> dict:
        return {name: round(n / sizes[name][k], 6) if sizes[name][k] else None for name, n in items.items()}

    return {"past_train_items": train, "past_val_items": val, "past_train_share": share(train, 0),
            "past_val_share": share(val, 1), "task_weight_bytes": memory.task_weight_bytes}


def divergence_message(strategy_name: str, strategy, stage: int, name: str, e) -> str:
    """One line for a stage whose training diverged, naming the options most likely to blame."""
    changed = [f"{f.name.replace('_', '-')}={getattr(strategy.config, f.name)!r} (default {f.default!r})"
               for f in dataclasses.fields(strategy.config)
               if f.default is not dataclasses.MISSING and getattr(strategy.config, f.name) != f.default]
    rates = [c for c in changed if "lr" in c.split("=")[0]]
    named = rates or changed
    cause = (f"likely cause: {', '.join(named)}; set {'it' if len(named) == 1 else 'them'} nearer the default "
             "and run again"
             if changed else "at the strategy's default options; try a lower learning rate (-o lr=...)")
    return (f"strategy {strategy_name!r} diverged in stage {stage} ({name}): {e}; {cause}. "
            f"No result file was written (finished stages stay resumable)")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_WHERE: dict | None = None


def where() -> dict:
    """The clbench commit of this process (recorded per stage; computed once per process)."""
    global _WHERE
    if _WHERE is None:
        from cl_bench.results import git_commit

        _WHERE = {"git_commit": git_commit()}
    return _WHERE


def sources(config) -> dict:
    """Where the strategy and the stream came from: their entry point and its distribution and version."""
    from cl_bench.streams import files

    stream = ({"file": str(Path(config.stream).resolve())} if files.is_stream_file(config.stream)
              else registry.streams.entry(config.stream).record())
    return {"strategy": registry.strategies.entry(config.strategy).record(), "stream": stream}


def generated_items(state: dict, evaluator) -> dict:
    """Generated scoring's decoded answers and their references, for the result file: predictions[i][j][k] is
    item k of task j as decoded after stage i, references[j][k] its reference, so that
    cl_bench.analysis.scoring.rescore gives the accuracy matrix again; empty for teacher-forced scoring."""
    if state.get("predictions") is None:
        return {}
    return {"predictions": state["predictions"], "references": evaluator.references}


def result_document(*, config, key: str, strategy, stream_obj, stream, default_order, encoders, evaluator, base,
                    plan, state: dict, metrics: dict, setup_seconds: float, process_seconds: float,
                    device) -> dict:
    """The result file's document (schema cl_bench.results.SCHEMA_VERSION): everything needed to recompute
    every metric, and where, when and how the run was made."""
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "complete",
        "created": now(),
        "run_key": key,
        "config": {**dataclasses.asdict(config), "strategy_options": dataclasses.asdict(strategy.config)},
        "seed": config.seed,
        "stream": {"name": stream.name, "order": list(stream.order), "default_order": list(default_order),
                   "options": dataclasses.asdict(stream_obj.config), "tasks": [
            {"name": t.name, "modality": t.modality, "task": t.task, "chance": t.chance,
             "encoder": f"{type(encoders[t.modality]).__module__}:{type(encoders[t.modality]).__name__}"
             if t.modality in encoders else None,
             "n_train": len(t.train), "n_val": len(t.val), "n_test": len(d)} for t, d in evaluator.tasks]},
        "base_model": base.info,
        "accuracy_matrix": state["rows"],
        # how answers were scored: teacher-forced, or generated and scored by a named, versioned scorer
        "scoring": evaluator.record(),
        # rows[i][j]: which test items of task j were answered correctly after stage i (cl_bench.results.unpack_items)
        "item_results": {"encoding": "packbits-little-base64", "rows": state["items"],
                         **generated_items(state, evaluator)},
        "extra_accuracy": state["extra"],
        # rows[i]: after stage i, per MoE layer the share of each task's test tokens routed to each expert
        # (top-k slots), with the layers' indices and the stage that added each expert (-1: the model's own);
        # None for a model without MoE layers (cl_bench.models.routing)
        "routing": {"rows": state["routing"]},
        "declaration": dataclasses.asdict(strategy.declaration()),
        # the memory plan printed at the start (cl_bench.run.plan): what the run was expected to need
        "plan": plan.record(),
        "metrics": {**metrics, "fwt_reference": "base"},
        "stages": state["stages"],
        "timing": {"setup_seconds": round(setup_seconds, 3), "row0_eval_seconds": state["row0_eval_seconds"],
                   # row 0: evaluated by this run ("own"), or shared (cl_bench.run.shared): "computed" here and
                   # stored, or "stored" by an earlier run
                   "row0_source": state.get("row0_source", "own"),
                   "train_seconds": round(sum(s["train_seconds"] for s in state["stages"]), 3),
                   "resumed_at_stages": state.get("resumed_at_stages", []),
                   "this_process_seconds": round(process_seconds, 3)},
        # where the strategy and the stream came from: their entry point and its distribution and version
        "environment": {**environment(device), "sources": sources(config)},
    }

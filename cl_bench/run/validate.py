"""The strategy contract, checked on a tiny run: what `clbench validate` and the test suite run."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path

from cl_bench.errors import ClbenchError
from cl_bench.results import check_result
from cl_bench.run.encoder_check import encode, encoder_label, shape_problem


def check_declaration(result: dict) -> list[str]:
    """What the run spent and kept must match what the strategy declares (schema 2). The examples trained on are the
    runner's measurement where the stage has one (training.measured, cl_bench.run.probe), else what was recorded."""
    d = result.get("declaration") or {}
    problems = []
    for s in result["stages"]:
        t, m, name = s.get("training") or {}, s.get("memory") or {}, s.get("experience")
        measured, budget = (t.get("measured") or {}).get("examples"), t.get("budget_examples")
        if d.get("budget") == "equal" and measured is not None and measured > budget:
            problems.append(f"stage {name}: budget overrun: trained on {measured} examples, the stage budget is "
                            f"{budget} (measured by the runner); spend the budget, or declare what is spent instead "
                            "(Declaration.budget)")
        elif d.get("budget") == "equal" and t.get("examples") != budget:
            problems.append(f"stage {name}: trained on {t.get('examples')} examples, the stage budget is "
                            f"{budget}; spend the budget, or declare what is spent instead (Declaration.budget)")
        if measured is not None and measured != t.get("examples"):
            problems.append(f"stage {name}: records {t.get('examples')} training examples (Strategy.record_training) "
                            f"but the runner measured {measured}: record every phase as it is trained")
        for key, flag, what in (("past_train_items", "past_train", "training items"),
                                ("past_val_items", "past_val", "validation items")):
            kept = sum((m.get(key) or {}).values())
            if kept and not d.get(flag):
                problems.append(f"stage {name}: keeps {kept} {what} of past tasks but does not declare {flag}")
        if m.get("task_weight_bytes") and not d.get("task_weights"):
            problems.append(f"stage {name}: keeps {m['task_weight_bytes']} bytes of per-task weights but does not "
                            "declare task_weights")
    return problems


def _named(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def check_data_use(result: dict) -> list[str]:
    """The data each stage touched, as the runner measured it (training.measured.trained / read, by "task/split"),
    against the protocol: no test item ever; earlier tasks' training items trained on only with past_train, their
    validation items read only with past_val; no item of a task still to come."""
    d = result.get("declaration") or {}
    tasks = [t["name"] for t in result["stream"]["tasks"]]  # column order: base text task, then the learning order
    problems = []
    for s in result["stages"]:
        measured, name = (s.get("training") or {}).get("measured") or {}, s.get("experience")
        if "trained" not in measured:
            continue  # measured without the stream's item identities (a run outside validate)
        now = tasks.index(name)
        trained, read = measured["trained"], measured["read"]

        def of(counts: dict, which, split: str) -> dict:
            return {k: v for k, v in counts.items() if k.endswith("/" + split) and k.split("/")[0] in which}

        test = {k: v for k, v in read.items() if k.endswith("/test")}
        if test:
            on = {k: v for k, v in trained.items() if k.endswith("/test")}
            problems.append(f"stage {name}: the strategy used test items ({_named(test)} batched"
                            + (f"; trained on {_named(on)}" if on else "") + "): strategies never see test data, "
                            "the runner alone evaluates on it")
        past_train = of(trained, tasks[:now], "train")
        if past_train and not d.get("past_train"):
            problems.append(f"stage {name}: trains on earlier tasks' training items ({_named(past_train)}) but does "
                            "not declare past_train")
        past_val = of(read, tasks[:now], "val")
        if past_val and not d.get("past_val"):
            problems.append(f"stage {name}: uses earlier tasks' validation items ({_named(past_val)}) but does not "
                            "declare past_val")
        future = {**of(read, tasks[now + 1:], "train"), **of(read, tasks[now + 1:], "val")}
        if future:
            problems.append(f"stage {name}: uses items of tasks still to come ({_named(future)}): a stage learns "
                            "from what the stream has shown so far")
    return problems


def _logits(model, batch):
    """The LM's logits (B, L, V) on `batch`, through the model's inputs (batch hooks included)."""
    with model.autocast():
        embeds, _ = model.inputs(batch)
        return model.lm(inputs_embeds=embeds, attention_mask=batch.attention).logits.float().cpu()


def _same(a, b) -> bool:
    """Whether two answers (logits, or the error a model raised) are identical."""
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.equal(a, b)
    return a == b if isinstance(a, str) and isinstance(b, str) else False


def _check_routing(strategy, stream) -> list[str]:
    """Does the LM answer the same items differently depending on the task it is asked for (model_for), or on the
    modality label a text batch carries (what batch hooks read)? That is routing, for every task's items, and it
    must match the declaration: answers that differ between two tasks of one modality are routing by task
    (task_routed); otherwise differing answers are routing by modality (modality_routed). A non-text batch keeps its
    own label: it picks the projector, which every strategy does."""
    import dataclasses

    import torch

    from cl_bench.api.training import TaskData

    ctx = strategy.context
    modalities = [t.modality for t in stream.tasks]
    found: list[str] = []
    by_task_in_modality: list[str] = []
    with torch.no_grad():
        for item_task in stream.tasks:
            split = item_task.val.select(range(min(8, len(item_task.val))))
            data = TaskData(split, strategy.model, item_task.modality)
            batch = data.batch(range(len(data))).to(ctx.device)
            labels = modalities if item_task.modality == "text" else [item_task.modality]
            outputs = {}
            for task in ctx.tasks:
                model = strategy.model_for(task)
                model.eval()
                for label in labels:
                    try:
                        outputs[(task.name, label)] = _logits(model, dataclasses.replace(batch, modality=label))
                    except Exception as err:  # noqa: BLE001 - a model that cannot answer another task's items routes
                        outputs[(task.name, label)] = f"{type(err).__name__}: {err}"
            tasks = [t.name for t in ctx.tasks]
            by_task = any(not _same(outputs[(t, label)], outputs[(tasks[0], label)]) for t in tasks for label in labels)
            by_label = any(not _same(outputs[(t, label)], outputs[(t, labels[0])]) for t in tasks for label in labels)
            how = [w for w, on in (("the task asked for (model_for)", by_task),
                                   ("the modality label of the batch (batch hooks)", by_label)) if on]
            if how:
                found.append(f"{item_task.name} items differ by {' and '.join(how)}")
            for a, b in itertools.combinations(ctx.tasks, 2):
                if a.modality == b.modality != "text" and any(
                        not _same(outputs[(a.name, label)], outputs[(b.name, label)]) for label in labels):
                    by_task_in_modality.append(f"{item_task.name} items differ between {a.name} and {b.name}, "
                                               f"both {a.modality}")
    d = strategy.declaration()
    if by_task_in_modality and not d.task_routed:
        return [(f"the LM's answers to the same items differ between two tasks of one modality "
                 f"({'; '.join(by_task_in_modality[:3])}): the strategy routes by task at test time but does not "
                 "declare task_routed")]
    if found and not (d.modality_routed or d.task_routed):
        return [(f"the LM's answers to the same items differ ({'; '.join(found)}): the strategy routes by modality "
                "at test time but does not declare modality_routed")]
    if (d.modality_routed or d.task_routed) and not found:
        which = "modality_routed" if d.modality_routed else "task_routed"
        return [(f"the strategy declares {which}, but its LM answers every item the same whichever task or "
                "modality label it is asked with")]
    if d.task_routed and not by_task_in_modality and any(
            a.modality == b.modality != "text" for a, b in itertools.combinations(ctx.tasks, 2)):
        return [("the strategy declares task_routed, but its LM answers two tasks of one modality the same: it "
                 "routes by modality (declare modality_routed)")]
    return []


# What libraries clbench depends on write under HOME the first time they are imported on a machine, whoever imports
# them (avalanche's config, matplotlib's font cache and config directory): not counted as the run's writes.
LIBRARY_HOME_FILES = (".avalanche/", ".cache/matplotlib/", ".config/matplotlib")


@contextlib.contextmanager
def _empty_home(problems: list[str]):
    """HOME set to an empty directory for the block: whatever appears in it (LIBRARY_HOME_FILES aside) was written
    outside the cache and results directories, where a run writes."""
    home = Path(tempfile.mkdtemp(prefix="clbench-validate-home-"))
    before = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = before
        written = sorted(p.relative_to(home).as_posix() for p in home.rglob("*")
                         if p.is_file() or p.is_symlink() or (p.is_dir() and not any(p.iterdir())))
        written = [w for w in written if not w.startswith(LIBRARY_HOME_FILES)]
        shutil.rmtree(home, ignore_errors=True)
        if written:
            problems.append(f"the run wrote {len(written)} path(s) under HOME, outside the cache directory: "
                            + ", ".join(f"~/{w}" for w in written[:5]) + (", ..." if len(written) > 5 else "")
                            + "; write only under the cache directory (cl_bench.streams.data.default_cache_dir, "
                            "--cache-dir) or a temporary one")


def validate_stream(stream: str, options: dict | None = None, encoders: dict | None = None,
                    cache_dir: str | None = None, order: str | None = None, progress: bool = False) -> list[str]:
    """Check a stream alone (empty list: well formed): it loads, builds and passes `cl_bench.streams.base.check`,
    no test item is also in a split strategies see, and every new task's encoder reads its inputs into (items,
    tokens, out_dim) features."""
    import torch

    from cl_bench.models.encoders import build_encoder
    from cl_bench.run.probe import test_overlap
    from cl_bench.streams import base as streams
    from cl_bench.streams import resolve

    s, ts = resolve.load(stream, options, order, cache_dir, progress=progress)  # raises on a malformed stream
    names = streams.encoder_names(s, ts, encoders)
    problems = test_overlap(ts)
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
                out = encode(enc, raw)
            except Exception as err:  # noqa: BLE001 - any failure of a plug-in's encoder is the finding
                problems.append(f"task {e.name!r} {split} split: encoder {encoder_label(enc)} fails on its inputs: "
                                f"{type(err).__name__}: {err}")
                break
            problem = shape_problem(tuple(out.shape) if isinstance(out, torch.Tensor) else None, len(raw),
                                    enc.out_dim)
            if problem is not None:
                problems.append(f"task {e.name!r} {split} split: modality {e.modality!r}: encoder "
                                f"{encoder_label(enc)} {problem}")
                break
            if not torch.isfinite(out).all():
                problems.append(f"task {e.name!r} {split} split: encoder output has NaN or inf")
                break
    return problems


def validate(strategy: str, stream: str = "vision-audio", cache_dir: str | None = None,
             results_dir: str | None = None, steps: int = 2, options: dict | None = None,
             stream_options: dict | None = None, encoders: dict | None = None, order: str | None = None,
             pretrain_steps: int = 5, eval_limit: int = 64, threads: int | None = None) -> list[str]:
    """Run `strategy` on a tiny budget and return every broken promise (empty: the contract holds).

    Checks that the parameters the strategy declares frozen are bit-identical after the run, that its cost report
    adds up, that the result file is complete, and, from what the runner measured (cl_bench.run.probe), that it
    trains on the stage budget, never on test items, and on earlier tasks' data only as declared; that its answers
    depend on the task or modality label only where it declares modality routing; that the stream's test splits
    share no item with what strategies see; and that the run writes nothing under HOME (run with HOME set to an
    empty directory) outside the cache.
    """
    import torch

    from cl_bench.api.strategy import strategy_class
    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run import probe
    from cl_bench.run.runner import RunConfig, run
    from cl_bench.streams import resolve
    from cl_bench.streams.data import default_cache_dir

    snapshot: list = []  # (name, parameter, its value after setup) of every parameter of the model
    frozen_ids: set[int] = set()
    changed: list[tuple[str, int]] = []  # (name, elements) of the parameters that changed during the run
    problems: list[str] = []
    # Resolved under the real HOME, before the run's: the cache is where a run may write. The strategy's module and
    # the libraries are imported here too, so that a library's own first-import files are not counted as the run's.
    cache_dir = str(Path(cache_dir).expanduser() if cache_dir else default_cache_dir())
    strategy_class(strategy)
    import transformers  # noqa: F401

    _, ts = resolve.load(stream, stream_options, order, cache_dir, progress=False)
    index = probe.item_index(ts)
    problems += probe.test_overlap(ts, index)

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
            problems.extend(_check_routing(strat, ts))

    results_dir = results_dir or tempfile.mkdtemp(prefix="clbench-validate-")
    config = RunConfig(stream=stream, strategy=strategy, budget=Budget(steps=steps, batch_size=4),
                       pretrain=PretrainConfig(steps=pretrain_steps, batch_size=8), strategy_options=options or {},
                       stream_options=stream_options or {}, encoders=encoders or {}, order=order,
                       eval_limit=eval_limit,  # the contract needs no precise accuracy
                       results_dir=results_dir, cache_dir=cache_dir, device="cpu", threads=threads,
                       shared_cache=False)  # every fit computed here, so that the runner measures it
    with _empty_home(problems):
        result, path = run(config, progress=False, restart=True, inspect=inspect, items=index)
    # What the strategy reports as trainable must cover what changed: a stage trains at most what it reports.
    reported = sum(st["cost"]["trainable"] for st in result["stages"])
    moved = sum(n for _, n in changed)
    if moved > reported:
        problems.append(f"the strategy reports {reported:,} trainable parameters over its stages (Strategy.cost), "
                        f"but {moved:,} changed: " + ", ".join(n for n, _ in changed[:5])
                        + (", ..." if len(changed) > 5 else ""))
    problems += check_result(result)
    problems += check_declaration(result)
    problems += check_data_use(result)
    if not Path(path).exists():
        problems.append(f"no result file at {path}")
    return problems

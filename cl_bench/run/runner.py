"""The runner: build the stream and base model, run the strategy stage by stage, evaluate every
task before the first stage and after each one, and write the result file.

State after each finished stage (accuracy rows, stage records, the strategy's state) is
written atomically to a work directory; running the same configuration again resumes
from the last finished stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from cl_bench import faults, registry
from cl_bench.api.strategy import RunContext
from cl_bench.config import from_options
from cl_bench.errors import EnvironmentProblem, RunFailed, UsageError
from cl_bench.results import atomic_write_json, load_result
from cl_bench.run import keys, records, shared, state, threads
from cl_bench.run.config import RunConfig
from cl_bench.run.device import resolve_device, torch_dtype
from cl_bench.run.evaluation import Evaluator
from cl_bench.run.plan import plan_of
from cl_bench.run.probe import Probe
from cl_bench.streams import base as streams
from cl_bench.streams import resolve
from cl_bench.streams.data import default_cache_dir, stable_hash


def _checkpoint_activations(lm) -> None:
    """transformers' activation checkpointing of every decoder layer (non-reentrant: inputs_embeds need no grad);
    the method was gradient_checkpointing_enable before transformers 5.x renamed it."""
    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _check_writable(directory: Path, results_dir: str) -> None:
    """Make `directory` (inside the results directory); ValueError naming the fix where it cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        writable = os.access(directory, os.W_OK)
    except OSError as e:
        raise EnvironmentProblem(f"results directory {results_dir}: {e.strerror or e}; choose another with "
                                 "--results-dir") from None
    if not writable:
        raise EnvironmentProblem(f"results directory {results_dir} cannot be written; make it writable or choose "
                                 "another with --results-dir")


def run(config: RunConfig, *, progress: bool = True, restart: bool = False,
        echo: Callable[[str], None] = print, inspect: Callable[[str, object], None] | None = None,
        reuse: bool = False, wait: bool = False, items: dict | None = None) -> tuple[dict, Path]:
    """Run `config` end to end; returns the result document and the path it was written to.

    Args:
        progress: print the plan, progress bars and a line per stage.
        restart: ignore a saved state of this run and start over (a complete result is still reused where
            `reuse` asks for it: `clbench sweep --restart` starts only the unfinished cells over).
        echo: where the run's lines go.
        inspect: called with ("setup", strategy) after the strategy's setup and ("end", strategy) after the
            last stage (`clbench validate`).
        reuse: if this exact run's complete result file exists, return it without running (publish, sweep).
        wait: if another process runs the same key, wait for it (else ValueError saying where its state is).
        items: the stream's item identities (cl_bench.run.probe.item_index): each stage's measured training then
            names the task and split of every row it batched (`clbench validate`).
    """
    with contextlib.ExitStack() as held:  # the run key's lock, released however the run ends
        return _run(config, progress, restart, echo, inspect, reuse, wait, held, items)


def _run(config, progress, restart, echo, inspect, reuse, wait, held, items) -> tuple[dict, Path]:
    import torch

    from cl_bench.analysis import metrics
    from cl_bench.run.base import check_model

    t_start = time.perf_counter()
    device = resolve_device(config.device)
    dtype = torch_dtype(config.dtype, device, allow_cpu_half=config.cpu_half_precision)
    # a results directory that cannot be written is said before the data are built and the base pre-trained
    _check_writable(Path(config.results_dir) / "runs", config.results_dir)
    check_model(config.model)  # a missing or unsupported checkpoint too
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    others = threads.present(held, cache)
    n_threads = threads.choose(config.threads, others)
    threads.apply(n_threads)
    if crowded := threads.crowding(config.threads, others):
        echo(crowded)
    strategy_cls, strategy = _make_strategy(config)
    _quiet_libraries()

    t0 = time.perf_counter()
    stream_obj, stream = _stream(config, cache, progress)
    # planned and checked before the base model is loaded or pre-trained: a run that cannot fit costs no more
    plan = plan_of(config, strategy, stream_obj, stream, device, dtype)
    _check_plan(plan, config, len(stream.experiences), n_threads)
    base = _base(config, stream, cache, device, dtype, progress, echo)
    setup_seconds = time.perf_counter() - t0
    if config.threads is None:  # runs started with this one have marked themselves active by now: share again
        n_threads = threads.choose(None, threads.active_runs(cache) - 1)
        threads.apply(n_threads)

    ident = keys.identity(config, strategy, stream_obj, stream, base, cache,
                          threads=n_threads if device.type == "cpu" else None)
    key = stable_hash(ident)
    path = keys.result_path(config, stream.name, key)
    _check_writable(path.parent, config.results_dir)
    state.hold_lock(held, cache, key, wait, echo)
    state.remove_stale(path, cache, key)
    if reuse and (done := _complete_result(path, key)) is not None:
        echo(f"{path}: finished before, reused")
        return done, path

    model, encoders = _model(config, stream_obj, stream, base, device, dtype)
    if progress:
        echo(plan.line())
    evaluator = Evaluator(stream, model, strategy, device, config.eval_batch_size, config.eval_split,
                          config.eval_limit, config.scoring, config.max_new_tokens)
    fits = _fit_store(config, strategy_cls, ident, cache)
    probe = Probe(lambda: strategy.model is not None and strategy.model.training, items)
    strategy.setup(model, RunContext(device=device, seed=config.seed, budget=config.budget, stream=stream.name,
                                     tasks=tuple(t.info for t in stream.tasks), progress=progress,
                                     base=stream.base.without_test(), checkpoint=_checkpoint(evaluator, probe),
                                     fits=fits))
    if inspect:
        inspect("setup", strategy)
    evaluator.prepare()

    work = cache / "runs" / key
    st = _start_or_resume(work, restart, strategy, stream, evaluator, strategy_cls, cache, ident, config, echo)
    for i, exp in enumerate(stream.experiences, start=1):
        if i < len(st["rows"]):
            continue  # finished before a resume
        _stage(i, exp, config, strategy, stream, evaluator, fits, probe, st)
        state.save(work, st, strategy)
        faults.point(f"stage-saved:{i}")
        if progress:
            echo(f"stage {i}/{len(stream.experiences)} {exp.name}: "
                 + ", ".join(f"{t.name} {a:.3f}" for t, a in zip(stream.tasks, st["rows"][-1])))
    if inspect:
        inspect("end", strategy)

    R = torch.tensor(st["rows"], dtype=torch.float64, device=device)
    chance = torch.tensor([t.chance for t in stream.tasks], dtype=torch.float64, device=device)
    result = records.result_document(
        config=config, key=key, strategy=strategy, stream_obj=stream_obj, stream=stream,
        default_order=tuple(type(stream_obj).tasks), encoders=encoders, evaluator=evaluator, base=base, plan=plan,
        state=st, metrics=metrics.summarize(R, chance), setup_seconds=setup_seconds,
        process_seconds=time.perf_counter() - t_start, device=device)
    atomic_write_json(path, result)
    state.retire(work)
    return result, path


def _make_strategy(config: RunConfig):
    """The registered strategy class and an instance with the run's options."""
    from cl_bench.api.strategy import strategy_class

    cls = strategy_class(config.strategy)
    return cls, cls(from_options(cls.Config, config.strategy_options, f"strategy {config.strategy!r}"))


def _stream(config: RunConfig, cache: Path, progress: bool):
    """The stream: its object and what it builds (cached), checked and ordered."""
    stream_obj, stream = resolve.load(config.stream, config.stream_options, config.order, cache, progress=progress)
    smallest = min(stream.experiences + (stream.base,), key=lambda e: len(e.train))
    if config.budget.batch_size > len(smallest.train):  # train() would take the whole split and record the ask
        raise UsageError(f"--batch-size {config.budget.batch_size} is larger than the smallest training split "
                         f"({smallest.name}: {len(smallest.train)} items); use at most {len(smallest.train)}")
    return stream_obj, stream


def _base(config: RunConfig, stream, cache: Path, device, dtype, progress: bool, echo):
    """The stream's base model (a preset's cached, shipped or pre-trained; or the checkpoint's)."""
    from cl_bench.run.base import load_base

    base = load_base(config.model, stream, device, cache, config.pretrain, progress=progress, dtype=dtype, echo=echo)
    if config.gradient_checkpointing:
        _checkpoint_activations(base.lm)
    if config.prompt_format == "chat" and not getattr(base.tokenizer, "chat_template", None):
        raise UsageError(f"--prompt-format chat: the tokenizer of {config.model} has no chat template; use "
                         "--prompt-format plain, or save the tokenizer with one (tokenizer.chat_template)")
    return base


def _complete_result(path: Path, key: str) -> dict | None:
    """The result file at `path` if it is complete and of this run key."""
    if not path.exists():
        return None
    try:
        done = load_result(path)
    except ValueError:
        return None
    return done if done.get("status") == "complete" and done.get("run_key") == key else None


def _model(config: RunConfig, stream_obj, stream, base, device, dtype):
    """The multimodal model: base LM, the stream's encoders (their shapes checked with the plan: plan.plan_of) and
    fresh projectors seeded by the run's seed."""
    import torch

    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.multimodal import MultimodalLM
    from cl_bench.models.pretrained import PretrainedAudio, PretrainedImage

    torch.manual_seed(config.seed)  # projector initialisation
    encoders = {m: build_encoder(m, name, config.encoder_options.get(m))
                for m, name in streams.encoder_names(stream_obj, stream, config.encoders).items()}
    model = MultimodalLM(base.lm, base.tokenizer, encoders).to(device)
    model.prompt_format = config.prompt_format
    if dtype != torch.float32:
        model.compute_dtype = dtype
        for e in model.encoders.values():
            if isinstance(e, (PretrainedImage, PretrainedAudio)):  # frozen: stored in half precision too
                e.to(dtype)
    return model, encoders


def _check_plan(plan, config: RunConfig, stages: int, n_threads: int) -> None:
    """Refuse, in one line with the plan's numbers, a run that would not fit in memory or would take longer than
    config.max_hours, unless config.ignore_plan."""
    from cl_bench.run.plan import estimated_hours, human

    if config.ignore_plan:
        return
    if plan.fits is False:
        raise UsageError(f"the plan's peak is about {human(plan.peak)}, more than 90% of {human(plan.capacity_bytes)} "
                         f"on {plan.device}; lower --batch-size or --eval-batch-size, add --gradient-checkpointing, "
                         "or pass --ignore-plan to run anyway")
    hours = estimated_hours(plan, config.budget.examples * stages, n_threads)
    if hours > config.max_hours:
        raise UsageError(f"the plan estimates at least {hours:,.0f} hours of training ({stages} stages x "
                         f"{config.budget.steps:,} steps x {config.budget.batch_size} examples, "
                         f"{plan.parameters['active']:,} active parameters, {plan.seq_len} tokens), over --max-hours "
                         f"{config.max_hours:g}; lower --steps, raise --max-hours, or pass --ignore-plan")


def _fit_store(config: RunConfig, strategy_cls, ident: dict, cache: Path):
    """The shared fits' store (cl_bench.run.shared) for a strategy that declares shares_fits, else None."""
    from cl_bench.api.strategy import shares_fits

    if not (shared.enabled(config.shared_cache) and shares_fits(strategy_cls)):
        return None
    fit_config = {k: v for k, v in ident["config"].items() if k not in ("strategy", "budget", "eval_split", "eval_limit",
                                                                      "scoring", "max_new_tokens", "scorer")}
    return shared.FitStore(cache, {**{k: v for k, v in ident.items() if k not in ("config", "strategy_options")},
                                   "config": fit_config}, max_mb=config.shared_fit_max_mb)


def _start_or_resume(work: Path, restart: bool, strategy, stream, evaluator, strategy_cls, cache: Path,
                     ident: dict, config: RunConfig, echo) -> dict:
    """The run's state: resumed after its last saved stage, or begun with row 0 (the evaluation before the first
    stage; shared across runs where the strategy's setup keeps the model's outputs) and saved."""
    if restart and work.exists():
        shutil.rmtree(work)
    st = state.load(work, strategy, echo)
    if st is None:
        t0 = time.perf_counter()
        # a shared row 0 keeps no decoded answers: generated scoring evaluates its own
        if (shared.enabled(config.shared_cache) and getattr(strategy_cls, "setup_keeps_outputs", False)
                and config.scoring == "teacher-forced"):
            (row, items, extra, routed), source = shared.row0(cache, shared.row0_key(ident, config.eval_batch_size),
                                                              evaluator.evaluate, len(stream.tasks))
        else:
            (row, items, extra, routed), source = evaluator.evaluate(), "own"
        st = {"rows": [row], "items": [items], "extra": {k: [v] for k, v in extra.items()}, "routing": [routed],
              "stages": [], "row0_source": source,
              "row0_eval_seconds": round(time.perf_counter() - t0, 3), "resumed_at_stages": []}
        if evaluator.predictions is not None:  # generated scoring: the decoded answers, one entry per evaluation
            st["predictions"] = [evaluator.predictions]
        state.save(work, st, strategy)
        return st
    done = len(st["rows"]) - 1
    # A resumed run's stages may come from another process, machine load or commit: the result file says
    # when each stage finished and with which commit, so that nobody takes its timings for an
    # uninterrupted run's unawares.
    st.setdefault("resumed_at_stages", []).append(done)
    if done == len(stream.experiences):
        return st  # every stage finished: nothing to resume, the result is written from the state
    earlier, now = {s.get("git_commit") for s in st["stages"]} - {None}, records.where()["git_commit"]
    if earlier and earlier != {now}:
        echo(f"warning: stages 1-{done} were run by clbench {', '.join(sorted(earlier))}, this is "
             f"{now}; --restart runs the whole stream with this code")
    strategy.resumed([e.without_test() for e in stream.experiences[:done]])
    return st


def _checkpoint(evaluator, probe):
    """Strategy.checkpoint's callable: the runner's evaluation of every validation split, not measured as the
    strategy's data use, and no handle on the evaluator (which holds the test splits)."""

    def checkpoint(label: str) -> None:
        with probe.paused():
            evaluator.checkpoint(label)

    return checkpoint


def _stage(i: int, exp, config: RunConfig, strategy, stream, evaluator, fits, probe, st: dict) -> None:
    """Stage i: the strategy learns the experience (its test split withheld) while the probe measures what it trains
    on, every task is evaluated, and the row and the stage's record are appended to the state `st`."""
    from cl_bench.api.training import Diverged, check_finite

    t0, shared_before = time.perf_counter(), strategy.shared_seconds()
    strategy.take_training_record()  # nothing from before this stage counts towards it
    evaluator.take_checkpoints()
    try:
        with probe.watching():
            stats = strategy.learn(exp.without_test())
        for t in stream.tasks:  # what the stage left, in the model each task is answered by
            check_finite(strategy.model_for(t.info).named_parameters(), "the model after the stage", 1, 1)
    except Diverged as e:
        raise RunDiverged(records.divergence_message(config.strategy, strategy, i, exp.name, e)) from e
    # fits read from the store count what they took when computed: the training time is the method's
    train_seconds = time.perf_counter() - t0 + strategy.shared_seconds() - shared_before
    cost = strategy.cost()
    training = records.training_record(strategy.take_training_record(), config.budget)
    if fits is None:  # measured by the runner; a fit read from the shared store is not run, so not measured
        training["measured"] = probe.record()
    memory = records.memory_record(strategy.memory(), stream, exp.name, registry.strategies.label(config.strategy))
    t0 = time.perf_counter()
    row, items, extra, routed = evaluator.evaluate()
    st["rows"].append(row)
    st["items"].append(items)
    st["routing"].append(routed)
    if evaluator.predictions is not None:
        st["predictions"].append(evaluator.predictions)
    for k, v in extra.items():
        st["extra"][k].append(v)
    st["stages"].append({"stage": i, "experience": exp.name, "modality": exp.modality,
                         "train_seconds": round(train_seconds, 3), "eval_seconds": round(time.perf_counter() - t0, 3),
                         "cost": dataclasses.asdict(cost), "training": training, "memory": memory,
                         # validation accuracies at points inside the stage (Strategy.checkpoint)
                         "checkpoints": evaluator.take_checkpoints(),
                         "train_stats": stats, "finished": records.now(), **records.where(),
                         # each fit shared (cl_bench.run.shared.FitStore): computed here and stored, or stored
                         # by an earlier run; absent when the strategy does not share its fits
                         **({"shared_fits": fits.take_log()} if fits is not None else {})})


class RunDiverged(RunFailed):
    """A stage's training diverged; no result was written."""


def _quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

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
from dataclasses import dataclass, field
from pathlib import Path

from cl_bench import faults, registry
from cl_bench.api.strategy import RunContext
from cl_bench.config import Budget, device_problem, from_options
from cl_bench.models.lm import DEFAULT_MODEL, PretrainConfig
from cl_bench.results import atomic_write_json, load_result
from cl_bench.run import keys, records, shared, state, threads
from cl_bench.run.device import DTYPES, resolve_device, torch_dtype
from cl_bench.run.evaluation import Evaluator
from cl_bench.streams import base as streams
from cl_bench.streams import resolve
from cl_bench.streams.data import default_cache_dir, stable_hash


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run (and so its result file and its resume key)."""

    stream: str = field(default="vision-audio", metadata={"help": "task stream name (`clbench ls`)"})
    strategy: str = field(default="full-ft", metadata={"help": "strategy name (`clbench ls`)"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "preset name or local checkpoint directory"})
    seed: int = field(default=0, metadata={"help": "seed of projector init and training order"})
    device: str = field(default="auto", metadata={"help": "auto (the GPU where there is one), cpu, cuda or cuda:N"})
    budget: Budget = field(default_factory=Budget)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    strategy_options: dict = field(default_factory=dict, metadata={"help": "the strategy's own options"})
    encoders: dict = field(default_factory=dict, metadata={"help": "modality -> encoder name (default per modality)"})
    encoder_options: dict = field(default_factory=dict, metadata={
        "help": "modality -> {option: value} of an encoder loaded from a directory (layer, tokens)"})
    stream_options: dict = field(default_factory=dict, metadata={"help": "the stream's own options"})
    order: str | None = field(default=None, metadata={
        "help": "the order of the stream's new tasks: names (audio,vision) or random:SEED; None: the stream's own"})
    dtype: str = field(default="float32", metadata={
        "help": "float32, or bfloat16 / float16 on a GPU: frozen weights stored in it and every forward under "
                "autocast; trainable parameters and optimizer states float32"})
    prompt_format: str = field(default="plain", metadata={
        "help": "plain (the prompt's text as it is) or chat (the user's turn of the tokenizer's chat template, the "
                "answer as the assistant's reply)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute each decoder layer's activations in the backward pass (less memory, more time)"})
    eval_batch_size: int = field(default=256, metadata={"help": "examples per evaluation batch"})
    eval_split: str = field(default="test", metadata={
        "help": "the split every evaluation scores: test (results) or val (hyperparameter selection, "
                "`clbench tune`: such runs never look at test data)"})
    eval_limit: int | None = field(default=None, metadata={
        "help": "evaluate only the first N items of each test split and probe (quick looks and tests; "
                "such runs get their own key and leaderboard row); None: every item"})
    results_dir: str = field(default="my-results", metadata={
        "help": "where result files go (the published leaderboard's are under results/: `clbench publish`)"})
    cache_dir: str | None = field(default=None, metadata={"help": "data, models and resumable state"})
    threads: int | None = field(default=None, metadata={
        "help": "torch's CPU threads (intra-op; inter-op is 1). Recorded, and part of the run key on the CPU, "
                "since float sums differ across counts; None: the CPUs available to the process shared among the "
                "clbench runs active in the cache (cl_bench.run.threads)"})
    shared_cache: bool = field(default=True, metadata={
        "help": "reuse row 0 and fits that another run computed from the same inputs (bit-identical results; "
                "cl_bench.run.shared); CLBENCH_SHARED_CACHE=0 turns it off whatever this says"})
    shared_fit_max_mb: float = field(default=1024.0, metadata={
        "help": "fits training more than this many MiB of float32 weights are neither stored nor looked up "
                "(CLBENCH_SHARED_FIT_MAX_MB overrides it)"})
    cpu_half_precision: bool = field(default=False, metadata={
        "help": "allow --dtype bfloat16/float16 on the CPU: slow, for testing the half-precision path on a "
                "machine without a GPU (CLBENCH_CPU_HALF_PRECISION=1 does the same)"})

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= 2**31 - 1:
            raise ValueError(f"RunConfig.seed must be in [0, 2**31 - 1], got {self.seed}")
        if device_problem(self.device):
            raise ValueError(f"RunConfig.device: {device_problem(self.device)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"RunConfig.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.prompt_format not in ("plain", "chat"):
            raise ValueError(f"RunConfig.prompt_format must be plain or chat, got {self.prompt_format!r}")
        if self.eval_batch_size < 1:
            raise ValueError(f"RunConfig.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.eval_split not in ("test", "val"):
            raise ValueError(f"RunConfig.eval_split must be 'test' or 'val', got {self.eval_split!r}")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise ValueError(f"RunConfig.threads must be in [1, 1024] (or None: as the machine allows), got {self.threads}")
        if not self.shared_fit_max_mb >= 0:
            raise ValueError(f"RunConfig.shared_fit_max_mb must be >= 0, got {self.shared_fit_max_mb}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError(f"RunConfig.eval_limit must be >= 1 (or None for every item), got {self.eval_limit}")

    def identity(self) -> dict:
        """The fields that change results, but for the strategy's options (keyed once resolved)."""
        d = dataclasses.asdict(self)
        for k in ("results_dir", "cache_dir", "eval_batch_size", "device", "strategy_options", "stream_options",
                  "order", "gradient_checkpointing", "threads", "shared_cache", "shared_fit_max_mb",
                  "cpu_half_precision"):
            d.pop(k)  # the stream's options and order are keyed once resolved, and only when not the defaults;
            # gradient checkpointing recomputes the same values (tests/test_precision.py: bit-identical results);
            # the thread count is keyed once resolved (keys.identity), the shared cache gives bit-identical results
        if not self.encoder_options:
            d.pop("encoder_options")  # keyed only when given, so that other runs keep their keys
        if self.prompt_format == "plain":
            d.pop("prompt_format")  # keyed only when chat, so that other runs keep their keys
        if self.dtype == "float32":
            d.pop("dtype")  # keyed only when not the default, so that float32 runs keep their keys
        return d


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
        raise ValueError(f"results directory {results_dir}: {e.strerror or e}; choose another with "
                         "--results-dir") from None
    if not writable:
        raise ValueError(f"results directory {results_dir} cannot be written; make it writable or choose "
                         "another with --results-dir")


def run(config: RunConfig, *, progress: bool = True, restart: bool = False,
        echo: Callable[[str], None] = print, inspect: Callable[[str, object], None] | None = None,
        reuse: bool = False, wait: bool = False) -> tuple[dict, Path]:
    """Run `config` end to end; returns the result document and the path it was written to.

    Args:
        progress: print the plan, progress bars and a line per stage.
        restart: ignore a saved state of this run and start over.
        echo: where the run's lines go.
        inspect: called with ("setup", strategy) after the strategy's setup and ("end", strategy) after the
            last stage (`clbench validate`).
        reuse: if this exact run's complete result file exists, return it without running (publish, sweep).
        wait: if another process runs the same key, wait for it (else ValueError saying where its state is).
    """
    with contextlib.ExitStack() as held:  # the run key's lock, released however the run ends
        return _run(config, progress, restart, echo, inspect, reuse, wait, held)


def _run(config, progress, restart, echo, inspect, reuse, wait, held) -> tuple[dict, Path]:
    import torch

    from cl_bench.analysis import metrics

    t_start = time.perf_counter()
    device = resolve_device(config.device)
    dtype = torch_dtype(config.dtype, device, allow_cpu_half=config.cpu_half_precision)
    # a results directory that cannot be written is said before the data are built and the base pre-trained
    _check_writable(Path(config.results_dir) / "runs", config.results_dir)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    n_threads = threads.choose(config.threads, cache)
    threads.apply(n_threads)
    strategy_cls, strategy = _make_strategy(config)
    _quiet_libraries()

    t0 = time.perf_counter()
    stream_obj, stream, base = _stream_and_base(config, cache, device, dtype, progress)
    setup_seconds = time.perf_counter() - t0

    ident = keys.identity(config, strategy, stream_obj, stream, base, cache,
                          threads=n_threads if device.type == "cpu" else None)
    key = stable_hash(ident)
    path = keys.result_path(config, stream.name, key)
    _check_writable(path.parent, config.results_dir)
    state.hold_lock(held, cache, key, wait, echo)
    state.remove_stale(path, cache, key)
    if reuse and not restart and (done := _complete_result(path, key)) is not None:
        echo(f"{path}: finished before, reused")
        return done, path

    model, encoders, plan = _model_and_plan(config, strategy, stream_obj, stream, base, device, dtype)
    if progress:
        echo(plan.line())
    evaluator = Evaluator(stream, model, strategy, device, config.eval_batch_size, config.eval_split,
                          config.eval_limit)
    fits = _fit_store(config, strategy_cls, ident, cache)
    strategy.setup(model, RunContext(device=device, seed=config.seed, budget=config.budget, stream=stream.name,
                                     tasks=tuple(t.info for t in stream.tasks), progress=progress,
                                     base=stream.base.without_test(), checkpoint=evaluator.checkpoint, fits=fits))
    if inspect:
        inspect("setup", strategy)
    evaluator.prepare()

    work = cache / "runs" / key
    st = _start_or_resume(work, restart, strategy, stream, evaluator, strategy_cls, cache, ident, config, echo)
    for i, exp in enumerate(stream.experiences, start=1):
        if i < len(st["rows"]):
            continue  # finished before a resume
        _stage(i, exp, config, strategy, stream, evaluator, fits, st)
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
    from cl_bench.api.strategy import Strategy

    cls = registry.strategies.get(config.strategy)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"strategy {config.strategy!r} is {cls!r}, not a cl_bench.Strategy subclass")
    return cls, cls(from_options(cls.Config, config.strategy_options, f"strategy {config.strategy!r}"))


def _stream_and_base(config: RunConfig, cache: Path, device, dtype, progress: bool):
    """The stream (its object and what it builds, checked and ordered) and the base model, both cached."""
    from cl_bench.run.base import load_base

    stream_obj, stream = resolve.load(config.stream, config.stream_options, config.order, cache, progress=progress)
    smallest = min(stream.experiences + (stream.base,), key=lambda e: len(e.train))
    if config.budget.batch_size > len(smallest.train):  # train() would take the whole split and record the ask
        raise ValueError(f"--batch-size {config.budget.batch_size} is larger than the smallest training split "
                         f"({smallest.name}: {len(smallest.train)} items); use at most {len(smallest.train)}")
    base = load_base(config.model, stream, device, cache, config.pretrain, progress=progress, dtype=dtype)
    if config.gradient_checkpointing:
        _checkpoint_activations(base.lm)
    if config.prompt_format == "chat" and not getattr(base.tokenizer, "chat_template", None):
        raise ValueError(f"--prompt-format chat: the tokenizer of {config.model} has no chat template; use "
                         "--prompt-format plain, or save the tokenizer with one (tokenizer.chat_template)")
    return stream_obj, stream, base


def _complete_result(path: Path, key: str) -> dict | None:
    """The result file at `path` if it is complete and of this run key."""
    if not path.exists():
        return None
    try:
        done = load_result(path)
    except ValueError:
        return None
    return done if done.get("status") == "complete" and done.get("run_key") == key else None


def _model_and_plan(config: RunConfig, strategy, stream_obj, stream, base, device, dtype):
    """The multimodal model (base LM, the stream's encoders, fresh projectors seeded by the run's seed) and
    the memory plan of the run."""
    import torch

    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.multimodal import MultimodalLM
    from cl_bench.models.pretrained import PretrainedAudio, PretrainedImage
    from cl_bench.run.plan import make_plan

    torch.manual_seed(config.seed)  # projector initialisation
    encoders = {m: build_encoder(m, name, config.encoder_options.get(m))
                for m, name in streams.encoder_names(stream_obj, stream, config.encoders).items()}
    with torch.random.fork_rng(devices=[]):  # the plan draws no number the projectors' initialisation would get
        plan = make_plan(keys.model_name(config), strategy, base.lm.config, base.tokenizer, encoders, stream,
                         batch_size=config.budget.batch_size, eval_batch_size=config.eval_batch_size, dtype=dtype,
                         device=device, checkpointing=config.gradient_checkpointing, strategy_name=config.strategy)
    model = MultimodalLM(base.lm, base.tokenizer, encoders).to(device)
    model.prompt_format = config.prompt_format
    if dtype != torch.float32:
        model.compute_dtype = dtype
        for e in model.encoders.values():
            if isinstance(e, (PretrainedImage, PretrainedAudio)):  # frozen: stored in half precision too
                e.to(dtype)
    return model, encoders, plan


def _fit_store(config: RunConfig, strategy_cls, ident: dict, cache: Path):
    """The shared fits' store (cl_bench.run.shared) for a strategy that declares shares_fits, else None."""
    from cl_bench.api.strategy import shares_fits

    if not (shared.enabled(config.shared_cache) and shares_fits(strategy_cls)):
        return None
    fit_config = {k: v for k, v in ident["config"].items() if k not in ("strategy", "budget", "eval_split", "eval_limit")}
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
        if shared.enabled(config.shared_cache) and getattr(strategy_cls, "setup_keeps_outputs", False):
            (row, items, extra, routed), source = shared.row0(cache, shared.row0_key(ident, config.eval_batch_size),
                                                              evaluator.evaluate, len(stream.tasks))
        else:
            (row, items, extra, routed), source = evaluator.evaluate(), "own"
        st = {"rows": [row], "items": [items], "extra": {k: [v] for k, v in extra.items()}, "routing": [routed],
              "stages": [], "row0_source": source,
              "row0_eval_seconds": round(time.perf_counter() - t0, 3), "resumed_at_stages": []}
        state.save(work, st, strategy)
        return st
    done = len(st["rows"]) - 1
    # A resumed run's stages may come from another process, machine load or commit: the result file says
    # when each stage finished and with which commit, so that nobody takes its timings for an
    # uninterrupted run's unawares.
    st.setdefault("resumed_at_stages", []).append(done)
    earlier, now = {s.get("git_commit") for s in st["stages"]} - {None}, records.where()["git_commit"]
    if earlier and earlier != {now}:
        echo(f"warning: stages 1-{done} were run by clbench {', '.join(sorted(earlier))}, this is "
             f"{now}; --restart runs the whole stream with this code")
    strategy.resumed([e.without_test() for e in stream.experiences[:done]])
    return st


def _stage(i: int, exp, config: RunConfig, strategy, stream, evaluator, fits, st: dict) -> None:
    """Stage i: the strategy learns the experience (its test split withheld), every task is evaluated, and the
    row and the stage's record are appended to the state `st`."""
    from cl_bench.api.training import Diverged, check_finite

    t0, shared_before = time.perf_counter(), strategy.shared_seconds()
    strategy.take_training_record()  # nothing from before this stage counts towards it
    evaluator.take_checkpoints()
    try:
        stats = strategy.learn(exp.without_test())
        for t in stream.tasks:  # what the stage left, in the model each task is answered by
            check_finite(strategy.model_for(t.info).named_parameters(), "the model after the stage", 1, 1)
    except Diverged as e:
        raise RunDiverged(records.divergence_message(config.strategy, strategy, i, exp.name, e)) from e
    # fits read from the store count what they took when computed: the training time is the method's
    train_seconds = time.perf_counter() - t0 + strategy.shared_seconds() - shared_before
    cost = strategy.cost()
    training = records.training_record(strategy.take_training_record(), config.budget)
    memory = records.memory_record(strategy.memory(), stream, exp.name)
    t0 = time.perf_counter()
    row, items, extra, routed = evaluator.evaluate()
    st["rows"].append(row)
    st["items"].append(items)
    st["routing"].append(routed)
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


class RunDiverged(ValueError):
    """A stage's training diverged; no result was written."""


def _quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

"""The runner: build the stream and base model, run the strategy stage by stage, evaluate every
task before the first stage and after each one, and write the result file.

State after each finished stage (accuracy rows, stage records, the strategy's state) is
written atomically to a work directory; running the same configuration again resumes
from the last finished stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cl_bench import __version__, faults, registry
from cl_bench import stream as streams
from cl_bench.config import Budget, device_problem, from_options
from cl_bench.data import default_cache_dir, stable_hash
from cl_bench.models.lm import DEFAULT_MODEL, PRESETS, PretrainConfig
from cl_bench.results import (SCHEMA_VERSION, atomic_torch_save, atomic_write_json, environment, load_result,
                              pack_items, sweep_stale)


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
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError(f"RunConfig.eval_limit must be >= 1 (or None for every item), got {self.eval_limit}")

    def identity(self) -> dict:
        """The fields that change results, but for the strategy's options (keyed once resolved)."""
        d = dataclasses.asdict(self)
        for k in ("results_dir", "cache_dir", "eval_batch_size", "device", "strategy_options", "stream_options",
                  "order", "gradient_checkpointing"):
            d.pop(k)  # the stream's options and order are keyed once resolved, and only when not the defaults;
            # gradient checkpointing recomputes the same values (tests/test_precision.py: bit-identical results)
        if not self.encoder_options:
            d.pop("encoder_options")  # keyed only when given, so that other runs keep their keys
        if self.prompt_format == "plain":
            d.pop("prompt_format")  # keyed only when chat, so that other runs keep their keys
        if self.dtype == "float32":
            d.pop("dtype")  # keyed only when not the default, so that float32 runs keep their keys
        return d


DTYPES = ("float32", "bfloat16", "float16")
# The half-precision path on the CPU is for testing it on machines without a GPU: slow there, and not what
# clbench's CPU runs use.
CPU_HALF_ENV = "CLBENCH_CPU_HALF_PRECISION"


def torch_dtype(name: str, device):
    """The torch dtype of --dtype `name` on `device`; ValueError naming the fix for half precision on the CPU."""
    import torch

    if name != "float32" and device.type == "cpu" and os.environ.get(CPU_HALF_ENV) != "1":
        raise ValueError(f"--dtype {name} is for GPUs; on the CPU clbench runs float32: drop --dtype or run on "
                         "--device cuda")
    return getattr(torch, name)


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


def resolve_device(name: str):
    """The torch device of `name` (auto, cpu, cuda or cuda:N); ValueError naming the fix when there is none."""
    import torch

    if device_problem(name):
        raise ValueError(f"--device {device_problem(name)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for, but torch sees no CUDA GPU; use --device auto or cpu")
    if ":" in name and int(name.partition(":")[2]) >= torch.cuda.device_count():
        raise ValueError(f"--device {name} was asked for, but torch sees {torch.cuda.device_count()} GPU(s) "
                         f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device(name)


def run(config: RunConfig, *, progress: bool = True, restart: bool = False,
        echo: Callable[[str], None] = print, inspect: Callable[[str, object], None] | None = None,
        reuse: bool = False, wait: bool = False) -> tuple[dict, Path]:
    """Run `config` end to end; returns the result document and the path it was written to.

    `reuse`: if this exact run's result file already exists and is complete, return it
    without running (what `clbench publish` does to fill in only missing runs).

    One process at a time runs a given run key: a second one raises ValueError saying where the
    first keeps its state, or with `wait` waits for it (then, with `reuse`, returns its result).

    `inspect(event, strategy)`, if given, is called with "setup" after the strategy's
    setup and "end" after the last stage (used by `clbench validate`).
    """
    with contextlib.ExitStack() as held:  # the run key's lock, released however the run ends
        return _run(config, progress, restart, echo, inspect, reuse, wait, held)


def _run(config, progress, restart, echo, inspect, reuse, wait, held) -> tuple[dict, Path]:
    import torch

    from cl_bench import metrics, routing
    from cl_bench.engine import Diverged, TaskData, accuracy, item_correct, check_finite
    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.lm import checkpoint_key, load_base
    from cl_bench.models.pretrained import PretrainedAudio, PretrainedImage, is_model_dir
    from cl_bench.models.multimodal import MultimodalLM
    from cl_bench.strategy import RunContext, Strategy, shares_fits

    t_start = time.perf_counter()
    device = resolve_device(config.device)
    dtype = torch_dtype(config.dtype, device)
    # a results directory that cannot be written is said before the data are built and the base pre-trained
    _check_writable(Path(config.results_dir) / "runs", config.results_dir)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    strategy_cls = registry.strategies.get(config.strategy)
    if not (isinstance(strategy_cls, type) and issubclass(strategy_cls, Strategy)):
        raise TypeError(f"strategy {config.strategy!r} is {strategy_cls!r}, not a cl_bench.strategy.Strategy subclass")
    strategy = strategy_cls(from_options(strategy_cls.Config, config.strategy_options, f"strategy {config.strategy!r}"))
    _quiet_libraries()

    t0 = time.perf_counter()
    stream_obj, stream = streams.load(config.stream, config.stream_options, config.order, cache, progress=progress)
    smallest = min(stream.experiences + (stream.base,), key=lambda e: len(e.train))
    if config.budget.batch_size > len(smallest.train):  # train() would take the whole split and record the ask
        raise ValueError(f"--batch-size {config.budget.batch_size} is larger than the smallest training split "
                         f"({smallest.name}: {len(smallest.train)} items); use at most {len(smallest.train)}")
    stream_changes = streams.changed_options(stream_obj)
    default_order = tuple(type(stream_obj).tasks)  # build_checked holds a stream to its declared order
    base = load_base(config.model, stream, device, cache, config.pretrain, progress=progress, dtype=dtype)
    if config.gradient_checkpointing:
        _checkpoint_activations(base.lm)
    if config.prompt_format == "chat" and not getattr(base.tokenizer, "chat_template", None):
        raise ValueError(f"--prompt-format chat: the tokenizer of {config.model} has no chat template; use "
                         "--prompt-format plain, or save the tokenizer with one (tokenizer.chat_template)")
    setup_seconds = time.perf_counter() - t0

    data = stable_hash([(t.name, len(t.train), len(t.val), list(t.test["prompt"]), list(t.test["answer"]))
                        for t in stream.tasks])
    ident = {"clbench": __version__, "config": config.identity(), "data": data,
             "strategy_options": dataclasses.asdict(strategy.config),
             "base": base.info.get("key"), "base_path": base.info.get("path")}
    # Keyed only when not the stream's defaults, so that a default run keeps its key.
    if stream_changes:
        ident["stream_options"] = stream_changes
    if hasattr(stream_obj, "file_key"):  # a stream file: its content and its data files
        ident["stream_file"] = stream_obj.file_key()
    if stream.order != default_order:
        ident["order"] = list(stream.order)
    # An encoder given by directory: a fingerprint of its files, as for a local checkpoint (keyed only then, so
    # that other runs keep their keys)
    encoder_files = {m: checkpoint_key(Path(n).expanduser(), cache) for m, n in sorted(config.encoders.items())
                     if is_model_dir(n)}
    if encoder_files:
        ident["encoder_files"] = encoder_files
    key = stable_hash(ident)
    model_name = config.model if config.model in PRESETS else Path(config.model).name
    path = Path(config.results_dir) / "runs" / stream.name / config.strategy / f"{model_name}-seed{config.seed}-{key[:8]}.json"
    _check_writable(path.parent, config.results_dir)
    _hold_run_lock(held, cache, key, wait, echo)
    # Holding the run key's lock, its temporary files are a killed holder's: remove them now.
    for stale in [*path.parent.glob(f".{path.name}.*.tmp"), *(cache / "runs" / key).glob(".*.tmp")]:
        stale.unlink(missing_ok=True)
    # what killed processes left: temporary result files beside this one, half-built cache entries
    sweep_stale(path.parent, ".*.tmp")
    for sub in ("models", "data", "data/numbers", "runs"):
        sweep_stale(cache / sub, "*.tmp-*")
    sweep_stale(cache / "shared", ".*.tmp")  # a stored fit's or row's temporary copy (results.atomic_*)
    sweep_stale(Path(tempfile.gettempdir()), "clbench-speech-*")
    if reuse and not restart and path.exists():
        try:
            done = load_result(path)
        except ValueError:
            done = None
        if done is not None and done.get("status") == "complete" and done.get("run_key") == key:
            echo(f"{path}: finished before, reused")
            return done, path

    torch.manual_seed(config.seed)  # projector initialisation
    encoders = {m: build_encoder(m, name, config.encoder_options.get(m))
                for m, name in streams.encoder_names(stream_obj, stream, config.encoders).items()}
    from cl_bench.plan import make_plan

    with torch.random.fork_rng(devices=[]):  # the plan draws no number the projectors' initialisation would get
        plan = make_plan(model_name, strategy, base.lm.config, base.tokenizer, encoders, stream,
                         batch_size=config.budget.batch_size, eval_batch_size=config.eval_batch_size, dtype=dtype,
                         device=device, checkpointing=config.gradient_checkpointing, strategy_name=config.strategy)
    if progress:
        echo(plan.line())
    model = MultimodalLM(base.lm, base.tokenizer, encoders).to(device)
    model.prompt_format = config.prompt_format
    if dtype != torch.float32:
        model.compute_dtype = dtype
        for e in model.encoders.values():
            if isinstance(e, (PretrainedImage, PretrainedAudio)):  # frozen: stored in half precision too
                e.to(dtype)
    checkpoints: dict[str, dict[str, float]] = {}  # this stage's Strategy.checkpoint records

    def on_checkpoint(label: str) -> None:
        if label in checkpoints:
            raise ValueError(f"checkpoint {label!r} was recorded twice in one stage; give each its own label")
        checkpoints[label] = {t.name: round(accuracy(strategy.model_for(t.info), d, device, config.eval_batch_size), 6)
                              for t, d in val_evals()}

    from cl_bench import shared

    fits = None
    if shared.enabled() and shares_fits(strategy_cls):
        fit_config = {k: v for k, v in ident["config"].items()
                      if k not in ("strategy", "budget", "eval_split", "eval_limit")}
        fits = shared.FitStore(cache, {**{k: v for k, v in ident.items() if k not in ("config", "strategy_options")},
                                       "config": fit_config})
    ctx = RunContext(device=device, seed=config.seed, budget=config.budget, stream=stream.name,
                     tasks=tuple(t.info for t in stream.tasks), progress=progress,
                     base=stream.base.without_test(), checkpoint=on_checkpoint, fits=fits)
    strategy.setup(model, ctx)
    if inspect:
        inspect("setup", strategy)

    # Evaluation data: the runner's alone.
    def limited(split):
        return split if config.eval_limit is None else split.select(range(min(len(split), config.eval_limit)))

    evals = [(t, TaskData(limited(getattr(t, config.eval_split)), model, t.modality)) for t in stream.tasks]
    probes = {f"{t.name}/{name}": (t, TaskData(limited(split), model, t.modality))
              for t in stream.tasks for name, split in t.probes.items()} if config.eval_split == "test" else {}

    _val: list = []

    def val_evals() -> list:
        """Every task's validation split (for Strategy.checkpoint), built on first use."""
        if not _val:
            _val.extend((t, TaskData(limited(t.val), model, t.modality)) for t in stream.tasks)
        return _val

    def evaluate() -> tuple[list[float], list[str], dict[str, float], dict | None]:
        """Accuracy of every task, its items' correctness (packed), the probes' accuracies and, for an MoE
        model, the share of each task's tokens routed to each expert of each layer (cl_bench.routing)."""
        items, shares, layout = [], {}, None
        for t, d in evals:
            m = strategy.model_for(t.info)
            with routing.RoutingRecorder(m.lm) as rec:
                items.append(item_correct(m, d, device, config.eval_batch_size))
            if rec.layers:
                shares[t.name] = [[round(x, 6) for x in layer] for layer in rec.shares()]
                layout = layout or routing.record(m.lm)  # layers and who added each expert: one model's
        routed = None if layout is None else {**layout, "shares": shares}
        row = [int(c.sum()) / len(c) for c in items]
        extra = {k: accuracy(strategy.model_for(t.info), d, device, config.eval_batch_size)
                 for k, (t, d) in probes.items()}
        return row, [pack_items(c.numpy()) for c in items], extra, routed

    work = cache / "runs" / key
    if restart and work.exists():
        shutil.rmtree(work)
    state = _load_state(work, strategy, echo)
    if state is None:
        t0 = time.perf_counter()
        if shared.enabled() and getattr(strategy_cls, "setup_keeps_outputs", False):
            (row, items, extra, routed), source = shared.row0(cache, shared.row0_key(ident, config.eval_batch_size),
                                                              evaluate, len(stream.tasks))
        else:
            (row, items, extra, routed), source = evaluate(), "own"
        state = {"rows": [row], "items": [items], "extra": {k: [v] for k, v in extra.items()}, "routing": [routed],
                 "stages": [], "row0_source": source,
                 "row0_eval_seconds": round(time.perf_counter() - t0, 3), "resumed_at_stages": []}
        _save_state(work, state, strategy)
    else:
        done = len(state["rows"]) - 1
        # A resumed run's stages may come from another process, machine load or commit: the result file says
        # when each stage finished and with which commit, so that nobody takes its timings for an
        # uninterrupted run's unawares.
        state.setdefault("resumed_at_stages", []).append(done)
        earlier, now = {s.get("git_commit") for s in state["stages"]} - {None}, _where()["git_commit"]
        if earlier and earlier != {now}:
            echo(f"warning: stages 1-{done} were run by clbench {', '.join(sorted(earlier))}, this is "
                 f"{now}; --restart runs the whole stream with this code")
        strategy.resumed([e.without_test() for e in stream.experiences[:done]])

    for i, exp in enumerate(stream.experiences, start=1):
        if i < len(state["rows"]):
            continue  # finished before a resume
        t0, shared_before = time.perf_counter(), strategy.shared_seconds()
        strategy.take_training_record()  # nothing from before this stage counts towards it
        checkpoints.clear()
        try:
            stats = strategy.learn(exp.without_test())
            for t in stream.tasks:  # what the stage left, in the model each task is answered by
                check_finite(strategy.model_for(t.info).named_parameters(), "the model after the stage", 1, 1)
        except Diverged as e:
            raise RunDiverged(_divergence_message(config, strategy, i, exp.name, e)) from e
        # fits read from the store count what they took when computed: the training time is the method's
        train_seconds = time.perf_counter() - t0 + strategy.shared_seconds() - shared_before
        cost = strategy.cost()
        training = _training_record(strategy.take_training_record(), config.budget)
        memory = _memory_record(strategy.memory(), stream, exp.name)
        t0 = time.perf_counter()
        row, items, extra, routed = evaluate()
        state["rows"].append(row)
        state["items"].append(items)
        state["routing"].append(routed)
        for k, v in extra.items():
            state["extra"][k].append(v)
        state["stages"].append({"stage": i, "experience": exp.name, "modality": exp.modality,
                                "train_seconds": round(train_seconds, 3),
                                "eval_seconds": round(time.perf_counter() - t0, 3),
                                "cost": dataclasses.asdict(cost), "training": training, "memory": memory,
                                # validation accuracies at points inside the stage (Strategy.checkpoint)
                                "checkpoints": dict(checkpoints),
                                "train_stats": stats, "finished": _now(), **_where(),
                                # each fit shared (cl_bench.shared.FitStore): computed here and stored, or stored
                                # by an earlier run; absent when the strategy does not share its fits
                                **({"shared_fits": fits.take_log()} if fits is not None else {})})
        _save_state(work, state, strategy)
        faults.point(f"stage-saved:{i}")
        if progress:
            echo(f"stage {i}/{len(stream.experiences)} {exp.name}: "
                 + ", ".join(f"{t.name} {a:.3f}" for t, a in zip(stream.tasks, row)))

    if inspect:
        inspect("end", strategy)
    R = torch.tensor(state["rows"], dtype=torch.float64, device=device)
    chance = torch.tensor([t.chance for t in stream.tasks], dtype=torch.float64, device=device)
    result = {
        "schema_version": SCHEMA_VERSION,
        "status": "complete",
        "created": _now(),
        "run_key": key,
        "config": {**dataclasses.asdict(config), "strategy_options": dataclasses.asdict(strategy.config)},
        "seed": config.seed,
        "stream": {"name": stream.name, "order": list(stream.order), "default_order": list(default_order),
                   "options": dataclasses.asdict(stream_obj.config), "tasks": [
            {"name": t.name, "modality": t.modality, "task": t.task, "chance": t.chance,
             "encoder": f"{type(encoders[t.modality]).__module__}:{type(encoders[t.modality]).__name__}"
             if t.modality in encoders else None,
             "n_train": len(t.train), "n_val": len(t.val), "n_test": len(d)} for t, d in evals]},
        "base_model": base.info,
        "accuracy_matrix": state["rows"],
        # rows[i][j]: which test items of task j were answered correctly after stage i (cl_bench.results.unpack_items)
        "item_results": {"encoding": "packbits-little-base64", "rows": state["items"]},
        "extra_accuracy": state["extra"],
        # rows[i]: after stage i, per MoE layer the share of each task's test tokens routed to each expert
        # (top-k slots), with the layers' indices and the stage that added each expert (-1: the model's own);
        # None for a model without MoE layers (cl_bench.routing)
        "routing": {"rows": state["routing"]},
        "declaration": dataclasses.asdict(strategy.declaration()),
        # the memory plan printed at the start (cl_bench.plan): what the run was expected to need
        "plan": plan.record(),
        "metrics": {**metrics.summarize(R, chance), "fwt_reference": "base"},
        "stages": state["stages"],
        "timing": {"setup_seconds": round(setup_seconds, 3), "row0_eval_seconds": state["row0_eval_seconds"],
                   # row 0: evaluated by this run ("own"), or shared (cl_bench.shared): "computed" here and stored,
                   # or "stored" by an earlier run
                   "row0_source": state.get("row0_source", "own"),
                   "train_seconds": round(sum(s["train_seconds"] for s in state["stages"]), 3),
                   "resumed_at_stages": state.get("resumed_at_stages", []),
                   "this_process_seconds": round(time.perf_counter() - t_start, 3)},
        # where the strategy and the stream came from: their entry point and its distribution and version
        "environment": {**environment(device), "sources": _sources(config)},
    }
    atomic_write_json(path, result)
    shutil.rmtree(work, ignore_errors=True)  # the result file now holds everything
    return result, path


def _hold_run_lock(held: contextlib.ExitStack, cache: Path, key: str, wait: bool, echo) -> None:
    from filelock import FileLock, Timeout

    (cache / "runs").mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cache / "runs" / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise ValueError(f"this run is in progress in another process (its state: {cache / 'runs' / key}); "
                             "wait for it to finish, then run the same command to get its result") from None
        echo(f"the same run is in progress in another process; waiting for it ({cache / 'runs' / key})")
        lock.acquire()
    held.callback(lock.release)


def _sources(config: RunConfig) -> dict:
    from cl_bench import yaml_stream

    stream = ({"file": str(Path(config.stream).resolve())} if yaml_stream.is_stream_file(config.stream)
              else registry.streams.entry(config.stream).record())
    return {"strategy": registry.strategies.entry(config.strategy).record(), "stream": stream}


class RunDiverged(ValueError):
    """A stage's training diverged; no result was written."""


def _divergence_message(config: RunConfig, strategy, stage: int, name: str, e) -> str:
    changed = [f"{f.name.replace('_', '-')}={getattr(strategy.config, f.name)!r} (default {f.default!r})"
               for f in dataclasses.fields(strategy.config)
               if f.default is not dataclasses.MISSING and getattr(strategy.config, f.name) != f.default]
    rates = [c for c in changed if "lr" in c.split("=")[0]]
    named = rates or changed
    cause = (f"likely cause: {', '.join(named)}; set {'it' if len(named) == 1 else 'them'} nearer the default "
             "and run again"
             if changed else "at the strategy's default options; try a lower learning rate (-o lr=...)")
    return (f"strategy {config.strategy!r} diverged in stage {stage} ({name}): {e}; {cause}. "
            f"No result file was written (finished stages stay resumable)")


def _training_record(phases: list[dict], budget: Budget) -> dict:
    """A stage's training, summed over its phases, against the budget of training examples."""
    total = {k: sum(p[k] for p in phases) for k in ("steps", "examples", "tokens", "flops")}
    return {**total, "budget_examples": budget.examples,
            "budget_ratio": round(total["examples"] / budget.examples, 6), "phases": phases}


def _memory_record(memory, stream, current: str) -> dict:
    """The strategy's Memory of tasks other than the stage's own, each also as a share of its split."""
    sizes = {t.name: (len(t.train), len(t.val)) for t in stream.tasks}
    for items in (memory.past_train_items, memory.past_val_items):
        unknown = set(items) - set(sizes)
        if unknown:
            raise ValueError(f"the strategy's memory names tasks that are not in the stream: {sorted(unknown)}")
    train = {k: v for k, v in memory.past_train_items.items() if k != current}
    val = {k: v for k, v in memory.past_val_items.items() if k != current}

    def share(items: dict, k: int) -> dict:
        return {name: round(n / sizes[name][k], 6) if sizes[name][k] else None for name, n in items.items()}

    return {"past_train_items": train, "past_val_items": val, "past_train_share": share(train, 0),
            "past_val_share": share(val, 1), "task_weight_bytes": memory.task_weight_bytes}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_WHERE: dict | None = None


def _where() -> dict:
    """The clbench commit of this process (recorded per stage; computed once per process)."""
    global _WHERE
    if _WHERE is None:
        from cl_bench.results import git_commit

        _WHERE = {"git_commit": git_commit()}
    return _WHERE


def _quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _save_state(work: Path, state: dict, strategy) -> None:
    # Each stage's checkpoint has its own name and is written before the state that names
    # it, so a kill at any point leaves a state whose checkpoint exists; older ones go last.
    n = len(state["rows"]) - 1
    atomic_torch_save(work / f"stage{n}.pt", strategy.state_dict())
    atomic_write_json(work / "state.json", {**state, "checkpoint": f"stage{n}.pt"})
    for old in work.glob("stage*.pt"):
        if old.name != f"stage{n}.pt":
            old.unlink(missing_ok=True)


def _load_state(work: Path, strategy, echo) -> dict | None:
    import torch

    path = work / "state.json"
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        if "items" not in state or "routing" not in state:  # written by a clbench that kept less
            echo(f"the saved state in {work} predates per-item results or the routing analysis; starting the run over")
            shutil.rmtree(work, ignore_errors=True)
            return None
        _check_state(state, len(strategy.context.tasks))
        checkpoint = work / state.pop("checkpoint")
        weights = torch.load(checkpoint, map_location=strategy.context.device, weights_only=True)
        strategy.load_state_dict(weights)
    except (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError, EOFError) as e:
        # json, torch.load and load_state_dict raise all of these for a damaged or foreign state
        raise ValueError(f"the saved state of this run in {work} is damaged ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else e!r}); run the same command with --restart "
                         "to start it over") from None
    echo(f"resuming after stage {len(state['rows']) - 1} of {len(state['rows'][0]) - 1}, the last one saved "
         f"(state in {work}; --restart to start over)")
    return state


def _check_state(state: dict, tasks: int) -> None:
    """A resume state must be one row per evaluation so far, of one entry per task, with one stage record per
    finished stage: anything else would give an inconsistent result."""
    rows = state["rows"]
    if not (isinstance(rows, list) and 1 <= len(rows) <= tasks):
        raise ValueError(f"{len(rows) if isinstance(rows, list) else rows!r} rows for a stream of {tasks} tasks")
    for key in ("items", "routing"):
        if len(state[key]) != len(rows):
            raise ValueError(f"{len(state[key])} {key} rows for {len(rows)} accuracy rows")
    if len(state["stages"]) != len(rows) - 1:
        raise ValueError(f"{len(state['stages'])} stage records for {len(rows) - 1} finished stages")
    if any(len(r) != tasks or not all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in r) for r in rows):
        raise ValueError(f"an accuracy row is not {tasks} values in [0, 1]")
    if not isinstance(state["checkpoint"], str) or "/" in state["checkpoint"]:
        raise ValueError(f"checkpoint {state['checkpoint']!r} is not a file name")

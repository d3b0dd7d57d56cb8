"""A run's configuration: every setting that defines a run (and so its result file and its resume key), torch-free
so that the command line builds its options from the fields (cl_bench.cli.options) without importing torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from cl_bench.analysis import scoring
from cl_bench.config import DEFAULT_MODEL, Budget, PretrainConfig, device_problem
from cl_bench.errors import UsageError
from cl_bench.run.device import DTYPES

SCORINGS = ("teacher-forced", "generated")  # RunConfig.scoring


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run (and so its result file and its resume key)."""

    stream: str = field(default="vision-audio", metadata={
        "help": "task stream: a registered name (`clbench ls`) or a stream file (.yaml)"})
    strategy: str = field(default="full-ft", metadata={"help": "strategy to run (`clbench ls`)"})
    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": "base model: a preset (mixtral-tiny, olmoe-tiny, qwen2-moe-tiny, qwen3-moe-tiny, granite-moe-tiny) "
                "or a local Hugging Face MoE checkpoint directory of one of those families"})
    seed: int = field(default=0, metadata={"help": "seed of the run: projector init and training order"})
    device: str = field(default="auto", metadata={
        "help": "device: auto (the GPU where there is one), cpu, cuda or cuda:N"})
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
        "help": "precision on a GPU: bfloat16/float16 store the frozen weights in it and run every forward under "
                "autocast (trainable parameters and optimizer states stay float32); the CPU runs float32"})
    prompt_format: str = field(default="plain", metadata={
        "help": "plain: the prompt's text as it is; chat: each prompt is the user's turn of the tokenizer's chat "
                "template and the answer the assistant's reply (for instruction-tuned checkpoints)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute each decoder layer's activations in the backward pass (less memory, more time)"})
    eval_batch_size: int = field(default=256, metadata={"help": "examples per evaluation batch"})
    eval_split: str = field(default="test", metadata={
        "help": "the split every evaluation scores: test (results) or val (hyperparameter selection, "
                "`clbench tune`: such runs never look at test data)"})
    eval_limit: int | None = field(default=None, metadata={
        "help": "evaluate only the first N items of each test split and probe (quick looks and tests; "
                "such runs get their own key and leaderboard row); None: every item"})
    scoring: str = field(default="teacher-forced", metadata={
        "help": "how answers are scored: teacher-forced (every answer token is the argmax given the gold prefix) or "
                "generated (greedy decoding from the prompt, the text normalised and matched exactly: "
                "cl_bench.analysis.scoring; the decoded answers are stored in the result file)"})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "generated scoring: the most tokens decoded per answer (decoding stops earlier at the end-of-"
                "sequence token, which the answer-only loss never trains: a bound past the longest answer scores "
                "tokens that the models here never learnt to leave out); None: the longest reference answer, in "
                "tokens, of the split scored"})
    results_dir: str = field(default="my-results", metadata={
        "help": "directory the result files go under (runs/<stream>/<strategy>/): your own, apart from the "
                "published leaderboard's under results/ (`clbench publish` writes there)"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "cache of data, base models and resumable runs; None: $CLBENCH_CACHE or ~/.cache/clbench"})
    threads: int | None = field(default=None, metadata={
        "help": "CPU threads of each run (torch's intra-op; inter-op is 1); float sums differ across counts, so "
                "the count is recorded and is part of a CPU run's key; None: the CPUs available to the process, "
                "shared among the clbench runs active in the cache (cl_bench.run.threads)"})
    shared_cache: bool = field(default=True, metadata={
        "help": "reuse row 0 and fits that another run computed from the same inputs (bit-identical results; "
                "cl_bench.run.shared); CLBENCH_SHARED_CACHE=0 turns it off whatever this says"})
    shared_fit_max_mb: float = field(default=1024.0, metadata={
        "help": "fits training more than this many MiB of float32 weights are neither stored nor looked up "
                "(CLBENCH_SHARED_FIT_MAX_MB overrides it)"})
    max_hours: float = field(default=72.0, metadata={
        "help": "refuse a run whose training the plan estimates at more hours than this (a lower estimate: "
                "cl_bench.run.plan.estimated_hours)"})
    ignore_plan: bool = field(default=False, metadata={
        "help": "run even when the plan says the run does not fit in the device's memory or exceeds max_hours"})
    cpu_half_precision: bool = field(default=False, metadata={
        "help": "allow --dtype bfloat16/float16 on the CPU: slow, for testing the half-precision path on a "
                "machine without a GPU (CLBENCH_CPU_HALF_PRECISION=1 does the same)"})

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= 2**31 - 1:
            raise UsageError(f"RunConfig.seed must be in [0, 2**31 - 1], got {self.seed}")
        if device_problem(self.device):
            raise UsageError(f"RunConfig.device: {device_problem(self.device)}")
        if self.dtype not in DTYPES:
            raise UsageError(f"RunConfig.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.prompt_format not in ("plain", "chat"):
            raise UsageError(f"RunConfig.prompt_format must be plain or chat, got {self.prompt_format!r}")
        if self.eval_batch_size < 1:
            raise UsageError(f"RunConfig.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.eval_split not in ("test", "val"):
            raise UsageError(f"RunConfig.eval_split must be 'test' or 'val', got {self.eval_split!r}")
        if not str(self.results_dir).strip():
            raise UsageError("RunConfig.results_dir is empty; give a directory, e.g. --results-dir my-results")
        if self.cache_dir is not None and not str(self.cache_dir).strip():
            raise UsageError("RunConfig.cache_dir is empty; give a directory, or leave --cache-dir out for "
                             "$CLBENCH_CACHE or ~/.cache/clbench")
        if not self.max_hours > 0:
            raise UsageError(f"RunConfig.max_hours must be > 0, got {self.max_hours}")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise UsageError(f"RunConfig.threads must be in [1, 1024] (or None: as the machine allows), got "
                             f"{self.threads}")
        if not self.shared_fit_max_mb >= 0:
            raise UsageError(f"RunConfig.shared_fit_max_mb must be >= 0, got {self.shared_fit_max_mb}")
        if self.scoring not in SCORINGS:
            raise UsageError(f"RunConfig.scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")
        if self.max_new_tokens is not None and not 1 <= self.max_new_tokens <= 4096:
            raise UsageError(f"RunConfig.max_new_tokens must be in [1, 4096] (or None: the task's longest answer), "
                             f"got {self.max_new_tokens}")
        if self.max_new_tokens is not None and self.scoring != "generated":
            raise UsageError("RunConfig.max_new_tokens applies to generated scoring only; add --scoring generated "
                             "or leave --max-new-tokens out")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise UsageError(f"RunConfig.eval_limit must be >= 1 (or None for every item), got {self.eval_limit}")

    def identity(self) -> dict:
        """The fields that change results, but for the strategy's options (keyed once resolved)."""
        d = dataclasses.asdict(self)
        for k in ("results_dir", "cache_dir", "eval_batch_size", "device", "strategy_options", "stream_options",
                  "order", "gradient_checkpointing", "threads", "shared_cache", "shared_fit_max_mb",
                  "cpu_half_precision", "max_hours", "ignore_plan"):
            d.pop(k)  # the stream's options and order are keyed once resolved, and only when not the defaults;
            # gradient checkpointing recomputes the same values (tests/test_precision.py: bit-identical results);
            # the thread count is keyed once resolved (keys.identity), the shared cache gives bit-identical results
        if not self.encoder_options:
            d.pop("encoder_options")  # keyed only when given, so that other runs keep their keys
        if self.prompt_format == "plain":
            d.pop("prompt_format")  # keyed only when chat, so that other runs keep their keys
        if self.dtype == "float32":
            d.pop("dtype")  # keyed only when not the default, so that float32 runs keep their keys
        if self.scoring == "teacher-forced":
            d.pop("scoring")  # keyed only when generated, so that other runs keep their keys
            d.pop("max_new_tokens")
        else:  # another version of the scorer gives other results
            d["scorer"] = f"{scoring.SCORER} v{scoring.SCORER_VERSION}"
        return d

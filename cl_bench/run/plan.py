"""The memory plan of a run, before it runs: parameters, optimizer and gradient bytes, activations, peak.

`clbench plan` prints it, and every run prints it at its start. The language model is built
on torch's meta device from its config (no weights are read or allocated, so a 47B-parameter
checkpoint plans in a second); each strategy says what it trains and holds in a stage
(`Strategy.footprint`), counted on that meta model with the strategy's own module
construction (MoExtend's surgery, PEFT's LoRA, the adapters), so added and trainable counts
are exact. Hand-written: no library estimates training memory for a strategy that extends a
model (accelerate's estimator covers loading weights only).

The peak of a training step is modelled as

    weights + optimizer states + max(activations, gradients) + backward transient + featurized data
    (+ what the strategy holds)

with trainable parameters, their gradients and AdamW's two states in float32 (mixed precision's
master weights) and frozen weights in --dtype. Activations are what autograd saves for the
backward pass, per token and decoder layer, counted from transformers' MoE layers with
torch.autograd.graph.saved_tensors_hooks (tests/test_plan.py checks the formula that way on
every family): 8h + 2 kv + heads + E + k (3h + 4f) + 3k, plus 2h + 2 kv with q/k norms and
h + 4 f_shared with a shared expert; the LM head adds 3h + V per token. With the base LM frozen
(its linear layers' inputs are not saved): 4h + 2 kv + heads + E + k (2h + 3f) + 3k, h + kv,
h + 3 f_shared, and h + V. Evaluation's peak
(no gradients, --eval-batch-size items) is planned too; the plan's peak is the larger one.
bench/moextend_cost.py compares the plan with measured peaks (docs/benchmarks.md, "Memory plan and MoExtend's cost").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from cl_bench.api.footprint import Footprint, largest, numel, projector  # noqa: F401  (plan's own uses)

GIB = 2**30


@dataclass(frozen=True)
class Plan:
    model: str
    strategy: str
    device: str
    dtype: str
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    parameters: dict = field(default_factory=dict)  # lm, encoders, projectors, added, total, trainable, active
    bytes: dict = field(default_factory=dict)  # weights, gradients, optimizer, activations, data, held, eval, peak
    capacity_bytes: int | None = None
    notes: tuple = ()

    @property
    def peak(self) -> int:
        return self.bytes["peak"]

    @property
    def fits(self) -> bool | None:
        return None if self.capacity_bytes is None else self.peak <= 0.9 * self.capacity_bytes

    def line(self) -> str:
        """One line for the start of a run."""
        p, b = self.parameters, self.bytes
        where = "" if self.capacity_bytes is None else (
            f" of {human(self.capacity_bytes)} on {self.device}: " + ("fits" if self.fits else "does NOT fit"))
        return (f"plan: {count(p['total'])} parameters ({count(p['trainable'])} trainable, {count(p['added'])} added, "
                f"{count(p['active'])} active per token); peak about {human(b['peak'])}{where}")

    def table(self) -> str:
        p, b = self.parameters, self.bytes
        rows = [("model", self.model), ("strategy", self.strategy), ("device", self.device), ("dtype", self.dtype),
                ("batch x sequence", f"{self.batch_size} x {self.seq_len} tokens"
                 + (", gradient checkpointing" if self.gradient_checkpointing else "")),
                ("parameters", f"{p['total']:,} (LM {p['lm']:,}, encoders {p['encoders']:,}, "
                               f"projectors {p['projectors']:,})"),
                ("trainable", f"{p['trainable']:,}"), ("added", f"{p['added']:,}"),
                ("active per token", f"{p['active']:,}"),
                ("weights", human(b["weights"])), ("gradients", human(b["gradients"])),
                ("optimizer states", human(b["optimizer"])), ("activations", human(b["activations"])),
                ("featurized data", human(b["data"])), ("held by the strategy", human(b["held"])),
                ("training peak", human(b["train"])), ("evaluation peak", human(b["eval"])),
                ("peak", human(b["peak"]))]
        if self.capacity_bytes is not None:
            rows.append(("device memory", f"{human(self.capacity_bytes)}: "
                                          + ("fits" if self.fits else "does NOT fit (plans use at most 90%)")))
        width = max(len(k) for k, _ in rows)
        return "\n".join([*(f"{k:<{width}}  {v}" for k, v in rows), *(f"note: {n}" for n in self.notes)])

    def record(self) -> dict:
        return {**dataclasses.asdict(self), "notes": list(self.notes)}


# Sustained training throughput assumed for the time bound, deliberately generous (a run is refused only when even
# this would take too long): a CPU thread 1e11 FLOP/s, about 4x what bench/step_time.py measured for mixtral-tiny
# (0.07 s for 6 x 1.0M active parameters x 19 tokens x 32 examples on 2 threads); a GPU 1e15 FLOP/s (an H100's
# dense bfloat16 peak).
FLOPS_PER_SECOND = {"cpu": 1e11, "cuda": 1e15}


def estimated_hours(plan: Plan, examples: int, threads: int) -> float:
    """A lower estimate of the training time of `examples` training examples: 6 FLOPs per active parameter and
    token (forward and backward) at FLOPS_PER_SECOND (per thread on the CPU)."""
    device = plan.device.split(":")[0]
    rate = FLOPS_PER_SECOND.get(device, FLOPS_PER_SECOND["cuda"]) * (threads if device == "cpu" else 1)
    return 6 * plan.parameters["active"] * plan.seq_len * examples / rate / 3600


def human(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def meta_lm(config):
    """The causal LM of a transformers config on the meta device: shapes and dtypes, no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _experts(lm) -> tuple[int, int, int]:
    """(parameters in routed experts, experts per MoE layer, top-k) of a transformers MoE LM."""
    c = lm.config
    n = getattr(c, "num_local_experts", None) or getattr(c, "num_experts", None) or 1
    k = getattr(c, "num_experts_per_tok", 1)
    experts = sum(p.numel() for name, p in lm.named_parameters() if ".experts." in name and ".additions." not in name)
    return experts, n, k


def activation_elements(lm, tokens: int, checkpointing: bool = False, frozen: bool = False) -> int:
    """Elements autograd saves for the backward pass of `tokens` tokens through `lm` (see the module doc);
    `frozen`: none of its weights trains, gradients only flow through it to its inputs."""
    c = lm.config
    h, layers, heads = c.hidden_size, c.num_hidden_layers, c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or h // heads
    kv = getattr(c, "num_key_value_heads", heads) * head_dim
    _, n, k = _experts(lm)
    f = getattr(c, "moe_intermediate_size", None) or c.intermediate_size
    # frozen, a linear layer's input is not saved (its weight's gradient is not computed): 4h and k(2h + 3f)
    # instead of 8h and k(3h + 4f)
    layer = (4 if frozen else 8) * h + 2 * kv + heads + n + k * ((2 if frozen else 3) * h + (3 if frozen else 4) * f) \
        + 3 * k
    attention = next((m.self_attn for m in lm.modules() if hasattr(m, "self_attn")), None)
    if attention is not None and hasattr(attention, "q_norm"):  # OLMoE, Qwen3-MoE
        layer += (h + kv) if frozen else (2 * h + 2 * kv)
    shared = getattr(c, "shared_expert_intermediate_size", None)
    if shared:  # Qwen2-MoE
        layer += h + (3 if frozen else 4) * shared + 1
    head = (1 if frozen else 3) * h + c.vocab_size
    if checkpointing:  # each layer keeps its input; one layer's activations exist again while it is recomputed
        return tokens * (layers * h + layer + head)
    return tokens * (layers * layer + head)


def eval_elements(lm, tokens: int) -> int:
    """Elements alive at once in a no-grad forward of `tokens` tokens: a layer's largest intermediates and the
    logits (an estimate: nothing is saved for a backward pass)."""
    c = lm.config
    f = getattr(c, "moe_intermediate_size", None) or c.intermediate_size
    _, _, k = _experts(lm)
    return tokens * (6 * c.hidden_size + 3 * k * f + 2 * c.vocab_size)


def capacity(device: torch.device) -> int | None:
    """Memory of `device` in bytes (the GPU's, or the machine's for the CPU); None for a GPU torch does not see."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    import psutil

    return psutil.virtual_memory().total


def make_plan(model_name: str, strategy, lm_config, tokenizer, encoders: dict, stream, *, batch_size: int,
              eval_batch_size: int, dtype: torch.dtype, device: torch.device, checkpointing: bool = False,
              seq_len: int | None = None, strategy_name: str = "") -> Plan:
    """The plan of `strategy` (an instance, not set up) through `stream` on a model of `lm_config`.

    `encoders`: modality -> the run's encoder modules (their parameters are counted as they are);
    `seq_len`: the longest training sequence in tokens (from the stream when None).
    """
    from cl_bench.models.multimodal import MultimodalLM, Projector

    lm = meta_lm(lm_config)
    if dtype != torch.float32:
        lm.to(dtype)
    with torch.device("meta"):
        model = MultimodalLM(lm, tokenizer, {})
        model.projectors = torch.nn.ModuleDict({m: Projector(e.out_dim, lm_config.hidden_size)
                                                for m, e in encoders.items()})
    enc_params = sum(numel(e) for e in encoders.values())
    lm_params, proj_params = numel(lm), numel(model.projectors)
    first = {e.name: encoders[e.modality].featurize([e.train[0]["input"]])
             for e in stream.experiences if e.modality in encoders}  # one featurized item per task
    if seq_len is None:
        seq_len = sequence_length(stream, tokenizer, encoders, first)
    data_bytes = featurized_bytes(stream, first)
    frozen_size = torch.finfo(dtype).bits // 8
    compute_size = frozen_size  # autocast's activations are in --dtype
    experts, n, k = _experts(lm)
    peak, worst, notes = 0, None, []
    for exp in stream.experiences:
        fp = strategy.footprint(model, exp.modality)
        if fp.note and fp.note not in notes:
            notes.append(fp.note)
        total_lm = numel(model.lm)  # after the strategy's additions
        total = total_lm + numel(model.projectors)
        trainable = fp.trainable
        # frozen encoders by path are cast to --dtype with the LM (runner); the built-in ones hold no parameters
        weights = (total - trainable) * frozen_size + trainable * 4 + enc_params * frozen_size
        act = activation_elements(model.lm, batch_size * seq_len, checkpointing, fp.base_frozen) * compute_size
        grads, optimizer = trainable * 4, trainable * 8
        evaluation = eval_elements(model.lm, eval_batch_size * seq_len) * compute_size
        # The backward pass holds up to two float32 copies of the largest trainable tensor beyond its gradient:
        # autograd sums a parameter's gradient contributions, and eager experts index their fused (E, 2I, H)
        # tensors per expert, whose backward materialises a full-size gradient for every expert that was hit.
        transient = 2 * fp.largest * 4
        train_peak = weights + optimizer + max(act, grads) + transient + fp.held_bytes + data_bytes
        eval_peak = weights + evaluation + fp.held_bytes + data_bytes
        stage_peak = max(train_peak, eval_peak)
        if stage_peak >= peak:
            peak = stage_peak
            added = total - lm_params  # as Strategy.cost counts it: projectors included
            active = total_lm - (experts - experts * k // max(1, n))
            worst = {"parameters": {"lm": lm_params, "encoders": enc_params, "projectors": proj_params,
                                    "added": added, "total": total + enc_params, "trainable": trainable,
                                    "active": active},
                     "bytes": {"weights": weights, "gradients": grads, "optimizer": optimizer, "activations": act,
                               "data": data_bytes, "held": fp.held_bytes, "train": train_peak, "eval": eval_peak,
                               "peak": stage_peak}}
    return Plan(model=model_name, strategy=strategy_name or type(strategy).__name__, device=str(device),
                dtype=str(dtype).removeprefix("torch."), batch_size=batch_size, seq_len=seq_len,
                gradient_checkpointing=checkpointing, capacity_bytes=capacity(device), notes=tuple(notes), **worst)


def sequence_length(stream, tokenizer, encoders: dict, first: dict) -> int:
    """The longest prompt + input tokens + answer of the stream's training splits, in tokens; `first`: task name
    -> its first training item featurized."""
    from cl_bench.streams.experience import INPUT_MARKER, column

    longest = 0
    for exp in (stream.base, *stream.experiences):
        if exp is None:
            continue
        slots = 0
        if exp.name in first:
            with torch.no_grad():
                slots = encoders[exp.modality](first[exp.name]).shape[1]
        prompts = [p.replace(INPUT_MARKER, " ") for p in column(exp.train, "prompt")]
        p = max(len(x) for x in tokenizer(prompts)["input_ids"])
        answers = tokenizer([" " + x for x in column(exp.train, "answer")], add_special_tokens=False)["input_ids"]
        a = max(len(x) for x in answers)
        longest = max(longest, p + slots + a)
    return longest


def featurized_bytes(stream, first: dict) -> int:
    """Bytes of the encoders' inputs the run keeps featurized: every split of every task with an encoder (the
    evaluation splits all at once, the training and validation splits of the current stage); `first`: task name
    -> its first training item featurized."""
    total = 0
    for exp in stream.experiences:
        if exp.name in first:
            one = first[exp.name]
            items = len(exp.train) + len(exp.val) + (len(exp.test) if exp.test is not None else 0)
            total += one.numel() * one.element_size() * items
    return total


def plan_run(config, *, progress: bool = False, seq_len: int | None = None,
             capacity_bytes: int | None = None) -> Plan:
    """The plan of a RunConfig without running it: the stream and its encoders are built (the data cached as
    for a run), the LM comes from its config alone (a preset's, or a checkpoint directory's config.json and
    tokenizer: no weights are read)."""
    from pathlib import Path

    from cl_bench.api.strategy import strategy_class
    from cl_bench.streams import resolve
    from cl_bench.config import from_options
    from cl_bench.streams.data import default_cache_dir
    from cl_bench.run.device import resolve_device, torch_dtype

    if config.device.startswith("cuda") and not torch.cuda.is_available():
        device = torch.device(config.device)  # planning for a GPU this machine does not have
    else:
        device = resolve_device(config.device)
    dtype = getattr(torch, config.dtype) if device.type == "cuda" else torch_dtype(config.dtype, device)
    strategy_cls = strategy_class(config.strategy)
    strategy = strategy_cls(from_options(strategy_cls.Config, config.strategy_options, f"strategy {config.strategy!r}"))
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    stream_obj, stream = resolve.load(config.stream, config.stream_options, config.order, cache, progress=progress)
    plan = plan_of(config, strategy, stream_obj, stream, device, dtype, seq_len=seq_len)
    if capacity_bytes is not None:
        plan = dataclasses.replace(plan, capacity_bytes=capacity_bytes)
    return plan


def plan_of(config, strategy, stream_obj, stream, device: torch.device, dtype: torch.dtype,
            seq_len: int | None = None) -> Plan:
    """The plan of a run of `config` through its built stream, before its base model is loaded or pre-trained (the
    runner refuses a run that does not fit before either): the LM's architecture from the preset's config (on the
    stream's word tokenizer, as the base is built) or the checkpoint's config.json and tokenizer; the encoders built
    to be counted, then dropped (their random draws are the runner's own, later)."""
    from pathlib import Path

    from transformers import AutoConfig, AutoTokenizer

    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.lm import PRESETS, preset_config, stream_words, word_tokenizer
    from cl_bench.run.base import check_model
    from cl_bench.run.encoder_check import check_encoders
    from cl_bench.streams import base as streams

    if config.model in PRESETS:
        tokenizer = word_tokenizer(stream_words(stream))
        lm_config, name = preset_config(config.model, len(tokenizer), tokenizer), config.model
    else:
        check_model(config.model)  # a checkpoint directory of a supported family, with its tokenizer
        path = Path(config.model).expanduser()
        lm_config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer, name = AutoTokenizer.from_pretrained(path, local_files_only=True), path.name
    with torch.random.fork_rng(devices=[]):
        encoders = {m: build_encoder(m, n, config.encoder_options.get(m))
                    for m, n in streams.encoder_names(stream_obj, stream, config.encoders).items()}
        check_encoders(encoders, stream)  # a wrong out_dim is one line here, not a shape error later
        return make_plan(name, strategy, lm_config, tokenizer, encoders, stream, batch_size=config.budget.batch_size,
                         eval_batch_size=config.eval_batch_size, dtype=dtype, device=device,
                         checkpointing=config.gradient_checkpointing, seq_len=seq_len, strategy_name=config.strategy)

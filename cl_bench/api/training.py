"""Batches, the training loop, exact-match evaluation and greedy decoding, shared by every strategy."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cl_bench import faults
from cl_bench.errors import UsageError
from cl_bench.models.multimodal import Batch, MultimodalLM
from cl_bench.streams.experience import INPUT_MARKER, column, input_column, input_modalities

# Told of every batch a TaskData builds, as watch(data, index): the runner's measurement of what a strategy trains
# on (cl_bench.run.probe). Empty outside a stage; strategies never touch it.
batch_watchers: list = []


class TaskData:
    """One split, tokenized and featurized once, served as padded batches.

    `modality` is the items' one: "text", a modality, or a mixed item's ("image+audio": one input of each, in the
    prompt's order, from the columns input_0, input_1, ...; cl_bench.streams.experience.MixedProbe).
    """

    def __init__(self, split, model: MultimodalLM, modality: str) -> None:
        tok = model.tokenizer
        self.modality = modality
        self.split = split  # the rows' source, for the runner's item identity (cl_bench.run.probe)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        kinds = input_modalities(modality)
        # per input of an item: (modality, features of every row, tokens it takes)
        self.inputs: list[tuple[str, torch.Tensor, int]] = []
        for i, kind in enumerate(kinds):
            if kind not in model.encoders:
                raise ValueError(f"the model has no encoder for modality {kind!r}")
            features = model.encoders[kind].featurize(column(split, input_column(modality, i)))
            with torch.no_grad():
                self.inputs.append((kind, features, model.encoders[kind](features[:1]).shape[1]))
        # Each prompt is tokenized around its input markers: [before] + P slots + [between] + P' slots ... + [after].
        chat = getattr(model, "prompt_format", "plain") == "chat"
        pieces = []  # per prompt: the text before, between and after its inputs
        for prompt in column(split, "prompt"):
            if chat:  # the user's turn and the assistant's opening, by the tokenizer's own template
                prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
            parts = prompt.split(INPUT_MARKER)
            if len(parts) == 1:  # no marker: the input comes first
                parts = ["", prompt]
            if self.inputs and len(parts) != len(self.inputs) + 1:
                raise UsageError(f"a prompt of {modality} items must hold {INPUT_MARKER} {len(self.inputs)} time(s), "
                                 f"once per input: {prompt!r}")
            pieces.append(parts if chat else [x.strip() for x in parts])
        special = not chat  # a chat template writes its own special tokens
        n_slots = [n for _, _, n in self.inputs]
        if n_slots:
            columns = [tok([p[k] for p in pieces], add_special_tokens=special and k == 0)["input_ids"]
                       for k in range(len(n_slots))]
        post = tok([p[-1] for p in pieces], add_special_tokens=special and not n_slots)["input_ids"]
        answers = tok([a if chat else " " + a for a in column(split, "answer")], add_special_tokens=False)["input_ids"]
        if any(len(a) == 0 for a in answers):
            raise UsageError("an answer tokenizes to nothing; check the tokenizer's vocabulary")
        # Answers of several tokens end with the end-of-sequence token, learned and checked like the others: a model
        # must say where its answer stops, or greedy decoding runs on past a short answer to the longest one's length
        # (generated scoring). Splits whose answers are one token each (every number task on the preset tokenizer)
        # are left as they were, so their results do not change.
        self.ends = tok.eos_token_id is not None and any(len(a) > 1 for a in answers)
        if self.ends:
            answers = [[*a, tok.eos_token_id] for a in answers]
        self.seqs, self.n_prompt = [], []
        self.starts: list[list[int]] = []  # per row, where each input's slots start
        for i, (p, a) in enumerate(zip(post, answers)):
            seq, starts = [], []
            for k, n in enumerate(n_slots):
                seq += columns[k][i]
                starts.append(len(seq))
                seq += [self.pad_id] * n
            seq += p
            self.seqs.append(seq + a)
            self.starts.append(starts)
            self.n_prompt.append(len(seq))

    def __len__(self) -> int:
        return len(self.seqs)

    def slot_masks(self, index: Sequence[int], width: int, device=None) -> list[torch.Tensor]:
        """Per input of the items, a (len(index), width) bool mask of its slots in each row."""
        masks = [torch.zeros((len(index), width), dtype=torch.bool, device=device) for _ in self.inputs]
        for row, i in enumerate(index):
            for k, (_, _, n) in enumerate(self.inputs):
                masks[k][row, self.starts[i][k]: self.starts[i][k] + n] = True
        return masks

    def make_batch(self, ids, attention, answer, index: Sequence[int], masks: list[torch.Tensor]) -> Batch:
        """A Batch of rows `index` with the given tokens and each input's slot mask (from slot_masks)."""
        if not self.inputs:
            return Batch(self.modality, ids, attention, answer)
        device = ids.device
        if len(self.inputs) == 1:
            return Batch(self.modality, ids, attention, answer, self.inputs[0][1][index].to(device), masks[0])
        union = torch.stack(masks).any(0)
        return Batch(self.modality, ids, attention, answer, None, union,
                     tuple((kind, f[index].to(device), m) for (kind, f, _), m in zip(self.inputs, masks)))

    def batch(self, index: Sequence[int]) -> Batch:
        index = list(index)
        for watch in batch_watchers:
            watch(self, index)
        L = max(len(self.seqs[i]) for i in index)
        ids = torch.full((len(index), L), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(index), L), dtype=torch.long)
        answer = torch.zeros((len(index), L), dtype=torch.bool)
        for row, i in enumerate(index):
            s = self.seqs[i]
            ids[row, : len(s)] = torch.tensor(s)
            attention[row, : len(s)] = 1
            answer[row, self.n_prompt[i]: len(s)] = True
        return self.make_batch(ids, attention, answer, index, self.slot_masks(index, L))


@dataclass
class TrainStats:
    steps: int
    first_loss: float
    last_loss: float
    seconds: float
    seconds_per_step: float
    examples: int = 0  # training examples seen (rows of every batch)
    tokens: int = 0  # real tokens of those batches (padding left out)
    flops: float = 0.0  # estimate, see FlopMeter


class FlopMeter:
    """Training FLOPs of a loop, estimated as (FLOPs per token of its first step) x (tokens of all steps).

    The first step's forward and backward run under torch's own FlopCounterMode, which counts
    what actually executes (top-k experts only, no work for frozen weights' gradients); the
    per-token rate then scales with each later batch's real token count, so batches of other
    lengths are accounted for. Elementwise work and the optimizer update are not counted.
    """

    def __init__(self) -> None:
        self.tokens, self.per_token, self._mode, self._first_tokens = 0, None, None, 0

    def start_step(self, tokens: int) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        self.tokens += tokens
        if self.per_token is None and self._mode is None:
            self._mode, self._first_tokens = FlopCounterMode(display=False), tokens
            self._mode.__enter__()

    def end_step(self) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self.per_token = self._mode.get_total_flops() / max(1, self._first_tokens)
            self._mode = None

    @property
    def flops(self) -> float:
        return float((self.per_token or 0.0) * self.tokens)


class Diverged(RuntimeError):
    """Training produced a non-finite loss, gradient or parameter: the stage cannot go on."""

    def __init__(self, desc: str, step: int, steps: int, what: str) -> None:
        super().__init__(f"{desc} diverged at step {step} of {steps}: {what}")
        self.desc, self.step, self.steps, self.what = desc, step, steps, what


def optimizer_step(opt, desc: str, step: int, steps: int) -> None:
    """`opt.step()`; Diverged where the step itself overflows float32 (Adam's lr / (1 - beta1^t), e.g. lr=1e38),
    which torch raises as a RuntimeError."""
    try:
        opt.step()
    except RuntimeError as e:
        if "overflow" not in str(e):
            raise
        raise Diverged(desc, step, steps, "the optimizer's step size overflows float32") from None


def master_weights(params) -> None:
    """Trainable parameters in float32 (mixed precision's master weights): under --dtype bfloat16/float16 the
    frozen weights stay in half precision, what the optimizer updates (and its states) is float32."""
    for p in params:
        if p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()


def check_finite(params, desc: str, step: int, steps: int) -> None:
    """Raise Diverged naming the first parameter of `params` ((name, tensor) pairs) that is not finite."""
    for name, p in params:
        if not bool(torch.isfinite(p).all()):
            raise Diverged(desc, step, steps, f"parameter {name} is not finite")


SCALER_PATIENCE = 20  # float16: overflowing steps in a row (the scale halves each time) before it is a divergence


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train(model: MultimodalLM, data: TaskData | Sequence[TaskData], param_groups: list[dict], *, steps: int,
          batch_size: int, seed: int, device: torch.device, warmup_fraction: float = 0.03,
          router_aux_loss: bool = True, extra_loss=None, max_grad_norm: float = 1.0, desc: str = "training",
          progress: bool = True, mix: Sequence[float] | None = None) -> TrainStats:
    """AdamW with linear warmup and cosine decay on the answer-only loss.

    Only the parameters in `param_groups` are updated; each step takes a batch from one
    dataset of `data`, chosen in proportion to its size, or to `mix` (one weight per
    dataset) when given. `extra_loss(batch)`, if given,
    is added to the model's loss after the forward pass (e.g. a strategy's own
    regulariser reading state the forward left behind).
    """
    from tqdm.auto import tqdm

    datasets = [data] if isinstance(data, TaskData) else list(data)
    groups = [dict(g, params=[p for p in g["params"] if p.requires_grad]) for g in param_groups]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(f"{desc}: nothing to train (no parameter requires grad)")
    params = [p for g in groups for p in g["params"]]
    master_weights(params)
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    # float16 needs its loss scaled (gradients underflow otherwise); a step whose scaled gradients overflow is
    # skipped and the scale lowered, as torch.amp does; bfloat16 and float32 need neither.
    scaler = torch.amp.GradScaler(device.type, enabled=getattr(model, "compute_dtype", None) == torch.float16)
    skipped = 0
    warmup = max(1, int(warmup_fraction * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, steps, warmup))
    gen = torch.Generator().manual_seed(seed)
    if mix is not None and (len(mix) != len(datasets) or min(mix) < 0 or sum(mix) <= 0):
        raise ValueError(f"{desc}: mix needs one weight >= 0 per dataset ({len(datasets)}), not all 0; got {list(mix)}")
    sizes = torch.tensor([len(d) for d in datasets] if mix is None else list(mix), dtype=torch.float)
    orders = [torch.randperm(len(d), generator=gen) for d in datasets]
    cursors = [0] * len(datasets)

    model.train()
    losses = []
    examples, meter = 0, FlopMeter()
    t0 = time.perf_counter()
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False, unit="step"):
        k = int(torch.multinomial(sizes, 1, generator=gen)) if len(datasets) > 1 else 0  # sizes: or the mix
        d = datasets[k]
        if cursors[k] + batch_size > len(d):  # new epoch over this dataset
            orders[k], cursors[k] = torch.randperm(len(d), generator=gen), 0
        idx = orders[k][cursors[k]: cursors[k] + batch_size].tolist()
        cursors[k] += batch_size
        batch = d.batch(idx).to(device)
        examples += len(idx)
        meter.start_step(int(batch.attention.sum()))
        out = model(batch, router_aux_loss=router_aux_loss)
        loss = out.loss if extra_loss is None else out.loss + extra_loss(batch)
        value = loss.item()
        if not math.isfinite(value):  # a nan or inf loss: every later step would be meaningless
            raise Diverged(desc, step + 1, steps, f"loss {value}")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        meter.end_step()
        scaler.unscale_(opt)
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
        if not math.isfinite(norm):
            skipped = skipped + 1 if scaler.is_enabled() else SCALER_PATIENCE
            if skipped >= SCALER_PATIENCE:
                raise Diverged(desc, step + 1, steps, f"gradient norm {norm}"
                               + (f" in {skipped} steps in a row" if scaler.is_enabled() else ""))
        else:
            skipped = 0
        faults.point(f"{desc}:step{step + 1}")
        if scaler.is_enabled():
            scaler.step(opt)  # skipped where the gradients overflowed
            scaler.update()
        else:
            optimizer_step(opt, desc, step + 1, steps)
        sched.step()
        losses.append(value)
    model.eval()
    # the last step's update is seen by no later loss: check what it left
    check_finite(((n, p) for n, p in model.named_parameters() if p.requires_grad), desc, steps, steps)
    secs = time.perf_counter() - t0
    return TrainStats(steps, losses[0] if losses else float("nan"), sum(losses[-10:]) / max(1, len(losses[-10:])),
                      secs, secs / max(1, steps), examples, meter.tokens, meter.flops)


@torch.no_grad()
def item_correct(model: MultimodalLM, data: TaskData, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Exact match of every item of `data`, in order: a bool tensor (N,) on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        idx = range(start, min(len(data), start + batch_size))
        out.append(model.correct(data.batch(idx).to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def accuracy(model: MultimodalLM, data: TaskData, device: torch.device, batch_size: int = 256) -> float:
    """Exact-match accuracy of `model` on `data`."""
    return int(item_correct(model, data, device, batch_size).sum()) / len(data)


def longest_answer(data: TaskData) -> int:
    """The longest answer of `data` in tokens: generated scoring's default bound on the tokens decoded."""
    return max((len(s) - n for s, n in zip(data.seqs, data.n_prompt)), default=1)


@torch.no_grad()
def generate(model: MultimodalLM, data: TaskData, device: torch.device, batch_size: int = 256,
             max_new_tokens: int | None = None) -> list[str]:
    """Greedy answers to every prompt of `data`, in order, decoded to text (special tokens left out).

    Each row decodes from its own prompt (the modality's input in its slots, as in training) until it gives the
    end-of-sequence token or `max_new_tokens` tokens (None: `longest_answer(data)`). Every step runs the model's
    forward over the whole prefix, no cache: a batch hook (MoExtend's scope) sees the same full batches as in
    training. Rows are right-padded, so a causal LM's logits at each row's last real position ignore the padding.
    """
    model.eval()
    tok = model.tokenizer
    limit = longest_answer(data) if max_new_tokens is None else max_new_tokens
    eos = tok.eos_token_id
    out: list[str] = []
    for start in range(0, len(data), batch_size):
        index = list(range(start, min(len(data), start + batch_size)))
        B = len(index)
        lengths = torch.tensor([data.n_prompt[i] for i in index], device=device)  # (B,) tokens so far
        width = int(lengths.max()) + limit
        ids = torch.full((B, width), data.pad_id, dtype=torch.long, device=device)
        attention = torch.zeros((B, width), dtype=torch.long, device=device)
        for row, i in enumerate(index):
            ids[row, : data.n_prompt[i]] = torch.tensor(data.seqs[i][: data.n_prompt[i]], device=device)
            attention[row, : data.n_prompt[i]] = 1
        masks = data.slot_masks(index, width, device)
        rows, first = torch.arange(B, device=device), lengths.clone()
        done = torch.zeros(B, dtype=torch.bool, device=device)
        for _ in range(limit):
            L = int(lengths.max())
            batch = data.make_batch(ids[:, :L], attention[:, :L], torch.zeros_like(ids[:, :L], dtype=torch.bool),
                                    index, [m[:, :L] for m in masks])
            with model.autocast():
                embeds, _ = model.inputs(batch)
                logits = model.lm(inputs_embeds=embeds, attention_mask=batch.attention).logits  # (B, L, V)
            nxt = logits[rows, lengths - 1].argmax(-1)  # (B,) the token after each row's last one
            if eos is not None:
                done |= nxt == eos
            grow = ~done
            ids[rows[grow], lengths[grow]] = nxt[grow]
            attention[rows[grow], lengths[grow]] = 1
            lengths += grow.long()
            if bool(done.all()):
                break
        for row in range(B):
            new = ids[row, int(first[row]): int(lengths[row])].tolist()
            out.append(tok.decode(new, skip_special_tokens=True))
    return out

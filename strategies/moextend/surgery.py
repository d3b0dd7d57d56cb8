"""MoE-layer surgery for MoExtend: add experts and router rows to transformers' MoE blocks.

transformers 5 keeps a block's experts as fused 3-D tensors (gate_up_proj (E, 2I, H),
down_proj (E, H, I)) and its router's weight (E, H) in gate (router in Granite-MoE). requires_grad is per tensor,
so added experts live in tensors of their own: an extended block holds the original
block untouched (frozen) and, per stage, a module of the family's own experts class with
the new expert(s), a router row per new expert and a calibration module. The old experts
are still computed by the family's expert code (eager, batched_mm or grouped_mm); the
new ones by the same code on their own tensors.

Hand-written because no library extends a pretrained MoE layer with new experts.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

# The families' layouts (where a layer keeps its block and a block its router) are in cl_bench.models.families:
# the routing analysis, adapters and LoRA find the blocks through them too.
from cl_bench.models.families import FAMILIES, Family, decoder_layers, family_of  # noqa: F401


def moe_layers(lm: nn.Module) -> list[int]:
    """Indices of decoder layers whose MoE slot holds a sparse block (original or extended)."""
    fam = family_of(lm)
    return [i for i, layer in enumerate(decoder_layers(lm))
            if type(fam.block(layer)).__name__ == fam.block_class or isinstance(fam.block(layer), ExtendedMoeBlock)]


class Calibration(nn.Module):
    """p' = p + W2 GELU(W1 p); W2 = 0 at start, so the module begins as the identity."""

    def __init__(self, n_experts: int, hidden: int = 16, init_std: float = 0.02) -> None:
        super().__init__()
        self.w1 = nn.Linear(n_experts, hidden, bias=False)
        self.w2 = nn.Linear(hidden, n_experts, bias=False)
        nn.init.normal_(self.w1.weight, std=init_std)
        nn.init.zeros_(self.w2.weight)

    def delta(self, p: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(p)))


class Addition(nn.Module):
    """One stage's additions to a block: expert(s) in their own tensors, router rows, calibration.

    `offset` is added to the new rows' logits: 0 and never trained for the paper's copied rows;
    negative under MoExtend's router-init=outside, where it starts each new expert below the top-k.
    """

    def __init__(self, experts: nn.Module, router: torch.Tensor, calibration: Calibration, sources: list[int],
                 stage: int) -> None:
        super().__init__()
        self.experts = experts
        self.router = nn.Parameter(router)  # (n_new, H)
        self.offset = nn.Parameter(torch.zeros(router.shape[0], dtype=router.dtype, device=router.device))  # (n_new,)
        self.calibration = calibration  # over all experts up to and including these
        self.register_buffer("sources", torch.tensor(sources, dtype=torch.long))
        self.register_buffer("stage", torch.tensor(stage, dtype=torch.long))

    @property
    def n(self) -> int:
        return self.router.shape[0]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Router logits of the new experts, (N, n_new)."""
        return F.linear(h, self.router) + self.offset


def slice_experts(experts: nn.Module, index: list[int]) -> nn.Module:
    """A new module of the same experts class holding copies of experts `index` only.

    Built without copying the other experts' tensors (a shallow copy with fresh parameters).
    """
    new = copy.copy(experts)
    new._parameters = {}
    new._buffers = dict(experts._buffers)
    new._modules = dict(experts._modules)
    for name, p in experts._parameters.items():
        if p is None:
            new._parameters[name] = None
        else:
            new._parameters[name] = nn.Parameter(p.detach()[index].clone(), requires_grad=True)
    new.num_experts = len(index)
    return new


class ExtendedMoeBlock(nn.Module):
    """A family's sparse MoE block plus MoExtend's additions.

    Routing (the paper's): logits = [old rows, new rows]; p = softmax(logits); top-k chosen
    on p (uncalibrated); p' = p + the sum of the stages' calibrations; the chosen weights are
    gathered from p' and renormalised as the family does. With no additions it computes
    exactly what the original block does.

    Two choices that the paper leaves open, set by MoExtend's options:
    - `calibration_input`: "prefix" feeds each stage's calibration the first entries of the
      current softmax (which shrink once a later stage adds experts); "own" feeds it the
      softmax over its own expert set, the distribution it was trained on.
    - `scope`: a (N,) bool mask of the tokens the additions act on (None: every token, the
      paper's); elsewhere the block routes exactly as the original one.
    """

    def __init__(self, block: nn.Module, family: Family) -> None:
        super().__init__()
        self.block = block
        self.family = family
        self.additions = nn.ModuleList()
        self.top_k = family.router(block).top_k
        self.calibration_input = "prefix"
        self.scope: torch.Tensor | None = None
        self.last_router_logits: torch.Tensor | None = None  # (N, E') of the last forward
        self.last_indices: torch.Tensor | None = None  # (N, k) experts used in the last forward
        # Old and new experts each see the other group's picks as "not mine" (index = their
        # num_experts, weight 0): eager skips such slots, batched/grouped kernels need this flag.
        block.experts._is_expert_parallel = True

    @property
    def gate_weight(self) -> nn.Parameter:
        """The original router's rows, (E, H)."""
        return self.family.router(self.block).weight

    @property
    def n_original(self) -> int:
        return self.gate_weight.shape[0]

    @property
    def n_experts(self) -> int:
        return self.n_original + sum(a.n for a in self.additions)

    @property
    def expert_stages(self) -> list[int]:
        """Per expert, the stage that added it (-1: an original expert)."""
        return [-1] * self.n_original + [int(a.stage) for a in self.additions for _ in range(a.n)]

    def add_experts(self, sources: list[int], stage: int, calibration_hidden: int = 16,
                    init_std: float = 0.02) -> Addition:
        """Add one new expert per source (copies of the source expert and of its router row)."""
        all_rows = self.router_weight().detach()
        located = [self._locate(s) for s in sources]
        if any(mod is not located[0][0] for mod, _ in located):
            raise ValueError(f"sources {sources} lie in different expert groups; add them in separate calls")
        experts = slice_experts(located[0][0], [i for _, i in located])
        experts._is_expert_parallel = True
        add = Addition(experts, all_rows[sources].clone(), Calibration(self.n_experts + len(sources),
                                                                       calibration_hidden, init_std), sources, stage)
        offsets = torch.cat([torch.zeros(self.n_original, dtype=all_rows.dtype, device=all_rows.device),
                             *[a.offset.detach() for a in self.additions]])
        with torch.no_grad():  # a copy of an earlier addition copies its logit offset too
            add.offset.copy_(offsets[sources])
        add.to(all_rows.device)
        self.additions.append(add)
        return add

    def _locate(self, index: int) -> tuple[nn.Module, int]:
        """The experts module holding expert `index` of this block, and its index there."""
        groups = [(self.block.experts, self.n_original), *[(a.experts, a.n) for a in self.additions]]
        offset = 0
        for experts, n in groups:
            if index < offset + n:
                return experts, index - offset
            offset += n
        raise IndexError(f"expert {index} does not exist (the block has {self.n_experts})")

    def router_weight(self) -> torch.Tensor:
        """All router rows, (n_experts, H)."""
        return torch.cat([self.gate_weight, *[a.router for a in self.additions]], 0)

    def _original_route(self, logits: torch.Tensor):
        """The family's own routing over the original experts (bit for bit what its router computes)."""
        if self.family.topk_of_logits:
            top_logits, idx = logits.float().topk(self.top_k, dim=-1)
            return torch.softmax(top_logits, dim=-1), idx
        p = torch.softmax(logits.float(), dim=-1)
        top_p, idx = torch.topk(p, self.top_k, dim=-1)
        if self.family.renormalizes(self.block):
            top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        return top_p, idx

    def route(self, h: torch.Tensor):
        """(logits (N, E'), weights (N, k), indices (N, k)) for flattened hidden states h (N, H)."""
        E = self.n_original
        old = F.linear(h, self.gate_weight)  # (N, E): computed alone, so bit-identical to the router's
        if not self.additions:
            top_p, idx = self._original_route(old)
            return old, (top_p if self.family.float_weights else top_p.to(old.dtype)), idx
        logits = torch.cat([old, *[a.logits(h) for a in self.additions]], -1)  # (N, E')
        lf = logits.float()
        # q = exp(logits - logsumexp(old logits)): the softmax over the original experts, extended by the new
        # experts' probabilities relative to that normaliser; p = q / S with S = q.sum(-1). Top-k and the
        # renormalised weights are the same on q as on p, and q keeps the original experts' entries bit for
        # bit, so an extension that no token routes to (router-init=outside) changes nothing.
        q = torch.cat([torch.softmax(lf[:, :E], -1), torch.exp(lf[:, E:] - torch.logsumexp(lf[:, :E], -1, keepdim=True))],
                      -1)
        S = q.sum(-1, keepdim=True)
        # chosen on the uncalibrated probabilities (on the logits, their order, where the family's router does so)
        idx = torch.topk(lf if self.family.topk_of_logits else q, self.top_k, dim=-1).indices
        delta = torch.zeros_like(q)
        for a in self.additions:
            n = a.calibration.w1.in_features
            fed = q[:, :n] / S if self.calibration_input == "prefix" else torch.softmax(lf[:, :n], -1)
            d = a.calibration.delta(fed.to(a.calibration.w1.weight.dtype)).float()
            delta = delta + F.pad(d, (0, q.shape[-1] - n))
        if self.family.topk_of_logits:
            # Granite-MoE's router takes the softmax of the k chosen logits, which is p gathered and renormalised.
            # p' = p + delta renormalised over the k, (p_k + d_k) / (P_k + D), is written base + (d_k - base D) /
            # (P_k + D) with base = that softmax: bit for bit the router's own weights while the calibrations are 0.
            base = torch.softmax(torch.gather(lf, 1, idx), dim=-1)
            d = torch.gather(delta, 1, idx)
            D = d.sum(-1, keepdim=True)
            top_p = base + (d - base * D) / (torch.gather(q / S, 1, idx).sum(-1, keepdim=True) + D)
        elif self.family.renormalizes(self.block):  # p' = p + delta, gathered and renormalised, computed on q
            top_p = torch.gather(q + S * delta, 1, idx)
            top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        else:
            top_p = torch.gather(q / S + delta, 1, idx)
        if self.scope is not None:  # outside the scope: the original routing, the additions unused
            orig_p, orig_idx = self._original_route(old)
            inside = self.scope.reshape(-1, 1).to(idx.device)
            top_p, idx = torch.where(inside, top_p, orig_p), torch.where(inside, idx, orig_idx)
        return logits, (top_p if self.family.float_weights else top_p.to(logits.dtype)), idx

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        B, S, H = hidden_states.shape
        h = hidden_states.reshape(-1, H)
        logits, weights, idx = self.route(h)
        self.last_router_logits, self.last_indices = logits, idx
        out = self._group(self.block.experts, h, idx, weights, 0, self.n_original)
        offset = self.n_original
        for a in self.additions:
            out = out + self._group(a.experts, h, idx, weights, offset, a.n)
            offset += a.n
        if self.family.shared_expert:
            out = out + torch.sigmoid(self.block.shared_expert_gate(h)) * self.block.shared_expert(h)
        return out.reshape(B, S, H)

    @staticmethod
    def _group(experts, h, idx, weights, offset, n):
        local = idx - offset
        mine = (local >= 0) & (local < n)
        return experts(h, torch.where(mine, local, n), torch.where(mine, weights, torch.zeros_like(weights)))


def room_below_topk(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Per expert, the least (k-th largest logit - its logit) over tokens. (N, E) -> (E,).

    A copy of expert e's router row with logit offset `room[e] - margin` (margin > 0) is below
    the top-k on every one of these tokens: MoExtend's router-init=outside.
    """
    lf = logits.float()
    kth = torch.topk(lf, top_k, dim=-1).values[:, -1:]  # (N, 1)
    return (kth - lf).min(0).values


def extend(lm: nn.Module) -> list[ExtendedMoeBlock]:
    """Wrap every sparse MoE block of `lm` in an ExtendedMoeBlock (in place; idempotent)."""
    fam = family_of(lm)
    out = []
    for i in moe_layers(lm):
        layer = decoder_layers(lm)[i]
        if not isinstance(fam.block(layer), ExtendedMoeBlock):
            setattr(layer, fam.block_attr, ExtendedMoeBlock(fam.block(layer), fam))
        out.append(fam.block(layer))
    if not out:
        raise ValueError(f"the {fam.model_type} model has no sparse MoE layer to extend")
    return out


def extended_blocks(lm: nn.Module) -> dict[int, ExtendedMoeBlock]:
    fam = family_of(lm)
    return {i: fam.block(layer) for i, layer in enumerate(decoder_layers(lm))
            if isinstance(fam.block(layer), ExtendedMoeBlock)}


def structure(lm: nn.Module) -> list[list[int]]:
    """[[stage, layer, source], ...] for every added expert, in order of addition."""
    rows = []
    for i, block in extended_blocks(lm).items():
        for a in block.additions:
            rows += [[int(a.stage), i, int(s)] for s in a.sources.tolist()]
    return sorted(rows)


def apply_structure(lm: nn.Module, rows: list[list[int]], calibration_hidden: int = 16) -> None:
    """Rebuild on a freshly loaded base model the additions that `structure` describes.

    Additions are re-made stage by stage, as they were made; their weights are loaded afterwards.
    """
    blocks = {i: b for i, b in zip(moe_layers(lm), extend(lm))}
    for stage in sorted({r[0] for r in rows}):
        for layer in sorted({r[1] for r in rows if r[0] == stage}):
            sources = [r[2] for r in rows if r[0] == stage and r[1] == layer]
            blocks[layer].add_experts(sources, stage, calibration_hidden)


def save_extended(lm: nn.Module, directory, calibration_hidden: int = 16) -> None:
    """Save an extended model: its config, weights (safetensors) and the structure of its additions."""
    import json
    from pathlib import Path

    from safetensors.torch import save_model

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    lm.config.save_pretrained(d)
    save_model(lm, str(d / "model.safetensors"))
    (d / "moextend.json").write_text(json.dumps({"structure": structure(lm),
                                                 "calibration_hidden": calibration_hidden}))


def load_extended(directory, device="cpu") -> nn.Module:
    """Load a model saved by save_extended: base architecture, additions, then the weights."""
    import json
    from pathlib import Path

    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM

    d = Path(directory)
    meta = json.loads((d / "moextend.json").read_text())
    lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d))
    apply_structure(lm, meta["structure"], meta["calibration_hidden"])
    load_model(lm, str(d / "model.safetensors"), device=str(device))
    return lm.to(device).eval()


def load_balancing_loss(logits: torch.Tensor, top_k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Switch-style load-balancing loss of one layer: E * sum_e f_e * P_e.

    logits (N, E); f_e = fraction of top-k slots routed to e, P_e = mean router probability;
    mask (N,) selects real (non-padding) tokens. The same formula as transformers'
    load_balancing_loss_func, per layer, so that layers may have different expert counts.
    """
    p = torch.softmax(logits.float(), dim=-1)
    chosen = F.one_hot(torch.topk(p, top_k, dim=-1).indices, p.shape[-1]).float()  # (N, k, E)
    if mask is not None:
        m = mask.reshape(-1).to(p.dtype)
        f = (chosen * m[:, None, None]).sum(0) / m.sum().clamp(min=1)  # (k, E)
        P = (p * m[:, None]).sum(0) / m.sum().clamp(min=1)
    else:
        f, P = chosen.mean(0), p.mean(0)
    return p.shape[-1] * (f * P.unsqueeze(0)).sum()


def n_selected(n_layers: int, fraction: float) -> int:
    return max(1, math.ceil(n_layers * fraction))

"""MoExtend: new experts for each new modality, with extended routers and calibration.

Three phases per new modality (Zhong et al., ACL 2024 SRW; see docs/strategies.md, "MoExtend"):
1. alignment: only the modality's projector trains;
2. extension: the existing routers are tuned on the modality (the rest frozen), the
   top-k routing distributions before and after are compared per layer on the
   modality's validation inputs, the layers that shift most are chosen with, for each,
   the expert most used after tuning as the source; the tuned routers are then thrown
   away (restored bit for bit);
3. fine-tuning: each chosen layer gets a copy of its source expert, a copy of its
   router row and a calibration module; only these and the projector train, with a
   load-balancing loss over the extended expert count.
Everything that existed before the stage stays frozen, earlier additions included.

Options expose the choices where this setting departs from the paper's or the paper is
silent (docs/strategies.md, "MoExtend", "Divergences and their options"): router-init, scope, text-mix,
calibration-input, keep-tuned-routers; each run records every task's validation accuracy
after alignment and right after the surgery, before fine-tuning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import torch

from cl_bench.streams.experience import Experience
from cl_bench.strategies.moextend import selection, surgery
from cl_bench.api.strategy import Declaration, Memory, Strategy, tensor_bytes


@dataclass(frozen=True)
class MoExtendConfig:
    """Options of MoExtend (defaults: the paper's choices, learning rates scaled to the tiny model)."""

    fraction: float = field(default=0.5, metadata={"help": "fraction of MoE layers extended per modality"})
    layer_choice: Literal["data", "all", "first-half", "random"] = field(
        default="data", metadata={"help": "data (routing shift), all, first-half or random"})
    phases: Literal["budget", "paper"] = field(default="budget", metadata={
        "help": "budget: the stage budget split 40/10/50 over alignment, extension, fine-tuning; paper: each "
                "phase as long as in the paper relative to one stage (2.25 x the budget, labelled)"})
    align_share: float = field(default=0.4, metadata={
        "help": "phases=budget: the share of the stage budget spent on alignment (extension keeps 0.1, fine-tuning "
                "the rest)"})
    align_steps: int | None = field(default=None, metadata={"help": "alignment steps (default: from `phases`)"})
    extension_steps: int | None = field(default=None, metadata={"help": "router-tuning steps (default: from `phases`)"})
    finetune_steps: int | None = field(default=None, metadata={"help": "fine-tuning steps (default: from `phases`)"})
    # align_lr (and finetune_lr, projector_lr, align_share, calibration_input as they were): chosen by clbench tune,
    # results/hparams/vision-audio.md
    align_lr: float = field(default=1e-3, metadata={"help": "projector learning rate in alignment"})
    extension_lr: float = field(default=1e-3, metadata={"help": "router learning rate in extension"})
    finetune_lr: float = field(default=1e-3, metadata={"help": "learning rate of new experts, rows, calibration"})
    projector_lr: float = field(default=2e-3, metadata={"help": "projector learning rate in fine-tuning"})
    aux_loss_coef: float = field(default=0.001, metadata={"help": "load-balancing loss coefficient"})
    calibration_hidden: int = field(default=16, metadata={"help": "hidden size of the calibration module"})
    stats_items: int = field(default=200, metadata={"help": "validation items for the routing statistics"})
    router_init: Literal["copy", "outside"] = field(default="copy", metadata={
        "help": "copy: the new router row copies the source's (the paper's; source and copy tie, so tokens change "
                "experts before any training); outside: the same row with a trained logit offset that starts it "
                "below the top-k on every validation token (the extended model answers as before)"})
    outside_margin: float = field(default=1.0, metadata={
        "help": "router-init=outside: logits by which the new expert starts below each token's k-th"})
    scope: Literal["all", "input", "input-after"] = field(default="all", metadata={
        "help": "tokens the additions act on: all (the paper's), input (the modality's input positions only) or "
                "input-after (those and every later position); not the paper's unless all"})
    text_mix: float = field(default=0.0, metadata={
        "help": "share of fine-tuning batches drawn from the base text task's training split (the paper's mix "
                "keeps text-only conversations); declared as rehearsal"})
    calibration_input: Literal["prefix", "own"] = field(default="prefix", metadata={
        "help": "what an earlier stage's calibration is fed once later stages add experts: prefix (its entries "
                "of the current softmax) or own (the softmax over its own expert set, as in its training)"})
    keep_tuned_routers: bool = field(default=False, metadata={
        "help": "keep the router-tuned gates for fine-tuning, as the public code does (the original routers "
                "then change); default: restore them bit for bit"})

    def __post_init__(self) -> None:
        if self.phases not in ("budget", "paper"):
            raise ValueError(f"MoExtendConfig.phases must be 'budget' or 'paper', got {self.phases!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"MoExtendConfig.fraction must be in (0, 1], got {self.fraction}")
        if self.layer_choice not in selection.LAYER_CHOICES:
            raise ValueError(f"MoExtendConfig.layer_choice must be one of {', '.join(selection.LAYER_CHOICES)}, "
                             f"got {self.layer_choice!r}")
        for name in ("align_steps", "extension_steps", "finetune_steps"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"MoExtendConfig.{name} must be >= 1 (or None for the default), got {v}")
        for name in ("align_lr", "extension_lr", "finetune_lr", "projector_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MoExtendConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.aux_loss_coef < 0 or self.calibration_hidden < 1 or self.stats_items < 1:
            raise ValueError("MoExtendConfig: aux_loss_coef must be >= 0, calibration_hidden and stats_items >= 1")
        for name, allowed in (("router_init", ("copy", "outside")), ("scope", ("all", "input", "input-after")),
                              ("calibration_input", ("prefix", "own"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"MoExtendConfig.{name} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        if not 0.0 < self.align_share <= 0.8:  # extension keeps 0.1 and fine-tuning at least 0.1
            raise ValueError(f"MoExtendConfig.align_share must be in (0, 0.8], got {self.align_share}")
        if not 0.0 <= self.text_mix < 1.0:
            raise ValueError(f"MoExtendConfig.text_mix must be in [0, 1), got {self.text_mix}")
        if not self.outside_margin >= 0:
            raise ValueError(f"MoExtendConfig.outside_margin must be >= 0, got {self.outside_margin}")


class MoExtend(Strategy):
    """New experts and router rows per modality, with calibration; the pretrained LM stays frozen."""

    setup_keeps_outputs = True  # row 0 is shared (cl_bench.run.shared; tests/test_shared.py checks it)

    Config = MoExtendConfig
    tuning = {"align_lr": ("1e-3", "3e-3", "1e-2"), "projector_lr": ("1e-3", "3e-3", "1e-2"),
              "finetune_lr": ("3e-4", "1e-3", "3e-3"), "align_share": ("0.2", "0.4", "0.6"),
              "calibration_input": ("prefix", "own")}
    declares = Declaration(task_weights=True)  # an expert, router row and calibration per modality (not routed
    # by modality: the extended routers choose among old and new experts for every token)

    def phase_steps(self, steps: int, has_projector: bool = True) -> tuple[int, int, int]:
        """(alignment, extension, fine-tuning) steps of a stage whose budget is `steps`.

        phases=budget splits the budget 40/10/50, close to the paper's phase sizes (558K
        alignment pairs, 1,000 router-tuning steps, 665K instruction pairs); without a
        projector to align, alignment's share goes to fine-tuning. phases=paper gives
        alignment and fine-tuning the whole budget each and extension a quarter of it, as the
        earlier clbench did. Explicit *_steps options override either.
        """
        cfg = self.config
        if cfg.phases == "paper":
            align, ext, ft = steps, max(1, steps // 4), steps
        else:
            ext = max(1, round(0.1 * steps))
            align = max(1, round(cfg.align_share * steps)) if has_projector else 0
            ft = max(1, steps - align - ext)
        align = (cfg.align_steps or align) if has_projector else 0
        return align, cfg.extension_steps or ext, cfg.finetune_steps or ft

    def declaration(self) -> Declaration:
        align, ext, ft = self.phase_steps(self.context.budget.steps)
        ratio = (align + ext + ft) / self.context.budget.steps
        budget = "equal"
        if abs(ratio - 1) >= 1e-9:
            why = "the paper's phase lengths" if self.config.phases == "paper" else "phase steps set by options"
            budget = f"{ratio:.2f} x the stage budget ({why})"
        # text-mix rehearses the base text task's training split; scope=input* routes additions by position
        # (the modality's input tokens), not by a modality label, so it is not `modality_routed`.
        # router-init=outside places the new rows from the base text task's validation inputs (read, not kept).
        return Declaration(past_train=self.config.text_mix > 0, past_val=self.config.router_init == "outside",
                           task_weights=True, budget=budget)

    def memory(self) -> Memory:
        base = self.context.base
        kept = {base.name: len(base.train)} if self.config.text_mix > 0 and base is not None else {}
        return Memory(past_train_items=kept, task_weight_bytes=tensor_bytes(
            p for b in self.blocks for a in b.additions for p in a.parameters()))

    def setup(self, model, context) -> None:
        super().setup(model, context)
        surgery.family_of(model.lm)  # a clear error for a non-MoE model, before anything runs
        self.layers = surgery.moe_layers(model.lm)
        self.blocks = surgery.extend(model.lm)  # identity wrappers until experts are added
        for b in self.blocks:
            b.calibration_input = self.config.calibration_input
        if self.config.scope != "all":
            model.batch_hooks.append(self._set_scope)
        if self.config.text_mix > 0 and context.base is None:
            raise ValueError("moextend: text-mix needs the base text task's training split, which this run does not "
                             "have; use -o text-mix=0")
        self.stage = 0
        self._base_active = self.active_parameters()

    def footprint(self, model, modality: str):
        """The stage's new experts, router rows and calibrations (added to the meta model by the surgery's own
        code) and the projector train; which layers are chosen does not change the counts."""
        from cl_bench.api.footprint import Footprint, numel, projector

        blocks = getattr(model, "_plan_blocks", None)
        if blocks is None:
            blocks = model._plan_blocks = surgery.extend(model.lm)
        n = len(blocks) if self.config.layer_choice == "all" else selection.n_selected(len(blocks),
                                                                                     self.config.fraction)
        std = getattr(model.lm.config, "initializer_range", 0.02)
        stage = sum(len(b.additions) for b in blocks[:1])
        new = [b.add_experts([0], stage, self.config.calibration_hidden, std) for b in blocks[:n]]
        trained = [p for a in new for name, p in a.named_parameters()
                   if name != "offset" or self.config.router_init == "outside"]
        proj = projector(model, modality)
        return Footprint(trainable=sum(p.numel() for p in trained) + numel(proj),
                         largest=max([p.numel() for p in trained] + [p.numel() for p in proj.parameters()]),
                         base_frozen=True)

    def frozen(self) -> list[torch.nn.Parameter]:
        # Called right after setup, before any addition: the whole pretrained LM, routers included
        # (but for the routers when keep-tuned-routers lets router tuning change them).
        routers = {id(b.gate_weight) for b in self.blocks} if self.config.keep_tuned_routers else set()
        return [p for p in self.model.lm.parameters() if id(p) not in routers]

    def _set_scope(self, batch) -> None:
        """Tell every block which tokens of this batch the additions act on (scope=input / input-after)."""
        if batch.slots is None:  # text: no input positions, so no token reaches the additions
            mask = torch.zeros_like(batch.ids, dtype=torch.bool)
        else:
            mask = batch.slots if self.config.scope == "input" else batch.slots.cumsum(1) > 0
        for b in self.blocks:
            b.scope = mask.reshape(-1)

    # -- phases ----------------------------------------------------------------------
    def learn(self, experience: Experience) -> dict:
        cfg, m = self.config, self.model
        has_projector = experience.modality in m.projectors
        align_steps, extension_steps, finetune_steps = self.phase_steps(self.context.budget.steps, has_projector)
        proj = list(m.projectors[experience.modality].parameters()) if has_projector else []
        times = {}

        t0 = time.perf_counter()
        align = None
        if has_projector:
            self.freeze_all()
            m.projectors[experience.modality].requires_grad_(True)
            align = self.fit(experience, [{"params": proj, "lr": cfg.align_lr}], f"{experience.name} alignment",
                             steps=align_steps, router_aux_loss=False)
        times["align_seconds"] = round(time.perf_counter() - t0, 3)

        self.checkpoint("after-alignment")
        t0 = time.perf_counter()
        layers, sources, scores, ext = self.extension(experience, extension_steps)
        times["extension_seconds"] = round(time.perf_counter() - t0, 3)

        t0 = time.perf_counter()
        self.freeze_all()
        chosen = [self.blocks[self.layers.index(layer)] for layer in layers]
        margins = self.outside_offsets(experience, chosen, sources) if cfg.router_init == "outside" else None
        new = []
        std = getattr(m.lm.config, "initializer_range", 0.02)
        for i, (block, src) in enumerate(zip(chosen, sources)):
            add = block.add_experts([src], self.stage, cfg.calibration_hidden, std)
            if margins is not None:
                with torch.no_grad():
                    add.offset.add_(margins[i])
            new += [p for name, p in add.named_parameters() if name != "offset" or cfg.router_init == "outside"]
        for p in new:
            p.requires_grad_(True)
        self.checkpoint("after-surgery")
        groups = [{"params": new, "lr": cfg.finetune_lr}]
        if has_projector:
            m.projectors[experience.modality].requires_grad_(True)
            groups.append({"params": proj, "lr": cfg.projector_lr})
        mixed = {}
        if cfg.text_mix > 0:  # a share of the base text task's training batches, as the paper's mix has
            mixed = {"data": [self.data(experience, "train"), self._base_text("train")],
                     "mix": [1.0 - cfg.text_mix, cfg.text_mix]}
        finetune = self.fit(experience, groups, f"{experience.name} fine-tuning", steps=finetune_steps,
                            router_aux_loss=False, extra_loss=self.aux_loss, **mixed)
        times["finetune_seconds"] = round(time.perf_counter() - t0, 3)
        self.stage += 1
        active = self.active_parameters()
        summary = (f"align {times['align_seconds']:.1f} s, extension {times['extension_seconds']:.1f} s, "
                   f"fine-tuning {times['finetune_seconds']:.1f} s; layers {layers} extended from experts {sources}; "
                   f"active parameters per token {self._base_active:,} -> {active:,}")
        return {**times, "summary": summary, "seconds_per_step": finetune["seconds_per_step"],  # of fine-tuning
                "extended_layers": layers, "source_experts": sources,
                "routing_shift": [round(float(s), 6) for s in scores],
                "router_offsets": None if margins is None else [round(x, 6) for x in margins],
                "active_parameters_per_token": {"base": self._base_active, "now": active},
                "align": align, "extension": ext, "finetune": finetune}

    def extension(self, experience: Experience, steps: int):
        """Router-only tuning, routing statistics before/after, layer and source choice; routers restored."""
        cfg = self.config
        self.freeze_all()
        routers = [b.gate_weight for b in self.blocks] + [a.router for b in self.blocks for a in b.additions]
        saved = [r.detach().clone() for r in routers]
        before = self.routing_counts(experience)
        for r in routers:
            r.requires_grad_(True)
        stats = self.fit(experience, [{"params": routers, "lr": cfg.extension_lr}], f"{experience.name} extension",
                         steps=steps, router_aux_loss=False, extra_loss=self.aux_loss)
        after = self.routing_counts(experience)
        if not cfg.keep_tuned_routers:
            with torch.no_grad():  # the tuned routers are discarded: only the selection is kept
                for r, s in zip(routers, saved):
                    r.copy_(s)
        self.freeze_all()
        scores = torch.stack([selection.routing_shift(b[None], a[None])[0] for b, a in zip(before, after)])
        chosen = selection.select_layers(scores, cfg.fraction, cfg.layer_choice, seed=self.seed_for(experience))
        sources = selection.source_experts(torch.nn.utils.rnn.pad_sequence(after, batch_first=True), chosen)
        return [self.layers[i] for i in chosen], sources, scores.tolist(), stats

    @torch.no_grad()
    def routing_counts(self, experience: Experience) -> list[torch.Tensor]:
        """Per MoE layer, top-k counts per expert on the modality's validation inputs (not test)."""
        data = self.data(experience, "val")
        n = min(len(data), self.config.stats_items)
        counts = [torch.zeros(b.n_experts, dtype=torch.float64) for b in self.blocks]
        self.model.eval()
        for start in range(0, n, 64):
            batch = data.batch(range(start, min(n, start + 64))).to(self.context.device)
            self.model.correct(batch)  # a forward pass; the blocks keep their router logits
            for c, b in zip(counts, self.blocks):
                c += selection.topk_counts(b.last_router_logits, b.top_k, batch.attention).cpu()
        return counts

    @torch.no_grad()
    def outside_offsets(self, experience: Experience, blocks, sources: list[int]) -> list[float]:
        """Per chosen block, the logit offset that starts a copy of its source below the top-k on every
        real token of the modality's and the base text task's validation inputs (stats_items of each)."""
        room = [torch.full((b.n_experts,), float("inf")) for b in blocks]
        splits = [self.data(experience, "val")] + ([self._base_text("val")] if self.context.base is not None else [])
        self.model.eval()
        for data in splits:
            n = min(len(data), self.config.stats_items)
            for start in range(0, n, 64):
                batch = data.batch(range(start, min(n, start + 64))).to(self.context.device)
                self.model.correct(batch)  # a forward pass; the blocks keep their router logits
                real = batch.attention.reshape(-1).bool()
                for i, b in enumerate(blocks):
                    room[i] = torch.minimum(room[i], surgery.room_below_topk(b.last_router_logits[real], b.top_k).cpu())
        return [float(r[s]) - self.config.outside_margin for r, s in zip(room, sources)]

    def _base_text(self, split: str):
        """The base text task's `split` as batches (for text-mix and router-init=outside), built once."""
        from cl_bench.api.training import TaskData

        cache = self.__dict__.setdefault("_base_cache", {})
        if split not in cache:
            cache[split] = TaskData(getattr(self.context.base, split), self.model, "text")
        return cache[split]

    def aux_loss(self, batch) -> torch.Tensor:
        """Load-balancing loss over each layer's current (extended) expert count, averaged over layers
        (over the tokens in the additions' scope when scope is not all)."""
        losses = []
        for b in self.blocks:
            mask = batch.attention.reshape(-1).bool()
            if b.scope is not None:
                mask = mask & b.scope
            losses.append(surgery.load_balancing_loss(b.last_router_logits, b.top_k, mask))
        return self.config.aux_loss_coef * torch.stack(losses).mean()

    # -- bookkeeping -------------------------------------------------------------------
    def active_parameters(self) -> int:
        """Parameters used per token: everything but the experts, plus top-k experts per MoE layer."""
        expert_ids = {id(p) for b in self.blocks for mod in (b.block.experts, *[a.experts for a in b.additions])
                      for p in mod.parameters()}
        dense = sum(p.numel() for p in self.model.lm.parameters() if id(p) not in expert_ids)
        per_expert = [sum(p.numel() for p in b.block.experts.parameters()) // b.n_original for b in self.blocks]
        return dense + sum(b.top_k * e for b, e in zip(self.blocks, per_expert))

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = super().state_dict()
        state["moextend.structure"] = torch.tensor(surgery.structure(self.model.lm) or [[-1, -1, -1]])
        state["moextend.stage"] = torch.tensor(self.stage)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        rows = [r for r in state["moextend.structure"].tolist() if r[0] >= 0]
        if surgery.structure(self.model.lm) != rows:
            surgery.apply_structure(self.model.lm, rows, self.config.calibration_hidden)
        self.stage = int(state["moextend.stage"])
        super().load_state_dict(state)

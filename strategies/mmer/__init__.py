"""MMER: training-free merge of per-modality models into one task vector, decoupled again
by a binary mask per modality (Li et al., ACL 2025; reconstruction in docs/strategies.md, "MMER").

For each new modality a copy of the base LM is fine-tuned on that modality alone (LM and
projector); its task vector tau_i = theta_i - theta_0 is kept on disk. All task vectors so
far are merged tensor by tensor into tau*, and each modality gets a mask
m_i = 1[|tau_i| >= lambda |tau_i - tau*|]. An input of modality i is answered with
theta_0 + alpha (m_i * tau*) and its own projector; text with theta_0. alpha and lambda
are chosen for each modality on its validation split (never test): by default for every
modality again each time a new one changes tau* (so earlier modalities' validation splits
are kept, and declared); with reselect=new only the new modality's are chosen, and the
earlier ones keep theirs (their masks are recomputed against the new tau* with their lambda).

A modality that comes back with a second task: its model is fine-tuned on from where its first
task left it (theta_0 + tau_i), so its task vector holds both tasks, and its alpha and lambda are
chosen on both tasks' validation splits. With route=task every task has its own task vector,
mask and projector copy instead, and an input is answered with its task's (the task is told).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from cl_bench.streams.experience import Experience, TaskInfo, input_modalities
from cl_bench.strategies.mmer import merge as M
from cl_bench.api.strategy import (Cost, Declaration, Memory, Strategy, TaskProjectors, check_route, latest_weights,
                                   route_option, tensor_bytes, weights_key)


def _grid(text: str, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"MMERConfig.{name} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"MMERConfig.{name} must list at least one value")
    return values


@dataclass(frozen=True)
class MMERConfig:
    """Options of MMER."""

    merge: Literal["max", "mean"] = field(default="max", metadata={"help": "max (MMER) or mean (TIES) over agreeing"})
    keep: float = field(default=1.0, metadata={"help": "TIES trimming: fraction of each task vector kept"})
    trim_scope: Literal["tensor", "vector"] = field(default="tensor", metadata={
        "help": "TIES trimming per parameter tensor (each tensor keeps its top fraction) or over the whole "
                "task vector (one threshold per modality, as TIES defines it)"})
    alphas: str = field(default="0.5,0.75,1.0,1.25,1.5", metadata={"help": "grid of alpha (comma-separated)"})
    lambdas: str = field(default="0.2,0.4,0.6,0.8,1.0", metadata={"help": "grid of lambda (comma-separated)"})
    sources: str = field(default="", metadata={
        "help": "modality=DIR,...: fine-tuned models merged as they are, without training (DIR: an LM saved "
                "with save_pretrained on the same base, plus projector.safetensors; task=DIR with route=task)"})
    export_dir: str = field(default="", metadata={"help": "save each per-modality fine-tuned model here (as sources)"})
    reselect: Literal["all", "new"] = field(default="all", metadata={
        "help": "all: choose alpha/lambda again for every modality at each stage, on their kept validation "
                "splits; new: only for the new modality, earlier ones keep theirs (no past validation data)"})
    # lr and projector_lr: chosen by clbench tune, results/hparams/vision-audio.md (both kept their defaults)
    lr: float = field(default=3e-4, metadata={"help": "LM learning rate of the per-modality fine-tuning"})
    projector_lr: float = field(default=5e-3, metadata={"help": "projector learning rate of the fine-tuning"})
    route: Literal["modality", "task"] = route_option("task vector and mask")
    masks: Literal["on", "off"] = field(default="on", metadata={
        "keyed": "changed",  # added later; its default is what ran before (cl_bench.run.keys.keyed_options)
        "help": "on: an input of modality i runs with its mask m_i over tau* (MMER); off: with all of tau*, "
                "unmasked (the masks' ablation: theta_0 + alpha * tau*, alpha still chosen on validation, lambda "
                "unused; text still runs theta_0)"})

    def __post_init__(self) -> None:
        if self.merge not in ("max", "mean"):
            raise ValueError(f"MMERConfig.merge must be 'max' or 'mean', got {self.merge!r}")
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"MMERConfig.keep must be in (0, 1], got {self.keep}")
        if self.trim_scope not in ("tensor", "vector"):
            raise ValueError(f"MMERConfig.trim_scope must be 'tensor' or 'vector', got {self.trim_scope!r}")
        _grid(self.alphas, "alphas")
        _grid(self.lambdas, "lambdas")
        for path in self.source_dirs().values():
            if not (Path(path) / "config.json").exists() or not (Path(path) / "projector.safetensors").exists():
                raise ValueError(f"MMERConfig.sources: {path} needs config.json and the LM weights (save_pretrained) "
                                 "and projector.safetensors; MMER's export_dir option writes such directories")
        if self.reselect not in ("all", "new"):
            raise ValueError(f"MMERConfig.reselect must be 'all' or 'new', got {self.reselect!r}")
        if not (self.lr > 0 and self.projector_lr > 0):
            raise ValueError("MMERConfig: lr and projector_lr must be > 0")
        if self.masks not in ("on", "off"):
            raise ValueError(f"MMERConfig.masks must be 'on' or 'off', got {self.masks!r}")
        check_route(self)


    def source_dirs(self) -> dict[str, str]:
        out = {}
        for item in filter(None, (x.strip() for x in self.sources.split(","))):
            modality, sep, path = item.partition("=")
            if not sep or not modality or not path:
                raise ValueError(f"MMERConfig.sources must be modality=DIR pairs, got {item!r}")
            out[modality.strip()] = path.strip()
        return out


class MMER(Strategy):
    """Per-modality fine-tuned LMs merged into one task vector, with a binary mask per modality."""

    setup_keeps_outputs = True  # row 0 is shared (cl_bench.run.shared; tests/test_shared.py checks it)
    shares_fits = True  # plain fits on the stage's own split: each computed once (cl_bench.run.shared.FitStore)

    Config = MMERConfig
    tuning = {"projector_lr": ("1e-3", "3e-3", "1e-2"), "lr": ("1e-4", "3e-4", "1e-3")}
    declares = Declaration(past_val=True, task_weights=True, modality_routed=True)

    def declaration(self) -> Declaration:
        by_task = self.config.route == "task"
        return Declaration(past_val=self.config.reselect == "all", task_weights=True, modality_routed=not by_task,
                           task_routed=by_task)

    def _key(self, task) -> str:
        """What a task vector, mask and alpha/lambda belong to: the task's modality, or the task (route=task)."""
        return weights_key(self.config.route, task)

    def memory(self) -> Memory:
        """Past validation splits (reselect=all), and per modality its task vector (on disk) and packed masks."""
        taus = sum(self._tau_path(k).stat().st_size for k in self.modalities if self._tau_path(k).exists())
        masks = tensor_bytes(t for d in self.packed.values() if d for t in d.values())
        return Memory(past_val_items={name: len(v) for sets in self.val.values() for name, v in sets},
                      task_weight_bytes=taus + masks + self.task_projectors.extra_bytes())

    def footprint(self, model, modality: str):
        """Full fine-tuning of the LM, holding theta_0, the merged tau* (float32) and a mask per modality so far;
        the task vectors themselves stay on disk."""
        from cl_bench.api.footprint import Footprint, full_model_footprint

        model._plan_modalities = getattr(model, "_plan_modalities", 0) + 1
        elements = sum(p.numel() for p in model.lm.parameters())
        size = next(model.lm.parameters()).element_size()
        return Footprint(trainable=full_model_footprint(model, modality).trainable,
                         held_bytes=elements * (size + 4 + model._plan_modalities))

    def setup(self, model, context) -> None:
        super().setup(model, context)
        self.names = [n for n, _ in model.lm.named_parameters()]
        self.theta0 = {n: p.detach().clone() for n, p in model.lm.named_parameters()}
        self._dir = tempfile.TemporaryDirectory(prefix="clbench-mmer-")
        # keys (_key): modalities, or tasks with route=task
        self.modalities: list[str] = []  # the keys, in order of learning
        self.val = {}  # key -> [(task name, its validation batches)] (train/val only: never test)
        self.tau_star: dict[str, torch.Tensor] = {}
        self.chosen: dict[str, dict] = {}  # key -> {"alpha", "lambda"}
        self.packed: dict[str, dict[str, torch.Tensor] | None] = {}  # key -> name -> bit-packed mask (masks=off: None)
        self.task_projectors = TaskProjectors("mmer.projector.")  # route=task only
        self._loaded: str | None = "text"  # which parameters are in model.lm now

    # -- stages ------------------------------------------------------------------------
    def learn(self, experience: Experience) -> dict:
        from safetensors.torch import save_file

        m, mod, key = self.model, experience.modality, self._key(experience)
        if mod == "text" or mod not in m.projectors:
            raise ValueError(f"MMER merges models of non-text modalities; got {experience.name!r} ({mod})")
        self._load_parameters(None)  # theta_0
        if key in self.modalities:  # the modality's second task: its model goes on from where the first left it
            self._add_tau(key)
        if self.config.route == "task":
            self.task_projectors.start(m, mod)
        self.freeze_all()
        source = self.config.source_dirs().get(key)
        t0, shared0 = time.perf_counter(), self.shared_seconds()
        if source:  # training-free: merge a given fine-tuned model
            self._load_source(Path(source), mod)
            stats = {"source": source, "steps": 0}
        else:
            m.lm.requires_grad_(True)
            m.projectors[mod].requires_grad_(True)
            stats = self.fit(experience, [{"params": list(m.lm.parameters()), "lr": self.config.lr},
                                          {"params": list(m.projectors[mod].parameters()),
                                           "lr": self.config.projector_lr}], f"{experience.name} fine-tuning")
            if self.config.export_dir:
                self._export(Path(self.config.export_dir) / key, mod)
        finetune_seconds = time.perf_counter() - t0 + self.shared_seconds() - shared0  # a stored fit: as computed
        tau = {n: (p.detach() - self.theta0[n]).cpu().contiguous() for n, p in m.lm.named_parameters()}
        save_file(tau, str(self._tau_path(key)))
        del tau
        if self.config.route == "task":
            self.task_projectors.keep(m, experience.name, mod)
        if key not in self.modalities:
            self.modalities.append(key)
        if self.config.reselect == "new":
            self.val.clear()  # earlier keys keep their alpha/lambda: their validation data goes
        self.val.setdefault(key, []).append((experience.name, self.data(experience, "val")))

        t0 = time.perf_counter()
        self._merge()
        merge_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        grid = self._select()
        select_seconds = time.perf_counter() - t0
        self._loaded = "dirty"
        n = sum(t.numel() for t in self.tau_star.values())
        return {**stats, "finetune_seconds": round(finetune_seconds, 3), "merge_seconds": round(merge_seconds, 3),
                "selection_seconds": round(select_seconds, 3),
                "chosen": {k: dict(v) for k, v in self.chosen.items()}, "validation_grid": grid,
                "storage": {"base_parameters": self._base_parameters, "merged_vector": n,
                            "mask_bits": n * len(self.modalities) if self.config.masks == "on" else 0,
                            "mask_bytes": sum(t.numel() for d in self.packed.values() if d for t in d.values())},
                "summary": f"fine-tuning {finetune_seconds:.1f} s, merge {merge_seconds:.2f} s; chosen "
                           + ", ".join(f"{k}: alpha {v['alpha']}" + ("" if v["lambda"] is None else
                                                                     f", lambda {v['lambda']}")
                                       for k, v in self.chosen.items())}

    def _export(self, directory: Path, modality: str) -> None:
        from safetensors.torch import save_file

        self.model.lm.save_pretrained(directory)
        save_file({k: v.contiguous() for k, v in self.model.projectors[modality].state_dict().items()},
                  str(directory / "projector.safetensors"))

    @torch.no_grad()
    def _load_source(self, directory: Path, modality: str) -> None:
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        source = dict(AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).named_parameters())
        for n, p in self.model.lm.named_parameters():
            if n not in source or source[n].shape != p.shape:
                raise ValueError(f"source model {directory} does not share the base model's architecture "
                                 f"(parameter {n}); MMER merges models fine-tuned from the same base")
            p.copy_(source[n])
        self.model.projectors[modality].load_state_dict(load_file(str(directory / "projector.safetensors")))

    def _tau_path(self, key: str) -> Path:
        return Path(self._dir.name) / f"tau-{key}.safetensors"

    @torch.no_grad()
    def _add_tau(self, key: str) -> None:
        """theta_0 + tau_key in the model: the key's fine-tuned model, unmasked, to fine-tune on from."""
        from safetensors.torch import load_file

        tau = load_file(str(self._tau_path(key)))
        for n, p in self.model.lm.named_parameters():
            p.add_(tau[n].to(p.device, p.dtype))

    def _taus(self, name: str) -> torch.Tensor:
        """The task vectors of every modality so far for one parameter tensor, (n, ...), read from disk."""
        return torch.stack([M.read_tensor(self._tau_path(k), name) for k in self.modalities])

    def _merge(self) -> None:
        """tau* from every task vector so far, tensor by tensor."""
        self.tau_star = M.merge_files([self._tau_path(k) for k in self.modalities], self.names, self.config.merge,
                                      self.config.keep, self.config.trim_scope)

    def _masks(self, lam: float | None) -> dict[str, dict[str, torch.Tensor] | None]:
        """Every key's packed masks at `lam`; None per key with masks=off (lam None): all of tau*."""
        if lam is None:
            return {k: None for k in self.modalities}
        out = {k: {} for k in self.modalities}
        for n in self.names:
            ms = M.masks(self._taus(n), self.tau_star[n], lam)
            for k, mk in zip(self.modalities, ms):
                out[k][n] = M.pack(mk)
        return out

    def _select(self) -> dict[str, list[dict]]:
        """Grid search of (alpha, lambda) on the validation split of every modality whose split is kept
        (all of them, or only the new one with reselect=new); the others keep their values, with masks
        recomputed against the current tau*."""
        from cl_bench.api.training import accuracy

        for k in self.modalities:
            if k not in self.val:
                self.packed[k] = self._masks(self.chosen[k]["lambda"])[k]
        tuned = [k for k in self.modalities if k in self.val]
        results = {k: [] for k in tuned}
        best = {}
        for lam in _grid(self.config.lambdas, "lambdas") if self.config.masks == "on" else [None]:
            packed = self._masks(lam)
            for k in tuned:
                for alpha in _grid(self.config.alphas, "alphas"):
                    self._load_parameters((packed[k], alpha))
                    if self.config.route == "task":
                        self.task_projectors.use(self.model, next(t for t in self.context.tasks if t.name == k))
                    # the mean over the key's tasks (a modality's two tasks weigh the same)
                    acc = sum(accuracy(self.model, v, self.context.device) for _, v in self.val[k]) / len(self.val[k])
                    results[k].append({"alpha": alpha, "lambda": lam, "val_accuracy": acc})
                    if k not in best or acc > best[k][0]:
                        best[k] = (acc, alpha, lam, packed[k])
        for k, (acc, alpha, lam, packed_k) in best.items():
            self.chosen[k] = {"alpha": alpha, "lambda": lam, "val_accuracy": acc}
            self.packed[k] = packed_k
        self._loaded = "dirty"
        return results

    # -- modality-routed inference -----------------------------------------------------
    @torch.no_grad()
    def _load_parameters(self, masked) -> None:
        """Put theta_0 (masked=None) or theta_0 + alpha * (m * tau*) into the model; `masked` is (packed masks,
        alpha), or (a list of packed masks, alpha) for their union; packed masks None (masks=off) stand for all
        of tau*."""
        for n, p in self.model.lm.named_parameters():
            if masked is None:
                p.copy_(self.theta0[n])
                continue
            packed, alpha = masked
            if packed is None or (isinstance(packed, list) and any(k is None for k in packed)):
                p.copy_(self.theta0[n] + alpha * self.tau_star[n].to(p.device))
                continue
            if isinstance(packed, list):
                mask = torch.stack([M.unpack(k[n], tuple(p.shape)) for k in packed]).any(0).to(p.device, p.dtype)
            else:
                mask = M.unpack(packed[n], tuple(p.shape)).to(p.device)
            p.copy_(self.theta0[n] + alpha * mask * self.tau_star[n].to(p.device))

    def _mixed(self, task: TaskInfo):
        """A mixed-modality item (several inputs): theta_0 + alpha * ((m_i | m_j ...) * tau*), the union of its
        inputs' masks (MMER), alpha the mean of theirs; each input through its own projector. With route=task, each
        input modality's latest task stands for it."""
        keys = []
        for m in input_modalities(task.modality):
            if self.config.route == "task":
                self.task_projectors.start(self.model, m)
            key = latest_weights(self.config.route, self.context.tasks, self.modalities, m)
            keys += [key] if key is not None else []
        label = "+".join(keys) or "text"
        if label != self._loaded:
            if not keys:
                self._load_parameters(None)
            else:
                alpha = sum(self.chosen[k]["alpha"] for k in keys) / len(keys)
                self._load_parameters(([self.packed[k] for k in keys], alpha))
            self._loaded = label
        return self.model

    def model_for(self, task: TaskInfo):
        if len(input_modalities(task.modality)) > 1:
            return self._mixed(task)
        if self.config.route == "task":
            self.task_projectors.use(self.model, task)
        key = self._key(task) if self._key(task) in self.chosen else "text"
        if key != self._loaded:
            c = self.chosen.get(key)
            self._load_parameters(None if c is None else (self.packed[key], c["alpha"]))
            self._loaded = key
        return self.model

    def cost(self) -> Cost:
        m = self.model
        projectors = sum(p.numel() for p in m.projectors.parameters())
        merged = sum(t.numel() for t in self.tau_star.values())
        trainable = sum(p.numel() for p in m.lm.parameters() if p.requires_grad) + sum(
            p.numel() for p in m.projectors.parameters() if p.requires_grad)
        added = projectors + merged
        return Cost(trainable=trainable, added=added, total=self._base_parameters + added)

    # -- resume --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        kinds = [self._key(t) for t in self.context.tasks]
        state = {k: v for k, v in self.model.state_dict().items() if k.startswith("projectors.")}
        state.update(self.task_projectors.state_dict())
        state["mmer.modalities"] = torch.tensor([kinds.index(k) for k in self.modalities], dtype=torch.long)
        for k in self.modalities:
            state.update({f"mmer.tau.{k}.{n}": t for n, t in load_file(str(self._tau_path(k))).items()})
            lam = self.chosen[k]["lambda"]  # None with masks=off: saved as NaN
            state[f"mmer.chosen.{k}"] = torch.tensor([self.chosen[k]["alpha"], math.nan if lam is None else lam,
                                                      self.chosen[k]["val_accuracy"]], dtype=torch.float64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        kinds = [self._key(t) for t in self.context.tasks]
        state = dict(state)
        self.task_projectors.load_state_dict(state)
        self.modalities = [kinds[i] for i in state["mmer.modalities"].tolist()]
        self.model.load_state_dict({k: v for k, v in state.items() if k.startswith("projectors.")}, strict=False)
        for k in self.modalities:
            prefix = f"mmer.tau.{k}."
            save_file({n[len(prefix):]: t.contiguous() for n, t in state.items() if n.startswith(prefix)},
                      str(self._tau_path(k)))
            alpha, lam, acc = state[f"mmer.chosen.{k}"].tolist()
            self.chosen[k] = {"alpha": alpha, "lambda": None if math.isnan(lam) else lam, "val_accuracy": acc}
        if self.modalities:
            self._merge()
            for k in self.modalities:
                self.packed[k] = self._masks(self.chosen[k]["lambda"])[k]
        self._loaded = "dirty"

    def resumed(self, experiences: list[Experience]) -> None:
        """After a resume: the validation splits of the modalities learned before it (reselect=all only)."""
        for e in experiences[-1:] if self.config.reselect == "new" else experiences:
            self.val.setdefault(self._key(e), []).append((e.name, self.data(e, "val")))

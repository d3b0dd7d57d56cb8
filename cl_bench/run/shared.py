"""Work shared across runs, computed once: the evaluation before the first stage (row 0 of the accuracy matrix) and
the fits (one call of cl_bench.api.training.train) that recur across runs and strategies.

Row 0 scores the base model with its fresh projectors. It is the same for every strategy whose
setup leaves the model's outputs as they were (`Strategy.setup_keeps_outputs`: the built-ins'
setups add zero-initialised adapters, identity wrappers or nothing; in the published results
the row, its items, probes and routing shares are bit-identical across all 14 strategies of a
seed), so it is stored under a content hash of everything that determines it: the base model's
key, the data, the encoders and their files, the seed (the projectors' initialisation), the
evaluation settings, the stream's options and order, precision and prompt format, and a
fingerprint of clbench's own source files (any change to the code is another entry). A
strategy that does not declare it, a plug-in's included, always evaluates its own row 0.

A fit is shared when its strategy declares `Strategy.shares_fits` (full-ft, single-ft, joint, MMER, align-only:
their fits train the model as it is, on the stage's own split), keyed by a hash of the state it starts from
(the LM's and the modality's projector's parameters and buffers, bit for bit, and their module classes), the
parameter groups and their learning rates, the budget, the seed, the global random state, the thread count and
the run's identity without the strategy, its options and the evaluation (FitStore.key). At clbench's defaults no
two strategies' fits agree (full-ft's learning rate is 3e-5, single-ft's 1e-4, MMER's 3e-4; LoRA, adapters and
MoExtend change the forward pass and do not declare it); they agree across `clbench tune`'s grids, between a tuning
run and the published run at the chosen point when their budgets and thread counts agree, and between runs that
differ only in what is evaluated.

An entry is written atomically under a file lock: concurrent workers (a sweep) wait for the
one computing it and read it, never write it twice. What was looked up, saved and where the row
came from are in the result file (timing.row0_source; each stage's shared_fits).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cl_bench.errors import UsageError

ENV = "CLBENCH_SHARED_CACHE"  # 0: compute everything in every run, whatever RunConfig.shared_cache says
_CODE: str | None = None


def enabled(setting: bool = True) -> bool:
    """Whether a run shares: its RunConfig.shared_cache `setting`, unless CLBENCH_SHARED_CACHE=0 turns it off."""
    return setting and os.environ.get(ENV, "1") != "0"


def code_fingerprint() -> str:
    """A hash of every Python source file of the installed clbench (cl_bench, its built-in strategies and streams)."""
    global _CODE
    if _CODE is None:
        import importlib.util

        import cl_bench

        # The built-ins' folders are found, not imported: the core never imports a plug-in's code.
        roots = {Path(cl_bench.__file__).parent}
        for name in ("cl_bench.strategies", "cl_bench.task_streams"):
            spec = importlib.util.find_spec(name)
            roots.update(Path(p) for p in (spec.submodule_search_locations or []) if spec)
        h = hashlib.sha256()
        # sorted, not a set: a set's order of paths changes from process to process (str hashes are salted)
        for root in sorted(roots):
            for f in sorted(root.rglob("*.py")):
                h.update(str(f.relative_to(root)).encode())
                h.update(f.read_bytes())
        _CODE = h.hexdigest()
    return _CODE


def row0_key(ident: dict, eval_batch_size: int) -> str:
    """The content hash of a run's row 0: its identity without what only later stages depend on (the strategy,
    its options, the training budget)."""
    from cl_bench.streams.data import stable_hash

    config = {k: v for k, v in ident["config"].items() if k not in ("strategy", "budget")}
    rest = {k: v for k, v in ident.items() if k not in ("config", "strategy_options")}
    return stable_hash({"what": "row0", "code": code_fingerprint(), "config": config, **rest,
                        "eval_batch_size": eval_batch_size})


def row0(cache_dir: Path, key: str, compute, tasks: int):
    """(row, items, extra, routing) of `key`: read if stored, else computed by `compute()` and stored; the second
    value says where it came from ("computed" or "stored")."""
    from filelock import FileLock

    from cl_bench.results import atomic_write_json

    directory = Path(cache_dir) / "shared"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"row0-{key}.json"
    with FileLock(str(path) + ".lock"):
        if path.exists():
            try:
                d = json.loads(path.read_text())
                if len(d["row"]) == tasks and len(d["items"]) == tasks:
                    return (d["row"], d["items"], d["extra"], d["routing"]), "stored"
            except (OSError, ValueError, KeyError, TypeError):
                pass  # damaged: computed again and rewritten
        row, items, extra, routing = compute()
        atomic_write_json(path, {"row": row, "items": items, "extra": extra, "routing": routing})
        return (row, items, extra, routing), "computed"


# -- fits ------------------------------------------------------------------------------------------------------
# A fit (Strategy.fit: one call of cl_bench.api.training.train) is shared when the strategy declares `shares_fits`: its
# outcome is then fixed by what the key below hashes. Where the same fit recurs: MMER's fine-tune of each modality
# from the base is single-ft's stage of that modality, and its first is full-ft's first stage, whenever their
# learning rates agree (they do at points of `clbench tune`'s grids: 1e-4, 3e-4 and 1e-3 are in all three); a run
# that differs from another only in what is evaluated (--eval-limit, the validation split of `clbench tune`) or in
# options read after training (MMER's merge grids) repeats every fit of the other.


FIT_CAP_ENV = "CLBENCH_SHARED_FIT_MAX_MB"  # overrides RunConfig.shared_fit_max_mb
FIT_CAP_MB = 1024  # the CPU presets' fits are 7 MB; a full fine-tune of a 47B model would be 188 GB an entry


def fit_cap_bytes(setting_mb: float = FIT_CAP_MB) -> float:
    """Fits training more float32 bytes than this are neither stored nor looked up: RunConfig.shared_fit_max_mb
    (`setting_mb`), or CLBENCH_SHARED_FIT_MAX_MB where it is set."""
    value = os.environ.get(FIT_CAP_ENV, str(setting_mb))
    try:
        return float(value) * 2**20
    except ValueError:
        raise UsageError(f"{FIT_CAP_ENV}={value!r} is not a number of MiB; set it to e.g. {FIT_CAP_MB}") from None


class FitStore:
    """One run's view of the stored fits: the part of the run's identity the fits depend on (the data, the base, the
    encoders, the seed, precision, prompt format: not the strategy, its options, the budget or the evaluation),
    and what sharing did (`credit`: seconds the stored fits took when they were computed, less the time reading
    them took, so that a run's training time is the same whether or not its fits were stored)."""

    def __init__(self, cache_dir: Path, identity: dict, max_mb: float = FIT_CAP_MB) -> None:
        from cl_bench.streams.data import stable_hash

        self.cap_bytes = fit_cap_bytes(max_mb)
        self.directory = Path(cache_dir) / "shared"
        self.identity = stable_hash({"what": "fit", "code": code_fingerprint(), **identity})
        self.credit = 0.0
        self._key_seconds = 0.0  # the last key's hashing
        self.log: list[dict] = []  # one entry per fit: phase, source (computed / stored), seconds, overhead_seconds

    def take_log(self) -> list[dict]:
        log, self.log = self.log, []
        return log

    def key(self, model, experience, groups: list[dict], *, steps: int, batch_size: int, warmup_fraction: float,
            seed: int, device, train_kwargs: dict) -> str | None:
        """The content hash of a fit, or None where it cannot be shared (a parameter outside the model, an extra
        loss or another argument that is not plain data)."""
        import time

        import torch

        t0 = time.perf_counter()
        try:
            kwargs = json.dumps(train_kwargs, sort_keys=True)
        except TypeError:
            return None  # a callable (an extra loss): not a pure function of what is hashed
        names = {id(p): n for n, p in model.named_parameters()}
        spec = []
        for g in groups:
            params = [p for p in g["params"] if p.requires_grad]
            if any(id(p) not in names for p in params):
                return None
        size = sum(p.numel() * 4 for g in groups for p in g["params"] if p.requires_grad)  # float32 master weights
        if size > self.cap_bytes:
            self.log.append({"phase": str(experience.name), "source": f"not stored ({size / 2**30:.1f} GiB trained, "
                             f"over the cap of {self.cap_bytes / 2**20:.0f} MiB: --shared-fit-max-mb)"})
            return None
        for g in groups:
            params = [p for p in g["params"] if p.requires_grad]
            spec.append({"params": [names[id(p)] for p in params],
                         **{k: repr(v) for k, v in sorted(g.items()) if k != "params"}})
        # The state the fit reads: the LM, the modality's projector and whatever it trains (other projectors and
        # the encoders are not in its forward pass; the encoders' features are fixed by the identity).
        modules = {"lm": model.lm}
        if experience.modality in getattr(model, "projectors", {}):
            modules["projector"] = model.projectors[experience.modality]
        h = hashlib.sha256()
        h.update(json.dumps({"identity": self.identity, "experience": experience.name, "modality": experience.modality,
                             "steps": steps, "batch_size": batch_size, "warmup_fraction": warmup_fraction,
                             "seed": seed, "kwargs": kwargs, "groups": spec, "device": device.type,
                             # CPU kernels give other floats with another thread count, GPUs of another kind
                             "threads": torch.get_num_threads() if device.type == "cpu" else None,
                             "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                             "dtype": str(getattr(model, "compute_dtype", None)),
                             "modules": {k: [f"{n}:{type(m).__module__}.{type(m).__qualname__}"
                                             for n, m in mod.named_modules()] for k, mod in modules.items()}},
                            sort_keys=True).encode())
        tensors = {f"{k}.{n}": t for k, mod in modules.items() for n, t in mod.state_dict(keep_vars=True).items()}
        tensors.update({f"param.{names[id(p)]}": p for g in groups for p in g["params"] if p.requires_grad})
        for n in sorted(tensors):
            t = tensors[n].detach()
            h.update(f"{n}|{t.dtype}|{tuple(t.shape)}|{bool(getattr(tensors[n], 'requires_grad', False))}".encode())
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        # the global random state (dropout draws from it; train() shuffles with its own generator)
        h.update(torch.get_rng_state().numpy().tobytes())
        if device.type == "cuda":
            h.update(torch.cuda.get_rng_state(device).numpy().tobytes())
        self._key_seconds = time.perf_counter() - t0
        return h.hexdigest()[:32]

    def fit(self, key: str, model, groups: list[dict], phase: str, device, compute):
        """compute()'s TrainStats for `key`, and the trained parameters, the buffers and the random state it left:
        read if stored, else computed and stored. Written atomically under a file lock: a second worker asking for
        the same fit waits for the first and reads its entry."""
        import dataclasses
        import time

        import torch
        from filelock import FileLock

        from cl_bench.api.training import TrainStats
        from cl_bench.results import atomic_torch_save

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"fit-{key}.pt"
        names = {id(p): n for n, p in model.named_parameters()}
        trained = {names[id(p)]: p for g in groups for p in g["params"] if p.requires_grad}
        buffers = dict(model.named_buffers())
        t0 = time.perf_counter()
        with FileLock(str(path) + ".lock"):
            entry = None
            if path.exists():
                try:
                    entry = torch.load(path, map_location="cpu", weights_only=True)
                    if set(entry["parameters"]) != set(trained) or not set(entry["buffers"]) <= set(buffers) \
                            or "seconds" not in entry:
                        entry = None
                except Exception:  # noqa: BLE001 - damaged (torch.load raises many kinds): computed again and rewritten
                    entry = None
            if entry is not None:
                with torch.no_grad():
                    for n, t in entry["parameters"].items():
                        p = trained[n]
                        if p.dtype == t.dtype and p.shape == t.shape:
                            p.copy_(t)
                        else:  # float32 master weights of a half-precision parameter (engine.master_weights)
                            p.data = t.to(p.device)
                    for n, t in entry["buffers"].items():
                        buffers[n].copy_(t)
                torch.set_rng_state(entry["rng"])
                if device.type == "cuda" and "cuda_rng" in entry:
                    torch.cuda.set_rng_state(entry["cuda_rng"], device)
                stats = TrainStats(**entry["stats"])
                read, seconds = time.perf_counter() - t0, float(entry["seconds"])
                self.credit += seconds - read
                self.log.append({"phase": phase, "source": "stored", "seconds": round(seconds, 3),
                                 "overhead_seconds": round(self._key_seconds + read, 4)})
                return stats
            before = {n: b.detach().clone() for n, b in buffers.items()}
            t1 = time.perf_counter()
            stats = compute()
            t2 = time.perf_counter()
            changed = {n: b.detach().cpu().clone() for n, b in buffers.items() if not torch.equal(b, before[n])}
            entry = {"parameters": {n: p.detach().cpu().clone() for n, p in trained.items()}, "buffers": changed,
                     "rng": torch.get_rng_state(), "stats": dataclasses.asdict(stats),
                     "seconds": t2 - t1}  # the whole fit, its data's featurisation included
            if device.type == "cuda":
                entry["cuda_rng"] = torch.cuda.get_rng_state(device)
            atomic_torch_save(path, entry)
            # what sharing cost this fit: the key's hash, the lock, the buffers' copy and writing the entry
            overhead = self._key_seconds + (t1 - t0) + (time.perf_counter() - t2)
            self.log.append({"phase": phase, "source": "computed", "seconds": round(t2 - t1, 3),
                             "overhead_seconds": round(overhead, 4)})
            return stats

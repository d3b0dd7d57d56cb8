"""The base model of a run: a preset pre-trained on the stream's text task once and cached, or a local checkpoint.

`load_base` is the one entry point: a preset name builds the model from its config (cl_bench.models.lm),
pre-trains it on the stream's text task once and caches it on disk (keyed by a hash of everything that
shapes it), so every strategy starts from the same base. A directory is loaded as a Hugging Face
checkpoint (config, weights and tokenizer), as is.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cl_bench.errors import EnvironmentProblem, UsageError
from cl_bench.models.families import FAMILIES, unsupported
from cl_bench.models.lm import (
    BASE_VERSION,
    PRESETS,
    PretrainConfig,
    _set_experts,
    preset_config,
    stream_words,
    word_tokenizer,
)
from cl_bench.run import shipped
from cl_bench.streams.data import (
    CHECKSUMS,
    atomic_directory,
    atomic_write_checksums,
    build_lock,
    damage,
    file_sha256,
    remove_partial,
    stable_hash,
)


@dataclass
class BaseModel:
    lm: torch.nn.Module
    tokenizer: object
    info: dict


def check_model(model: str) -> None:
    """A --model that is not a preset must be a directory with a Hugging Face checkpoint of a supported family and
    its tokenizer: said in one line before anything is built (the runner calls this before the stream's data),
    reading only the checkpoint's config."""
    from transformers import AutoConfig

    if model in PRESETS:
        return
    path = Path(model).expanduser()
    if not (path.is_dir() and (path / "config.json").exists()):
        raise UsageError(f"--model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a directory with a "
                         f"Hugging Face checkpoint (config.json); save one with save_pretrained() and pass its path")
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise UsageError(f"--model {model}: no tokenizer files (tokenizer.json or tokenizer_config.json); save the "
                         f"tokenizer beside the weights with tokenizer.save_pretrained({str(path)!r})")
    try:
        model_type = AutoConfig.from_pretrained(path, local_files_only=True).model_type
    except Exception as e:  # noqa: BLE001 - see _unloadable
        raise _unloadable(model, e) from None
    if model_type not in FAMILIES:  # said before the weights are read
        raise UsageError(f"--model {model}: {unsupported(model_type)}")


def load_base(model: str, stream, device: torch.device, cache_dir: Path, pretrain: PretrainConfig | None = None,
              progress: bool = True, dtype: torch.dtype = torch.float32, echo=None) -> BaseModel:
    """The stream's base LM on `device` in `dtype`: a pre-trained preset (cached; pre-trained in float32 and
    then cast) or a local checkpoint (read in `dtype`). A cached preset whose files no longer match the checksums
    written with them is rebuilt, and `echo` (default: standard error) says so."""
    import sys

    from transformers import AutoModelForCausalLM, AutoTokenizer

    say = echo or (lambda s: print(s, file=sys.stderr))

    pretrain = pretrain or PretrainConfig()
    path = Path(model).expanduser()
    if model not in PRESETS:
        check_model(model)
        key = checkpoint_key(path, cache_dir)  # changes whenever a file of the checkpoint does
        try:
            lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - see _unloadable
            raise _unloadable(model, e) from None
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        info = {"source": "checkpoint", "path": str(path.resolve()), "model_type": lm.config.model_type, "key": key}
        return _finish(lm, tok, info, device)

    key, config, tok = base_key(model, stream, pretrain)
    hit = shipped.find(key)
    if hit is not None:  # the base every machine shares (cl_bench/bases/), checked against its manifest
        return _load_shipped(*hit, device, dtype)
    # One base per key: streams whose text task and vocabulary agree (every number stream) share it.
    target = Path(cache_dir) / "models" / f"{model}-{key}"
    if not (target / "clbench.json").exists():  # clbench <= 0.3.0 saved it as <stream>-<model>-<key>
        target = next((p.parent for p in sorted((Path(cache_dir) / "models").glob(f"*-{model}-{key}/clbench.json"))),
                      target)
    base = _load_verified(target, device, say)
    if base is None:
        with build_lock(target):  # one process pre-trains it; another waits, then loads it
            base = _load_verified(target, device, say)
            if base is None:
                remove_partial(target)
                base = _pretrain_and_save(model, config, tok, key, target, stream, device, pretrain, progress)
    base.lm.to(dtype)
    return base


def base_key(model: str, stream, pretrain: PretrainConfig):
    """The base key of preset `model` pre-trained with `pretrain` on `stream`'s text task (a hash of everything
    that shapes the base), its transformers config and its word tokenizer."""
    words = stream_words(stream)
    tok = word_tokenizer(words)
    config = preset_config(model, len(tok), tok)
    shape = {k: v for k, v in config.to_dict().items() if k != "transformers_version"}
    key = stable_hash({"version": BASE_VERSION, "preset": model, "config": shape, "vocab": words,
                       "pretrain": asdict(pretrain), "text": stable_hash(stream.base.train.to_dict())})
    return key, config, tok


def pretrain_fresh(model: str, stream, pretrain: PretrainConfig, device, target: Path,
                   progress: bool = False) -> BaseModel:
    """Pre-train preset `model` from its initialisation and save it (atomically) to `target`."""
    key, config, tok = base_key(model, stream, pretrain)
    return _pretrain_and_save(model, config, tok, key, Path(target), stream, device, pretrain, progress)


def _load_shipped(path: Path, entry: dict, device, dtype) -> BaseModel:
    problem = shipped.damage(path, entry)
    if problem is not None:
        raise EnvironmentProblem(f"the shipped base model {entry['name']} is damaged ({problem} in {path}; "
                                 f"expected sha256s in {shipped.BASES_DIR / shipped.MANIFEST}); reinstall clbench "
                                 f"or restore it with `git checkout -- {path.name}` in cl_bench/bases")
    base = _load_cached(path, device)
    base.info.update(source="shipped", shipped=entry["name"], cached=False)
    base.lm.to(dtype)
    return base


SHIP_DTYPES = ("float32", "bfloat16")


def ship(model: str, stream, pretrain: PretrainConfig, device, directory: Path | None = None,
         progress: bool = False, store: str = "float32") -> dict:
    """Pre-train preset `model` with `pretrain` and ship it: its files to directory/<model>-base<seed>/ (default: the
    package's cl_bench/bases/), their sha256s to the manifest (replacing an entry of the same name).

    `store`: the weights' dtype on disk. "bfloat16" halves a larger preset's files (what the repository can hold):
    the pre-trained weights are rounded to bfloat16 once, and the rounded weights are the base (loaded into the
    run's dtype exactly; its text accuracies are measured on them)."""
    from cl_bench.results import atomic_write_json

    if store not in SHIP_DTYPES:
        raise UsageError(f"--store {store!r}: choose one of {', '.join(SHIP_DTYPES)}")
    directory = Path(directory or shipped.BASES_DIR)
    name = f"{model}-base{pretrain.seed}"
    target = directory / name
    shutil.rmtree(target, ignore_errors=True)
    base = pretrain_fresh(model, stream, pretrain, device, target, progress)
    if store != "float32":
        base = _round_stored(base, stream, device, target, getattr(torch, store))
    (target / CHECKSUMS).unlink(missing_ok=True)  # the manifest holds the sha256s of a shipped base
    files = {f.name: file_sha256(f) for f in sorted(target.iterdir()) if f.is_file()}
    info = base.info
    entry = {"name": name, "key": info["key"], "preset": model, "pretrain": info["pretrain"],
             "text_train": info["text_train"], "text_val": info["text_val"],
             "pretrain_seconds": info["pretrain_seconds"], "pretrain_threads": info["pretrain_threads"],
             "stored_dtype": store, "weights_sha256": info["weights_sha256"], "files": files}
    entries = [e for e in shipped.manifest(directory) if e["name"] != name] + [entry]
    atomic_write_json(directory / shipped.MANIFEST, {"about": "base models shipped with clbench (`clbench base build`); "
                                             "every file's sha256 is checked when a base is loaded",
                                             "bases": sorted(entries, key=lambda e: e["name"])})
    return entry


def _round_stored(base: BaseModel, stream, device, target: Path, dtype: torch.dtype) -> BaseModel:
    """The pre-trained base's weights rounded to `dtype` and saved so at `target`; its text accuracies measured
    again on the rounded weights (in float32, as a run reads them), the pre-training's own kept beside them."""
    from cl_bench.api.training import TaskData, accuracy
    from cl_bench.models.multimodal import MultimodalLM

    info = dict(base.info)
    info["pretrained_text"] = {"train": info["text_train"], "val": info["text_val"]}  # before rounding
    base.lm.to(dtype)
    base.lm.to(torch.float32)  # exactly the rounded values
    wrapper = MultimodalLM(base.lm, base.tokenizer, {})
    for name, split in (("train", stream.base.train), ("val", stream.base.val)):
        info[f"text_{name}"] = accuracy(wrapper, TaskData(split, wrapper, "text"), device)
    info["stored_dtype"] = str(dtype).removeprefix("torch.")
    info.pop("weights_sha256", None)  # the float32 files' (read from the files on every load)
    base.lm.to(dtype)
    base.info = info
    shutil.rmtree(target)  # the float32 files (an existing directory is never replaced: _save_atomic keeps it)
    _save_atomic(base, target)
    base.lm.to(torch.float32)
    base.info["weights_sha256"] = _weights_sha256(target)
    return base


def _unloadable(model: str, e: Exception) -> EnvironmentProblem:
    """transformers', safetensors' and tokenizers' errors for a broken checkpoint vary: one line, the path, the fix."""
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return EnvironmentProblem(f"--model {model}: the checkpoint cannot be loaded ({type(e).__name__}: {first}); "
                              "check its config.json and weight files, or save it again with save_pretrained()")


def _load_verified(target: Path, device, say) -> BaseModel | None:
    """The cached base at `target` if it is whole; None if there is none, or if it was damaged (then it is removed,
    and `say` says so): its files are checked against the checksums written with them, as the data cache's are."""
    if not target.exists():
        return None
    try:
        if not (target / CHECKSUMS).exists():  # saved before checksums were: trusted once, if it loads
            base = _load_cached(target, device)
            atomic_write_checksums(target)
            return base
        problem = damage(target)
        if problem is None:
            return _load_cached(target, device)
    except Exception as e:  # noqa: BLE001 - a truncated safetensors file, a broken JSON, ...: each library its own
        problem = f"it cannot be read ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]})"
    say(f"base model cache {target} is damaged ({problem}); rebuilding it")
    shutil.rmtree(target, ignore_errors=True)
    return None


def _load_cached(target: Path, device) -> BaseModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = json.loads((target / "clbench.json").read_text())
    # float32 whatever the files hold (a shipped base may be stored in bfloat16: read exactly)
    lm = AutoModelForCausalLM.from_pretrained(target, local_files_only=True, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(target, local_files_only=True)
    info["cached"] = True
    info["weights_sha256"] = _weights_sha256(target)
    return _finish(lm, tok, info, device)


def _pretrain_and_save(model, config, tok, key, target, stream, device, pretrain, progress) -> BaseModel:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(pretrain.seed)
    lm = AutoModelForCausalLM.from_config(config)
    info = {"source": "preset", "preset": model, "model_type": config.model_type, "key": key,
            "pretrain": asdict(pretrain)}
    base = _finish(lm, tok, info, device)
    info.update(_pretrain(base, stream, device, pretrain, progress))
    # Pre-training is bit-reproducible for a given torch thread count, not across counts.
    info["pretrain_threads"] = torch.get_num_threads()
    _save_atomic(base, target)
    info["cached"] = False
    info["weights_sha256"] = _weights_sha256(target)
    return base


def checkpoint_key(directory: Path, cache_dir: Path) -> str:
    """A fingerprint of every file of a local checkpoint (names and bytes), so that a checkpoint changed in
    place gets a new run key. Hashing a large checkpoint takes a while, so each file's hash is remembered
    under cache_dir/fingerprints by its path, size and modification time."""
    memo_dir = Path(cache_dir) / "fingerprints"
    parts = []
    for f in sorted(p for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith(".")):
        st = f.stat()
        memo = memo_dir / stable_hash([str(f.resolve()), st.st_size, st.st_mtime_ns])
        if memo.exists():
            digest = memo.read_text().strip()
        else:
            digest = file_sha256(f)
            memo_dir.mkdir(parents=True, exist_ok=True)
            from cl_bench.results import atomic_write_text

            atomic_write_text(memo, digest)
        parts.append((f.name, digest))
    return stable_hash(parts)


def _weights_sha256(directory: Path) -> str:
    """The saved preset's weight files' fingerprint (a few MB), so result files name the exact base."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(directory).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def _finish(lm, tok, info, device) -> BaseModel:
    lm.to(device).eval()
    _set_experts(lm, device)
    info.setdefault("parameters", sum(p.numel() for p in lm.parameters()))
    return BaseModel(lm, tok, info)


def _pretrain(base: BaseModel, stream, device, cfg: PretrainConfig, progress: bool) -> dict:
    from cl_bench.api.training import TaskData, accuracy, train
    from cl_bench.models.multimodal import MultimodalLM

    wrapper = MultimodalLM(base.lm, base.tokenizer, {})
    t0 = time.perf_counter()
    data = TaskData(stream.base.train, wrapper, "text")
    stats = train(wrapper, data, [{"params": list(base.lm.parameters()), "lr": cfg.lr}], steps=cfg.steps,
                  batch_size=cfg.batch_size, seed=cfg.seed, device=device, desc="pre-training the base model",
                  progress=progress)
    secs = time.perf_counter() - t0
    acc = {f"text_{name}": accuracy(wrapper, TaskData(split, wrapper, "text"), device)
           for name, split in (("train", stream.base.train), ("val", stream.base.val))}
    return {"pretrain_seconds": round(secs, 2), "pretrain_final_loss": stats.last_loss, **acc}


def _save_atomic(base: BaseModel, target: Path) -> None:
    with atomic_directory(target) as tmp:
        base.lm.save_pretrained(tmp)
        base.tokenizer.save_pretrained(tmp)
        (tmp / "clbench.json").write_text(json.dumps(base.info, indent=2))
        atomic_write_checksums(tmp)  # verified on every load (_load_verified)


@torch.no_grad()
def _mean_loss(wrapper, data, device, batch_size: int = 256) -> float:
    """Mean answer-token loss of `wrapper` on `data` (the loss the base is trained on), item-weighted."""
    total, n = 0.0, 0
    for start in range(0, len(data), batch_size):
        idx = range(start, min(len(data), start + batch_size))
        out = wrapper(data.batch(idx).to(device))
        total += float(out.loss) * len(idx)
        n += len(idx)
    return total / max(1, n)


def pretrain_curve(model: str, stream, step_counts, pretrain: PretrainConfig, device: torch.device,
                   progress: bool = False, echo=None) -> list[dict]:
    """Pre-train preset `model` from the same initialisation for each of `step_counts` (each a whole run with its
    own warm-up and cosine schedule, as a base of that many steps would be) and return, per count, the text
    task's train and validation accuracy and validation loss. Test items are never scored: the plateau is
    read on validation data only."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from cl_bench.api.training import TaskData
    from cl_bench.models.multimodal import MultimodalLM

    _, config, tok = base_key(model, stream, pretrain)  # the shapes and tokenizer a base of `model` has
    points = []
    for steps in step_counts:
        cfg = replace(pretrain, steps=int(steps))
        torch.manual_seed(cfg.seed)
        base = _finish(AutoModelForCausalLM.from_config(config), tok, {}, device)
        info = _pretrain(base, stream, device, cfg, progress)
        wrapper = MultimodalLM(base.lm, base.tokenizer, {})
        val_loss = _mean_loss(wrapper, TaskData(stream.base.val, wrapper, "text"), device)
        point = {"steps": cfg.steps, "examples": cfg.steps * cfg.batch_size, "text_train": info["text_train"],
                 "text_val": info["text_val"], "text_val_loss": round(val_loss, 6),
                 "final_train_loss": round(info["pretrain_final_loss"], 6), "seconds": info["pretrain_seconds"]}
        if echo:
            echo(f"  {cfg.steps:>5} steps: text train {point['text_train']:.3f}, val {point['text_val']:.3f}, "
                 f"val loss {point['text_val_loss']:.4f} ({point['seconds']:.0f} s)")
        points.append(point)
    return points


def plateau(points: list[dict], acc_tolerance: float = 0.01, loss_tolerance: float = 0.02) -> int:
    """The fewest steps whose validation accuracy is within `acc_tolerance` of the curve's best and whose validation
    loss is within `loss_tolerance` (absolute: near zero a ratio would chase noise) of its lowest: more steps buy
    nothing the validation split can see. Where no length is close to both bests (accuracy and loss still
    disagree: the curve has not settled), the longest length measured."""
    best_acc = max(p["text_val"] for p in points)
    best_loss = min(p["text_val_loss"] for p in points)
    return min((p["steps"] for p in points
                if p["text_val"] >= best_acc - acc_tolerance and p["text_val_loss"] <= best_loss + loss_tolerance),
               default=max(p["steps"] for p in points))

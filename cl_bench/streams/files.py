"""Streams from the user's own data, with no Python: a YAML file names each task's modality, its
data (local files read through the `datasets` library), its prompt template, answer field and
encoder. `clbench run --stream ./my-stream.yaml` runs it like a registered stream.

    name: shapes                      # optional; default: the file's name without .yaml
    base: numbers                     # the base text task: clbench's number questions, or omit it
    tasks:                            # and make the first task a text task from your files
      - name: shapes
        modality: image               # any registered modality (`clbench ls`)
        encoder: patches              # optional; default: the modality's
        data:
          format: imagefolder         # imagefolder, csv, json or parquet (datasets' builders)
          dir: shapes/                # imagefolder: train/, val/ (or validation/), test/ sub-folders
          # files: {train: a.csv, val: b.csv, test: c.csv}   # csv / json / parquet (or imagefolder globs)
        input: image                  # the column with the input: an image, an array, or a file path
        prompt: "the number is <input> . what is the number ?"   # {column} fills in other columns
        answer: label                 # the column with the answer (a class label gives its name)
        template: kind                # optional: a column naming each item's question form

Paths are relative to the YAML file. Inputs: imagefolder images and image paths (.png, .jpg)
become grey-scale arrays resized to `image_size` (default 8, the default encoder's); .wav
paths are read with scipy (no FFmpeg) and resampled to 16 kHz int16 mono; .npy paths and
list columns become float32 arrays. Every problem in the file is named with its field.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cl_bench.errors import UsageError
from cl_bench.streams.experience import INPUT_MARKER, Experience, TaskStream
from cl_bench.streams.base import Stream

FORMATS = ("imagefolder", "csv", "json", "parquet")
SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
# Images are stored as size x size float32 arrays for every item: 1024 a side is 4 MiB an image (a larger
# encoder input is a pretrained encoder's, given by directory, which reads the files at its own size).
MAX_IMAGE_SIZE = 1024
TASK_KEYS = {"name", "modality", "encoder", "data", "input", "prompt", "answer", "template", "image_size"}
SAMPLE_RATE = 16_000


class StreamFileError(UsageError):
    """A stream file that cannot be used; the message names the file and the field."""


def is_stream_file(name: str) -> bool:
    return str(name).endswith((".yaml", ".yml"))


def read_spec(path: str | Path) -> dict:
    """The stream file's content, validated: every problem raises StreamFileError naming its field."""
    import yaml

    from cl_bench.streams import modality

    path = Path(path)
    if not path.is_file():
        raise StreamFileError(f"{path}: no such stream file")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise StreamFileError(f"{path}: not valid YAML ({e})") from None

    def fail(field: str, why: str):
        raise StreamFileError(f"{path}: {field}: {why}")

    if not isinstance(spec, dict):
        fail("(top level)", "must be a mapping with a 'tasks' list")
    unknown = set(spec) - {"name", "base", "tasks"}
    if unknown:
        fail(sorted(unknown)[0], "unknown field (known: name, base, tasks)")
    name = spec.get("name", path.stem.removesuffix(".yaml"))
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        fail("name", f"{name!r} must be a non-empty string of letters, digits, '-', '_' or '.'")
    base = spec.get("base")
    if base not in (None, "numbers"):
        fail("base", f"{base!r} is not a built-in base task; use 'numbers' or make tasks[0] a text task")
    tasks = spec.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        fail("tasks", "must be a non-empty list of tasks")
    known = modality.known()
    names = set()
    for i, t in enumerate(tasks):
        where = f"tasks[{i}]"
        if not isinstance(t, dict):
            fail(where, "must be a mapping (name, modality, data, prompt, answer, ...)")
        for k in sorted(set(t) - TASK_KEYS):
            fail(f"{where}.{k}", f"unknown field (known: {', '.join(sorted(TASK_KEYS))})")
        for k in ("name", "modality", "data", "prompt", "answer"):
            if k not in t:
                fail(f"{where}.{k}", "missing")
        if not isinstance(t["name"], str) or not t["name"] or t["name"] in names:
            fail(f"{where}.name", f"{t['name']!r} must be a non-empty string, unique in the stream")
        names.add(t["name"])
        if t["modality"] not in known:
            fail(f"{where}.modality", f"{t['modality']!r} is not a registered modality ({', '.join(known)})")
        text = t["modality"] == "text"
        if text and (i > 0 or base is not None):
            fail(f"{where}.modality", "text is the base task's modality: only tasks[0] may be text, and only "
                                      "without 'base'")
        if "input" not in t and not text:
            fail(f"{where}.input", "missing (the column holding each item's input)")
        for k in ("prompt", "answer", "input", "template", "encoder"):
            if k in t and not isinstance(t[k], str):
                fail(f"{where}.{k}", f"must be a string, got {t[k]!r}")
        if not text and t["prompt"].count(INPUT_MARKER) > 1:
            fail(f"{where}.prompt", f"holds {INPUT_MARKER} more than once")
        if "image_size" in t and not (isinstance(t["image_size"], int) and not isinstance(t["image_size"], bool)
                                      and 1 <= t["image_size"] <= MAX_IMAGE_SIZE):
            fail(f"{where}.image_size", f"must be an integer from 1 to {MAX_IMAGE_SIZE} (pixels a side), got "
                                        f"{t['image_size']!r}")
        if "encoder" in t and not text:
            try:
                modality.get(t["modality"]).encoder_target(t["encoder"])
            except (ValueError, TypeError, LookupError) as e:
                fail(f"{where}.encoder", str(e))
        d = t["data"]
        if not isinstance(d, dict):
            fail(f"{where}.data", "must be a mapping with 'format' and 'files' or 'dir'")
        for k in sorted(set(d) - {"format", "files", "dir"}):
            fail(f"{where}.data.{k}", "unknown field (known: format, files, dir)")
        if d.get("format") not in FORMATS:
            fail(f"{where}.data.format", f"{d.get('format')!r} is not one of {', '.join(FORMATS)}")
        if ("files" in d) == ("dir" in d):
            fail(f"{where}.data", "give exactly one of 'files' (per split) and 'dir'")
        if "dir" in d:
            if not (path.parent / str(d["dir"])).is_dir():
                fail(f"{where}.data.dir", f"{d['dir']!r}: no such directory (relative to {path.parent})")
        else:
            files = d["files"]
            if not isinstance(files, dict) or {SPLITS.get(k) for k in files} != {"train", "validation", "test"}:
                fail(f"{where}.data.files", "must map each split (train, val, test) to a file or glob")
            for split, f in files.items():
                if not list(path.parent.glob(str(f))):
                    fail(f"{where}.data.files.{split}", f"{f!r} matches no file (relative to {path.parent})")
    if base is None and tasks[0]["modality"] != "text":
        fail("tasks[0].modality", "the first task must be the base text task (or set 'base: numbers')")
    if len(tasks) < (1 if base else 2):
        fail("tasks", "a stream needs at least one new-modality task after the base text task")
    return {"name": name, "base": base, "tasks": tasks, "path": str(path.resolve())}


def stream_class(path: str | Path) -> type[Stream]:
    """A Stream subclass for the stream file at `path` (read and validated now)."""
    spec = read_spec(path)
    new = [t for t in spec["tasks"] if t["modality"] != "text"]
    return type("YamlStream", (YamlStream,), {
        "name": spec["name"], "spec": spec, "__doc__": f"The stream in {spec['path']}.",
        "tasks": {t["name"]: t["modality"] for t in new},
        "encoders": {t["modality"]: t["encoder"] for t in new if "encoder" in t}})


class YamlStream(Stream):
    """A stream read from a YAML file (see the module's docstring for the format)."""

    spec: dict = {}

    def file_key(self) -> str:
        """A hash of the file and of its data files' names, sizes and times: what the built data depends on."""
        root = Path(self.spec["path"]).parent
        h = hashlib.sha256(Path(self.spec["path"]).read_bytes())
        for t in self.spec["tasks"]:
            d = t["data"]
            patterns = [str(Path(d["dir"]) / "**" / "*")] if "dir" in d else [str(f) for f in d["files"].values()]
            for p in patterns:
                for f in sorted(root.glob(p)):
                    if f.is_file():
                        st = f.stat()
                        h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def build(self, cache_dir: Path | None = None, progress: bool = True) -> TaskStream:
        from cl_bench.streams.data import cached_splits, default_cache_dir
        from cl_bench.streams.tasks import chance_level

        root = Path(cache_dir or default_cache_dir()) / "data" / "yaml" / f"{self.name}-{self.file_key()}"
        exps = []
        if self.spec["base"] == "numbers":
            from cl_bench.streams.tasks import build_text, number_experience

            text = cached_splits(root / "text", build_text)
            exps.append(number_experience("text", "text", "number-questions", text))
        for i, t in enumerate(self.spec["tasks"]):
            d = cached_splits(root / f"task{i}-{t['name']}", lambda t=t, i=i: _load_task(self.spec, t, i))
            answers = sorted(set(d["train"]["answer"]) | set(d["val"]["answer"]) | set(d["test"]["answer"]))
            # every question form is asked with the task's one prompt template
            templates = {k: t["prompt"] for s in d.values() for k in set(s["template"])}
            exps.append(Experience(name=t["name"], modality=t["modality"], task=t["name"], train=d["train"],
                                   val=d["val"], test=d["test"], prompt_templates=templates,
                                   answer_set=tuple(answers), chance=chance_level(d)))
        return TaskStream(self.name, exps[0], tuple(exps[1:]))


def _empty_splits(root: Path, d: dict) -> list[tuple[str, Path]]:
    """(split, path) of each split whose files hold no item: an empty file, a CSV with a header only, or a folder
    without files."""
    found = []
    if "dir" in d:
        for split, names in (("train", ("train",)), ("val", ("val", "validation")), ("test", ("test",))):
            for n in names:
                folder = root / d["dir"] / n
                if folder.is_dir() and not any(f.is_file() for f in folder.rglob("*")):
                    found.append((split, folder))
        return found
    for split, name in d.get("files", {}).items():
        path = root / name
        if not path.is_file():
            continue
        lines = [line for line in path.read_bytes().splitlines()[:2] if line.strip()] if d["format"] in (
            "csv", "json") else [b"x"] * 2
        if path.stat().st_size == 0 or (d["format"] == "csv" and len(lines) < 2) or not lines:
            found.append((split, path))
    return found


def _load_task(spec: dict, t: dict, i: int) -> dict:
    """{split: Dataset} with columns prompt, answer, template (and input), read from the task's files."""
    from datasets import ClassLabel, Dataset, load_dataset

    root = Path(spec["path"]).parent
    where = f"{spec['path']}: tasks[{i}]"
    d = t["data"]
    for split, path in _empty_splits(root, d):  # datasets' own error for these names no split
        raise StreamFileError(f"{where}.data: the {split} split ({path}) is empty; every split needs items")
    try:
        if "dir" in d:
            raw = load_dataset(d["format"], data_dir=str(root / d["dir"]))
        else:
            files = {SPLITS[k]: str(root / v) for k, v in d["files"].items()}
            raw = load_dataset(d["format"], data_files=files)
    except Exception as e:  # noqa: BLE001 - any reader failure is reported with the task's field
        raise StreamFileError(f"{where}.data: datasets could not read it ({type(e).__name__}: {e})") from None
    if set(raw) != {"train", "validation", "test"}:
        raise StreamFileError(f"{where}.data: found splits {sorted(raw)}; need train, val (or validation) and test")
    out = {}
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        ds = raw[name]
        if len(ds) == 0:
            raise StreamFileError(f"{where}.data: the {split} split is empty; every split needs items")
        cols = set(ds.column_names)
        for k in ("answer", "input", "template"):
            if k in t and t[k] not in cols:
                raise StreamFileError(f"{where}.{k}: no column {t[k]!r} in the {split} split "
                                      f"(columns: {', '.join(sorted(cols))})")
        fields = [f.split("}")[0].split(":")[0] for f in t["prompt"].split("{")[1:]]
        for f in fields:
            if f not in cols:
                raise StreamFileError(f"{where}.prompt: {{{f}}} names no column of the {split} split "
                                      f"(columns: {', '.join(sorted(cols))})")

        def as_text(col, values):
            feat = ds.features.get(col)
            return [feat.int2str(v) if isinstance(feat, ClassLabel) else str(v) for v in values]

        named = {c: as_text(c, ds[c]) for c in fields}
        prompts = [t["prompt"].format(**{c: named[c][k] for c in fields}) for k in range(len(ds))]
        rows = {"prompt": prompts, "answer": as_text(t["answer"], ds[t["answer"]]),
                "template": as_text(t["template"], ds[t["template"]]) if "template" in t else ["default"] * len(ds)}
        if t["modality"] != "text":
            rows["input"] = [_input(v, t, root, f"{where}.input ({split} item {k})")
                             for k, v in enumerate(ds[t["input"]])]
        features = None
        if t["modality"] == "audio":  # waveforms as int16, as clbench's own audio is stored
            from datasets import Features, Sequence, Value

            features = Features({"prompt": Value("string"), "answer": Value("string"), "template": Value("string"),
                                 "input": Sequence(Value("int16"))})
        out[split] = Dataset.from_dict(rows, features=features)
    return out


def _input(value, t: dict, root: Path, where: str) -> np.ndarray:
    """One item's input as a numpy array the modality's encoder reads."""
    size = t.get("image_size", 8)
    if hasattr(value, "convert"):  # a PIL image (imagefolder, or an Image column)
        return _grey(value, size)
    if isinstance(value, str):
        f = root / value
        if not f.is_file():
            raise StreamFileError(f"{where}: {value!r} is no file (relative to {root})")
        suffix = f.suffix.lower()
        if suffix in (".png", ".jpg", ".jpeg", ".bmp", ".gif"):
            from PIL import Image

            with Image.open(f) as im:
                return _grey(im, size)
        if suffix == ".wav":
            return _wav(f, where)
        if suffix == ".npy":
            return np.load(f).astype(np.float32)
        raise StreamFileError(f"{where}: cannot read {value!r}: use .png/.jpg, .wav or .npy files, or an array column")
    try:
        return np.asarray(value, dtype=np.int16 if t["modality"] == "audio" else np.float32)
    except (TypeError, ValueError):
        raise StreamFileError(f"{where}: {str(value)[:40]!r} is neither a file path nor a numeric array") from None


def _grey(image, size: int) -> np.ndarray:
    """Grey-scale, resized to size x size, values scaled to 0-16 (the scale of clbench's digit scans)."""
    from PIL import Image

    g = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(g, dtype=np.float32) * (16.0 / 255.0)


def _wav(f: Path, where: str) -> np.ndarray:
    """A .wav file as int16 mono at 16 kHz (scipy reads WAV without FFmpeg)."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    try:
        rate, raw = wavfile.read(f)
    except ValueError as e:
        raise StreamFileError(f"{where}: {f.name} is not a readable WAV file ({e})") from None
    w = raw.astype(np.float32)
    if w.ndim == 2:
        w = w.mean(1)
    if np.issubdtype(raw.dtype, np.floating):  # float WAV: samples in [-1, 1]
        w = w * 32767.0
    elif raw.dtype == np.int32:
        w = w / 65536.0
    elif raw.dtype == np.uint8:
        w = (w - 128.0) * 256.0
    if rate != SAMPLE_RATE:
        g = np.gcd(rate, SAMPLE_RATE)
        w = resample_poly(w, SAMPLE_RATE // g, rate // g)
    return np.clip(np.round(w), -32768, 32767).astype(np.int16)

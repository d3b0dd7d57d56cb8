"""The default stream: number questions in text, then handwritten digits, then spoken numbers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cl_bench.data import cached_splits, default_cache_dir, stable_hash
from cl_bench.experience import Experience, TaskStream
from cl_bench.task_streams import numbers

DATA_VERSION = 4  # bump when the built data changes

# espeak-ng English accents, and voice variants; test speakers use variants never heard in training.
ACCENTS = ("en", "en-US", "en-GB-scotland", "en-GB-x-rp", "en-GB-x-gbclan", "en-GB-x-gbcwmd", "en-029", "en-US-nyc")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "croak", "klatt", "klatt2",
                  "adam", "aunty", "benjamin", "david", "ed", "grandma", "john", "linda", "max", "robert", "steph")
TEST_VARIANTS = ("m7", "f5", "klatt3", "whisper", "grandpa", "edward", "paul", "shelby")
SAMPLE_RATE = 16_000
# Digit scans held out for test and val (one question each); the other 897 of the 1,797 are for training.
DIGITS_TEST, DIGITS_VAL = 720, 180


@dataclass(frozen=True)
class VisionAudioConfig:
    """Sizes of the built data (defaults build in seconds)."""

    train_speakers: int = field(default=80, metadata={"help": "speakers (voice, rate, pitch) in audio training"})
    val_speakers: int = field(default=20, metadata={"help": "speakers in audio validation (training voices)"})
    test_speakers: int = field(default=100, metadata={"help": "speakers in audio test (held-out voices)"})
    questions_per_train_input: int = field(default=2, metadata={"help": "questions asked about each training input"})
    seed: int = field(default=0, metadata={"help": "seed of the data build (not of the run)"})

    def __post_init__(self) -> None:
        for name in ("train_speakers", "val_speakers", "test_speakers", "questions_per_train_input"):
            if getattr(self, name) < 1:
                raise ValueError(f"VisionAudioConfig.{name} must be >= 1, got {getattr(self, name)}")


class VisionAudio:
    """Number questions: text (base), then handwritten digits (image), then spoken numbers (audio)."""

    name = "vision-audio"
    Config = VisionAudioConfig

    def __init__(self, config: VisionAudioConfig | None = None) -> None:
        self.config = config or VisionAudioConfig()

    def build(self, cache_dir: Path | None = None, progress: bool = True) -> TaskStream:
        root = Path(cache_dir or default_cache_dir()) / "data" / self.name
        key = stable_hash({"version": DATA_VERSION, "config": self.config.__dict__})
        text = cached_splits(root / f"text-{key}", build_text)
        image = cached_splits(root / f"image-{key}", lambda: build_digits(self.config))
        audio = cached_splits(root / f"audio-{key}", lambda: build_speech(self.config, progress))

        def exp(name, modality, task, d, probes=None):
            templates = {t: numbers.template_text(t) for t in sorted(set(d["train"]["template"]))}
            return Experience(name=name, modality=modality, task=task, train=d["train"], val=d["val"],
                              test=d["test"], prompt_templates=templates, answer_set=numbers.ANSWERS,
                              chance=numbers.chance_level(d["test"]["template"]), probes=probes or {})

        # A second forgetting measure: every fact in every wording, in plain form (training items; the context
        # forms add 3x the evaluation time and little information).
        plain = text["train"].select([i for i, t in enumerate(text["train"]["template"]) if t.startswith("plain-")])
        base = exp("text", "text", "number-questions", text, probes={"train-plain": plain})
        return TaskStream(self.name, base, (
            exp("vision", "image", "digit-questions", image),
            exp("audio", "audio", "spoken-number-questions", audio),
        ))


def build_text() -> dict:
    from datasets import Dataset

    return {k: Dataset.from_list(v) for k, v in numbers.split_text().items()}


SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def _rows(inputs, values, seed, per_input, **extra):
    """Question rows about each input; `extra` holds further per-input columns."""
    rows = numbers.modality_questions(values, seed, per_input)
    out = {"input": [inputs[i] for i, *_ in rows], "value": [values[i] for i, *_ in rows],
           "template": [t for _, t, _, _ in rows], "prompt": [p for _, _, p, _ in rows],
           "answer": [a for *_, a in rows]}
    out.update({k: [col[i] for i, *_ in rows] for k, col in extra.items()})
    return out


def build_digits(config: VisionAudioConfig) -> dict:
    """scikit-learn's handwritten digits (1,797 real 8x8 scans), split by image."""
    from datasets import Array2D, Dataset, Features, Value
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    rest, test = train_test_split(idx, test_size=DIGITS_TEST, stratify=d.target, random_state=config.seed)
    train, val = train_test_split(rest, test_size=DIGITS_VAL, stratify=d.target[rest], random_state=config.seed)
    features = Features({"input": Array2D((8, 8), "float32"), "value": Value("int32"), "template": Value("string"),
                         "prompt": Value("string"), "answer": Value("string")})
    out = {}
    for split, ids, per in (("train", train, config.questions_per_train_input), ("val", val, 1), ("test", test, 1)):
        images = [d.images[i].astype(np.float32) for i in ids]
        values = [int(d.target[i]) for i in ids]
        out[split] = Dataset.from_dict(_rows(images, values, 1000 * config.seed + SPLIT_SEEDS[split], per), features=features)
    return out


def speakers(config: VisionAudioConfig):
    """Deterministic speaker lists: train/val from training variants, test from held-out ones."""
    from cl_bench.task_streams.speech import Voice

    rng = random.Random(config.seed)

    def draw(n, variants, taken):
        out = []
        while len(out) < n:
            v = Voice(f"{rng.choice(ACCENTS)}+{rng.choice(variants)}", rate=rng.randrange(120, 231, 10),
                      pitch=rng.randrange(20, 81, 5))
            if v.key not in taken:
                taken.add(v.key)
                out.append(v)
        return out

    taken: set[str] = set()
    return {"train": draw(config.train_speakers, TRAIN_VARIANTS, taken),
            "val": draw(config.val_speakers, TRAIN_VARIANTS, taken),
            "test": draw(config.test_speakers, TEST_VARIANTS, taken)}


def build_speech(config: VisionAudioConfig, progress: bool = True) -> dict:
    """Every speaker says every number word 0-9; waveforms stored as int16 at 16 kHz."""
    from datasets import Dataset, Features, Sequence, Value
    from tqdm.auto import tqdm

    from cl_bench.task_streams.speech import synthesize

    features = Features({"input": Sequence(Value("int16")), "value": Value("int32"), "speaker": Value("string"),
                         "template": Value("string"), "prompt": Value("string"), "answer": Value("string")})
    spk = speakers(config)
    bar = tqdm(total=10 * sum(len(v) for v in spk.values()), desc="synthesising speech", unit="clip",
               disable=not progress)
    out = {}
    for split, voices in spk.items():
        waves = synthesize(list(numbers.WORDS), voices, SAMPLE_RATE, progress=bar.update)
        values = [v for _ in voices for v in range(10)]
        who = [voice.key for voice in voices for _ in range(10)]
        per = config.questions_per_train_input if split == "train" else 1
        rows = _rows(waves, values, 1000 * config.seed + 10 + SPLIT_SEEDS[split], per, speaker=who)
        out[split] = Dataset.from_dict(rows, features=features)
    bar.close()
    return out

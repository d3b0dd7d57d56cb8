"""The number streams: number questions in text, then the same questions about inputs of new
modalities that stand for a number (a digit scan, a spoken number word, a clip of a moving
digit, a point cloud of a digit's ink, a speaker's vowel recording for speaker number k).

The default stream, vision-audio, is text -> handwritten digits -> spoken numbers; its data
is unchanged since clbench 0.2 (tests/test_streams.py pins its hash).

Beside the number tasks, WORD_TASKS ask about an input's own content, from the same data: how thick a
scan's strokes are, which way a clip's digit moves, which side of a digit's cloud is nearest, how fast
a speaker talks, how long a vowel recording is. Their answers are words ("bold", "left", "fast"); one,
image-phrase (stream phrase-answers), answers in two ("bold seven"), for generated scoring.

A stream with both the vision and the audio task also has a mixed-modality probe, `image-plus-audio`:
a test digit scan and a test speaker's number in one prompt ("the number is <image> . what is the
number plus <spoken number> ?"), evaluated after every stage and never learned (MixedProbe).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cl_bench.streams.data import cached_splits, default_cache_dir, stable_hash
from cl_bench.streams.experience import MixedProbe, TaskStream, column
from cl_bench.streams.base import Stream
from cl_bench.streams import numbers
from cl_bench.streams.tasks import (balanced_labels, build_text, chance_level, label_questions,  # noqa: F401
                                    number_experience, task_experience)

DATA_VERSION = 5  # bump when the built data changes (5: clips step across cells, clouds are slabs)

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
    """Sizes of the built data (defaults build in seconds); the options of every number stream."""

    train_speakers: int = field(default=80, metadata={"help": "speakers (voice, rate, pitch) in audio training"})
    val_speakers: int = field(default=20, metadata={"help": "speakers in audio validation (training voices)"})
    test_speakers: int = field(default=100, metadata={"help": "speakers in audio test (held-out voices)"})
    questions_per_train_input: int = field(default=2, metadata={"help": "questions asked about each training input"})
    seed: int = field(default=0, metadata={"help": "seed of the data build (not of the run)"})

    def __post_init__(self) -> None:
        for name in ("train_speakers", "val_speakers", "test_speakers", "questions_per_train_input"):
            if getattr(self, name) < 1:
                raise ValueError(f"VisionAudioConfig.{name} must be >= 1, got {getattr(self, name)}")


# Task name -> (modality, what is asked, builder(config, progress) -> {split: Dataset}).
TASKS = {
    "vision": ("image", "digit-questions", lambda c, progress: build_digits(c)),
    "audio": ("audio", "spoken-number-questions", lambda c, progress: build_speech(c, progress)),
    "video": ("video", "moving-digit-questions", lambda c, progress: build_video(c)),
    "points": ("point-cloud", "digit-cloud-questions", lambda c, progress: build_points(c)),
    "series": ("time-series", "speaker-number-questions", lambda c, progress: build_series(c)),
    # questions about the input's own content, answered by a word (WORD_TASKS)
    "image-thickness": ("image", "stroke-thickness-questions", lambda c, progress: build_image_thickness(c)),
    "video-motion": ("video", "motion-direction-questions", lambda c, progress: build_video_motion(c)),
    "points-tilt": ("point-cloud", "near-side-questions", lambda c, progress: build_points_tilt(c)),
    "audio-rate": ("audio", "speech-rate-questions", lambda c, progress: build_audio_rate(c, progress)),
    "series-length": ("time-series", "recording-length-questions", lambda c, progress: build_series_length(c)),
    # answered by a phrase of two words (several tokens: scored whole, and by generated answers)
    "image-phrase": ("image", "stroke-and-digit-phrases", lambda c, progress: build_image_phrase(c)),
}
# Tasks whose answers are words of their own (task_experience), not numbers: task -> template id -> wording.
WORD_TASKS = {
    "image-thickness": {"thickness-0": "the digit is <input> . is it written thin or bold ?",
                        "thickness-1": "<input> is the pen stroke thin or bold ?"},
    "video-motion": {"motion-0": "the clip is <input> . which way does the digit move ?",
                     "motion-1": "<input> where does the digit go ?"},
    "points-tilt": {"near-0": "the cloud is <input> . which side of the digit is nearest ?",
                    "near-1": "<input> which side of the board comes closest ?"},
    "audio-rate": {"rate-0": "the speaker says <input> . does the speaker talk slow or fast ?",
                   "rate-1": "<input> is the speech slow or fast ?"},
    "series-length": {"length-0": "the recording is <input> . is it short or long ?",
                      "length-1": "<input> is the vowel short or long ?"},
    "image-phrase": {"phrase-0": "the digit is <input> . say how it is written and which digit it is .",
                     "phrase-1": "<input> describe the pen stroke and the digit ."},
}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _tasks(*names: str) -> dict[str, str]:
    return {n: TASKS[n][0] for n in names}


class NumberStream(Stream):
    """Number questions: the base text task, then the tasks in `tasks`, in order; with the vision and the audio
    task, the image-plus-audio probe."""

    Config = VisionAudioConfig

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.mixed = {"image-plus-audio": "image+audio"} if {"vision", "audio"} <= set(cls.tasks) else {}

    def build(self, cache_dir: Path | None = None, progress: bool = True) -> TaskStream:
        # One data cache for every number stream: a task's data depends on its name and the config only.
        root = Path(cache_dir or default_cache_dir()) / "data" / "numbers"
        key = stable_hash({"version": DATA_VERSION, "config": self.config.__dict__})
        text = cached_splits(root / f"text-{key}", build_text)
        exp = number_experience
        # A second forgetting measure: every fact in every wording, in plain form (training items; the context
        # forms add 3x the evaluation time and little information).
        plain = text["train"].select([i for i, t in enumerate(column(text["train"], "template")) if t.startswith("plain-")])
        base = exp("text", "text", "number-questions", text, probes={"train-plain": plain})
        new = []
        for name in self.tasks:
            modality, task, builder = TASKS[name]
            d = cached_splits(root / f"{name}-{key}", lambda b=builder: b(self.config, progress))
            if name in WORD_TASKS:
                new.append(task_experience(name, modality, task, d, prompt_templates=WORD_TASKS[name]))
            else:
                new.append(exp(name, modality, task, d))
        mixed = ()
        if "image-plus-audio" in self.mixed:
            tests = {e.name: e.test for e in new}
            d = cached_splits(root / f"image-plus-audio-{key}",
                              lambda: build_image_plus_audio(tests["vision"], tests["audio"], self.config))
            mixed = (MixedProbe("image-plus-audio", "image+audio", "picture-plus-spoken-number", d["test"],
                                numbers.ANSWERS, chance_level(d)),)
        return TaskStream(self.name, base, tuple(new), mixed)


class VisionAudio(NumberStream):
    """Number questions: text (base), then handwritten digits (image), then spoken numbers (audio)."""

    name = "vision-audio"
    tasks = _tasks("vision", "audio")


class AudioVision(NumberStream):
    """vision-audio in reverse: text (base), then spoken numbers (audio), then handwritten digits (image)."""

    name = "audio-vision"
    tasks = _tasks("audio", "vision")


class VisionVideoAudioPoints(NumberStream):
    """Four new modalities in PathWeave's order: digit images, moving-digit clips, spoken numbers, digit point clouds."""

    name = "vision-video-audio-points"
    tasks = _tasks("vision", "video", "audio", "points")


class FiveModalities(NumberStream):
    """Five new modalities: digit images, speakers' vowel series, spoken numbers, digit point clouds, moving-digit clips."""

    name = "five-modalities"
    tasks = _tasks("vision", "series", "audio", "points", "video")


class ModalityQuestions(NumberStream):
    """Questions about each new input's own content: stroke thickness (image), the speaker's rate (audio), the
    digit's motion (video), the cloud's nearest side (point cloud) and the recording's length (time series)."""

    name = "modality-questions"
    tasks = _tasks("image-thickness", "audio-rate", "video-motion", "points-tilt", "series-length")


class PhraseAnswers(NumberStream):
    """Digit scans described in two words, the stroke and the digit ("thin seven", "bold three"): answers of
    several tokens, for generated scoring (`clbench run --scoring generated`) beside teacher-forced exact match."""

    name = "phrase-answers"
    tasks = _tasks("image-phrase")


class TwoTasksPerModality(NumberStream):
    """Each new modality twice: digit images and spoken numbers (as vision-audio), then a second task of each
    modality about the same kind of input: stroke thickness (image), the speaker's rate (audio). A strategy that
    chooses its weights by modality answers both tasks of a modality with the same ones; one routed by task keeps
    them apart."""

    name = "two-tasks-per-modality"
    tasks = _tasks("vision", "audio", "image-thickness", "audio-rate")


SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
MIXED_ITEMS = 400  # items of the image-plus-audio probe
MIXED_PROMPT = f"{numbers.INPUT_PREFIX} {numbers.WORDINGS['add'][0][0].format(b='<input>')}"


def _distinct_inputs(split) -> tuple[list, list[int]]:
    """The distinct inputs of a question split (each input is asked several questions) and their numbers."""
    seen, inputs, values = set(), [], []
    for x, v in zip(column(split, "input"), column(split, "value")):
        k = np.asarray(x).tobytes()
        if k not in seen:
            seen.add(k)
            inputs.append(x)
            values.append(int(v))
    return inputs, values


def build_image_plus_audio(vision_test, audio_test, config: VisionAudioConfig) -> dict:
    """The mixed-modality probe: a test digit scan and a test speaker's spoken number in one prompt, "the number is
    <input> . what is the number plus <input> ?" (the canonical adding question, the spoken number in the place of
    the word), answer their sum. Test inputs only: a strategy has seen neither the scans nor the voices."""
    from datasets import Array2D, Dataset, Features, Sequence, Value

    images, a = _distinct_inputs(vision_test)
    clips, b = _distinct_inputs(audio_test)
    rng = np.random.default_rng([config.seed, 77])
    pi, pc = rng.permutation(len(images)), rng.permutation(len(clips))
    pairs = [(int(pi[j % len(pi)]), int(pc[(j // len(pi) + j) % len(pc)])) for j in range(MIXED_ITEMS)]
    features = Features({"input_0": Array2D((8, 8), "float32"), "input_1": Sequence(Value("int16")),
                         "template": Value("string"), "prompt": Value("string"), "answer": Value("string")})
    return {"test": Dataset.from_dict({
        "input_0": [images[i] for i, _ in pairs], "input_1": [clips[c] for _, c in pairs],
        "template": ["add-mixed"] * len(pairs), "prompt": [MIXED_PROMPT] * len(pairs),
        "answer": [str(a[i] + b[c]) for i, c in pairs]}, features=features)}


def _rows(inputs, values, seed, per_input, **extra):
    """Question rows about each input; `extra` holds further per-input columns."""
    rows = numbers.modality_questions(values, seed, per_input)
    out = {"input": [inputs[i] for i, *_ in rows], "value": [values[i] for i, *_ in rows],
           "template": [t for _, t, _, _ in rows], "prompt": [p for _, _, p, _ in rows],
           "answer": [a for *_, a in rows]}
    out.update({k: [col[i] for i, *_ in rows] for k, col in extra.items()})
    return out


def digit_split(config: VisionAudioConfig) -> tuple[object, dict[str, np.ndarray]]:
    """scikit-learn's handwritten digits (1,797 real 8x8 scans) and the scans of each split, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    rest, test = train_test_split(idx, test_size=DIGITS_TEST, stratify=d.target, random_state=config.seed)
    train, val = train_test_split(rest, test_size=DIGITS_VAL, stratify=d.target[rest], random_state=config.seed)
    return d, {"train": train, "val": val, "test": test}


def per_input(config: VisionAudioConfig, split: str) -> int:
    return config.questions_per_train_input if split == "train" else 1


def build_digits(config: VisionAudioConfig) -> dict:
    """scikit-learn's handwritten digits (1,797 real 8x8 scans), split by image."""
    from datasets import Array2D, Dataset, Features, Value

    d, splits = digit_split(config)
    features = Features({"input": Array2D((8, 8), "float32"), "value": Value("int32"), "template": Value("string"),
                         "prompt": Value("string"), "answer": Value("string")})
    out = {}
    for split, ids in splits.items():
        images = [d.images[i].astype(np.float32) for i in ids]
        values = [int(d.target[i]) for i in ids]
        out[split] = Dataset.from_dict(_rows(images, values, 1000 * config.seed + SPLIT_SEEDS[split],
                                             per_input(config, split)), features=features)
    return out


def _scan_features(input_feature):
    """The columns of a task whose inputs are derived from the digit scans."""
    from datasets import Features, Value

    return Features({"input": input_feature, "value": Value("int32"), "template": Value("string"),
                     "prompt": Value("string"), "answer": Value("string")})


def _from_scans(config: VisionAudioConfig, input_feature, derive, salt: int) -> dict:
    """Question rows about an input derived from each digit scan, in the vision task's splits.

    `derive(image, rng)` makes one input; `salt` keeps this task's random draws its own.
    """
    from datasets import Dataset

    d, splits = digit_split(config)
    features = _scan_features(input_feature)
    out = {}
    for split, ids in splits.items():
        rng = np.random.default_rng([config.seed, SPLIT_SEEDS[split], salt])
        inputs = [derive(d.images[i], rng) for i in ids]
        values = [int(d.target[i]) for i in ids]
        out[split] = Dataset.from_dict(_rows(inputs, values, 1000 * config.seed + salt + SPLIT_SEEDS[split],
                                             per_input(config, split)), features=features)
    return out


def build_video(config: VisionAudioConfig) -> dict:
    """Clips of a digit scan moving across a larger frame (derived from the digit scans, split by scan)."""
    from datasets import Array3D

    from cl_bench.task_streams.derived import FRAME_SIZE, FRAMES, moving_clip

    return _from_scans(config, Array3D((FRAMES, FRAME_SIZE, FRAME_SIZE), "float32"), moving_clip, 20)


def build_points(config: VisionAudioConfig) -> dict:
    """Point clouds sampled from a digit scan's ink, turned in 3-D (derived from the digit scans, split by scan)."""
    from datasets import Array2D

    from cl_bench.task_streams.derived import POINTS, ink_cloud

    return _from_scans(config, Array2D((POINTS, 3), "float32"), ink_cloud, 30)


def build_series(config: VisionAudioConfig) -> dict:
    """JapaneseVowels (UCI/UEA): 12 LPC cepstrum channels of /ae/ said by speaker 1-9; the value is the speaker's number.

    The archive's 370 test recordings are the test split; its 270 training recordings are split
    (stratified by speaker) into 216 for training and 54 for validation.
    """
    from datasets import Array2D, Dataset, Features, Value

    parts = vowel_split(config)
    features = Features({"input": Array2D((None, 12), "float32"), "value": Value("int32"),
                         "template": Value("string"), "prompt": Value("string"), "answer": Value("string")})
    out = {}
    for split, (xs, ys) in parts.items():
        out[split] = Dataset.from_dict(_rows(xs, [int(v) for v in ys], 1000 * config.seed + 40 + SPLIT_SEEDS[split],
                                             per_input(config, split)), features=features)
    return out


def vowel_split(config: VisionAudioConfig) -> dict[str, tuple[list[np.ndarray], list[int]]]:
    """JapaneseVowels' recordings and speakers in build_series' splits: split -> (series, speakers)."""
    from sklearn.model_selection import train_test_split

    from cl_bench.task_streams.derived import japanese_vowels

    (x_train, y_train), (x_test, y_test) = japanese_vowels()
    tr, va = train_test_split(np.arange(len(y_train)), test_size=54, stratify=y_train, random_state=config.seed)
    return {"train": ([x_train[i] for i in tr], [y_train[i] for i in tr]),
            "val": ([x_train[i] for i in va], [y_train[i] for i in va]), "test": (x_test, y_test)}


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


def speech_clips(config: VisionAudioConfig, progress: bool = True) -> dict[str, tuple[list, list, list]]:
    """Every speaker of `speakers` saying every number word 0-9 (int16 at 16 kHz): split -> (waveforms, numbers,
    voices), one entry a clip, speaker-major."""
    from tqdm.auto import tqdm

    from cl_bench.task_streams.speech import synthesize

    spk = speakers(config)
    bar = tqdm(total=10 * sum(len(v) for v in spk.values()), desc="synthesising speech", unit="clip",
               disable=not progress)
    out = {}
    for split, voices in spk.items():
        waves = synthesize(list(numbers.WORDS), voices, SAMPLE_RATE, progress=bar.update)
        out[split] = (waves, [v for _ in voices for v in range(10)], [voice for voice in voices for _ in range(10)])
    bar.close()
    return out


def build_speech(config: VisionAudioConfig, progress: bool = True) -> dict:
    """Every speaker says every number word 0-9; waveforms stored as int16 at 16 kHz."""
    from datasets import Dataset, Features, Sequence, Value

    features = Features({"input": Sequence(Value("int16")), "value": Value("int32"), "speaker": Value("string"),
                         "template": Value("string"), "prompt": Value("string"), "answer": Value("string")})
    out = {}
    for split, (waves, values, voices) in speech_clips(config, progress).items():
        who = [voice.key for voice in voices]
        rows = _rows(waves, values, 1000 * config.seed + 10 + SPLIT_SEEDS[split], per_input(config, split), speaker=who)
        out[split] = Dataset.from_dict(rows, features=features)
    return out


# ---- questions about an input's own content (WORD_TASKS) ----

SLOW_RATES, FAST_RATES = range(120, 151), range(200, 231)  # words/min; speakers in between are left out


def _label_rows(name: str, inputs, labels, seed: int, per_input: int, **extra) -> dict:
    """Columns of WORD_TASKS[name]'s questions about each input (answer: its label); `extra`: per-input columns."""
    rows = label_questions(labels, WORD_TASKS[name], seed, per_input)
    out = {"input": [inputs[i] for i, *_ in rows], "template": [t for _, t, _, _ in rows],
           "prompt": [p for _, _, p, _ in rows], "answer": [a for *_, a in rows]}
    out.update({k: [col[i] for i, *_ in rows] for k, col in extra.items()})
    return out


def _scan_labels(config: VisionAudioConfig, name: str, input_feature, derive, classes, salt: int) -> dict:
    """WORD_TASKS[name]'s questions about an input derived from each digit scan, in the vision task's splits.

    Each split's labels are balanced among `classes` and drawn by the config's seed; `derive(image, rng, label)`
    makes the input that has its label; `salt` keeps this task's random draws its own.
    """
    from datasets import Dataset

    d, splits = digit_split(config)
    features = _scan_features(input_feature)
    out = {}
    for split, ids in splits.items():
        rng = np.random.default_rng([config.seed, SPLIT_SEEDS[split], salt])
        labels = balanced_labels(classes, len(ids), rng)
        inputs = [derive(d.images[i], rng, label) for i, label in zip(ids, labels)]
        values = [int(d.target[i]) for i in ids]  # the digit, kept for analysis; the answer is the label
        out[split] = Dataset.from_dict(_label_rows(name, inputs, labels, 1000 * config.seed + salt + SPLIT_SEEDS[split],
                                                   per_input(config, split), value=values), features=features)
    return out


def build_image_thickness(config: VisionAudioConfig) -> dict:
    """Is a digit scan written thin (as scanned) or bold (strokes widened a pixel)? Split by scan, as vision."""
    from datasets import Array2D

    from cl_bench.task_streams.derived import THICKNESS, thick_scan

    return _scan_labels(config, "image-thickness", Array2D((8, 8), "float32"),
                        lambda image, rng, label: thick_scan(image, label), THICKNESS, 50)


def build_image_phrase(config: VisionAudioConfig) -> dict:
    """A digit scan, thin or bold as image-thickness draws them, described in two words: its stroke, then its digit
    as a word ("bold seven"): 20 answers. Split by scan, as vision."""
    from datasets import Array2D

    from cl_bench.task_streams.derived import THICKNESS, thick_scan

    out = _scan_labels(config, "image-phrase", Array2D((8, 8), "float32"),
                       lambda image, rng, label: thick_scan(image, label), THICKNESS, 70)
    return {split: d.map(lambda r: {"answer": f"{r['answer']} {DIGIT_WORDS[r['value']]}"})
            for split, d in out.items()}


def build_video_motion(config: VisionAudioConfig) -> dict:
    """Which way (left, right, up, down) a clip's digit steps across the 2x2 grid. Split by scan, as vision."""
    from datasets import Array3D

    from cl_bench.task_streams.derived import DIRECTIONS, FRAME_SIZE, FRAMES, directed_clip

    return _scan_labels(config, "video-motion", Array3D((FRAMES, FRAME_SIZE, FRAME_SIZE), "float32"), directed_clip,
                        tuple(DIRECTIONS), 60)


def build_points_tilt(config: VisionAudioConfig) -> dict:
    """Which side (left, right, top, bottom) of a digit's tilted ink slab is nearest. Split by scan, as vision."""
    from datasets import Array2D

    from cl_bench.task_streams.derived import NEAR_SIDES, POINTS, tilted_cloud

    return _scan_labels(config, "points-tilt", Array2D((POINTS, 3), "float32"), tilted_cloud, NEAR_SIDES, 70)


def build_audio_rate(config: VisionAudioConfig, progress: bool = True) -> dict:
    """Does a speaker talk slow (120-150 words/min) or fast (200-230)? The audio task's clips and speakers (test
    speakers' voices held out as there); clips of speakers at 160-190 words/min are left out."""
    from datasets import Dataset, Features, Sequence, Value

    features = Features({"input": Sequence(Value("int16")), "value": Value("int32"), "speaker": Value("string"),
                         "template": Value("string"), "prompt": Value("string"), "answer": Value("string")})
    out = {}
    for split, (waves, values, voices) in speech_clips(config, progress).items():
        keep = [i for i, v in enumerate(voices) if v.rate in SLOW_RATES or v.rate in FAST_RATES]
        labels = ["slow" if voices[i].rate in SLOW_RATES else "fast" for i in keep]
        rows = _label_rows("audio-rate", [waves[i] for i in keep], labels,
                           1000 * config.seed + 80 + SPLIT_SEEDS[split], per_input(config, split),
                           value=[values[i] for i in keep], speaker=[voices[i].key for i in keep])
        out[split] = Dataset.from_dict(rows, features=features)
    return out


def build_series_length(config: VisionAudioConfig) -> dict:
    """Is a JapaneseVowels recording short (at most 15 steps) or long? build_series' recordings and splits."""
    from datasets import Array2D, Dataset, Features, Value

    from cl_bench.task_streams.derived import length_class

    features = Features({"input": Array2D((None, 12), "float32"), "value": Value("int32"),
                         "template": Value("string"), "prompt": Value("string"), "answer": Value("string")})
    out = {}
    for split, (xs, ys) in vowel_split(config).items():
        rows = _label_rows("series-length", xs, [length_class(x) for x in xs],
                           1000 * config.seed + 90 + SPLIT_SEEDS[split], per_input(config, split),
                           value=[int(v) for v in ys])
        out[split] = Dataset.from_dict(rows, features=features)
    return out

"""Streams from the user's own files: a YAML stream file, read through the datasets library."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.io import wavfile


from cl_bench.streams import resolve
from cl_bench.cli import main
from cl_bench.models.encoders import ImagePatches
from cl_bench.streams.files import StreamFileError, read_spec

WORDS = ("zero", "one", "two")


def write_stream(root, **task_overrides):
    """A stream file and its data: a text task (csv), digit images (imagefolder), tones (csv of .wav paths)
    and 2-channel series (json with array columns); the answer of every item is its number 0-2."""
    from PIL import Image
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    digits = load_digits()
    (root / "text").mkdir(parents=True)
    # each split asks in its own words and shows its own digit images: the contract forbids test items that
    # also sit in a split strategies see
    asks = {"train": "what is {} plus one ?", "val": "{} plus one is what ?", "test": "is what {} plus one ?"}
    first = {"train": 0, "val": 11, "test": 13}
    for split, n in (("train", 30), ("val", 6), ("test", 6)):
        rows = [(asks[split].format(WORDS[k % 3]), str(k % 3 + 1)) for k in range(n)]
        (root / "text" / f"{split}.csv").write_text("question,answer\n" + "\n".join(f"{q},{a}" for q, a in rows))
        for label in range(3):  # imagefolder: <split>/<label>/<file>.png
            d = root / "digits" / split / str(label)
            d.mkdir(parents=True)
            for k, img in enumerate(digits.images[digits.target == label][first[split]: first[split] + n // 3 + (split == "train")]):
                Image.fromarray(np.uint8(img * 15)).resize((16, 16)).save(d / f"{split}-{k}.png")
        (root / "wav").mkdir(exist_ok=True)
        lines = ["path,number"]
        for k in range(n):
            t = np.arange(1600) / 8000
            w = (0.3 * np.sin(2 * np.pi * 300 * (k % 3 + 1) * t) + 0.01 * rng.standard_normal(1600)) * 32767
            wavfile.write(root / "wav" / f"{split}-{k}.wav", 8000, w.astype(np.int16))  # 8 kHz: resampled
            lines.append(f"wav/{split}-{k}.wav,{k % 3}")
        (root / f"tones-{split}.csv").write_text("\n".join(lines))
        series = [{"x": (rng.standard_normal((12 + k % 5, 12)) + k % 3).tolist(), "y": k % 3, "kind": "read"}
                  for k in range(n)]
        (root / f"series-{split}.json").write_text("\n".join(json.dumps(r) for r in series))
    tasks = [
        {"name": "text", "modality": "text", "prompt": "{question}", "answer": "answer",
         "data": {"format": "csv", "files": {s: f"text/{s}.csv" for s in ("train", "val", "test")}}},
        {"name": "digits", "modality": "image", "encoder": "patches", "image_size": 8,
         "data": {"format": "imagefolder", "dir": "digits"}, "input": "image",
         "prompt": "the number is <input> . what is the number ?", "answer": "label"},
        {"name": "tones", "modality": "audio", "data": {"format": "csv", "files": {
            "train": "tones-train.csv", "val": "tones-val.csv", "test": "tones-test.csv"}},
         "input": "path", "prompt": "<input> what is the number ?", "answer": "number"},
        {"name": "series", "modality": "time-series", "template": "kind",
         "data": {"format": "json", "files": {"train": "series-train.json", "validation": "series-val.json",
                                              "test": "series-test.json"}},
         "input": "x", "prompt": "the number is <input> . what is the number ?", "answer": "y"},
    ]
    for i, over in task_overrides.items():
        tasks[int(i[1:])].update(over)
    import yaml

    path = root / "my-stream.yaml"
    path.write_text(yaml.safe_dump({"name": "my-stream", "tasks": tasks}))
    return path


@pytest.mark.slow
def test_a_yaml_stream_from_local_files_runs_end_to_end(tmp_path, cache_dir):
    path = write_stream(tmp_path / "data")
    _, ts = resolve.load(str(path), cache_dir=tmp_path / "cache", progress=False)
    assert ts.name == "my-stream" and [t.name for t in ts.tasks] == ["text", "digits", "tones", "series"]
    assert [t.modality for t in ts.tasks] == ["text", "image", "audio", "time-series"]
    digits, tones, series = ts.experiences
    assert len(digits.train) == 33 and np.asarray(digits.test[0]["input"]).shape == (8, 8)
    assert set(digits.answer_set) == {"0", "1", "2"} and digits.chance == pytest.approx(1 / 3)
    w = np.asarray(tones.train[0]["input"])
    assert tones.train.features["input"].feature.dtype == "int16" and len(w) == 3200  # 0.2 s at 8 kHz -> 16 kHz
    assert 0 < np.abs(w).max() <= 32767
    assert np.asarray(series.val[0]["input"]).shape[1] == 12 and set(series.train["template"]) == {"read"}
    assert ts.base.train[0]["prompt"] == "what is zero plus one ?" and ts.base.train[0]["answer"] == "1"
    out = CliRunner().invoke(main, ["validate", "--stream", str(path), "--cache-dir", str(tmp_path / "cache")])
    assert out.exit_code == 0, out.output
    res = tmp_path / "results"
    out = CliRunner().invoke(main, ["run", "--stream", str(path), "--strategy", "full-ft", "--steps", "2",
                                    "--batch-size", "4", "--pretrain-steps", "5", "--device", "cpu",
                                    "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(res), "-q"])
    assert out.exit_code == 0, out.output
    (f,) = (res / "runs" / "my-stream" / "full-ft").glob("*.json")
    doc = json.loads(f.read_text())
    assert doc["status"] == "complete" and len(doc["accuracy_matrix"]) == 4
    assert [t["encoder"] for t in doc["stream"]["tasks"]] == [
        None, "cl_bench.models.encoders:ImagePatches", "cl_bench.models.encoders:LogMelFrames",
        "cl_bench.models.encoders:SeriesPatches"]


def test_a_yaml_stream_on_the_number_questions(tmp_path):
    root = tmp_path / "data"
    write_stream(root)
    import yaml

    path = root / "on-numbers.yaml"
    spec = yaml.safe_load((root / "my-stream.yaml").read_text())
    path.write_text(yaml.safe_dump({"base": "numbers", "tasks": spec["tasks"][1:2]}))
    _, ts = resolve.load(str(path), cache_dir=tmp_path / "cache", progress=False)
    assert ts.name == "on-numbers" and ts.base.task == "number-questions" and ts.order == ("digits",)


@pytest.mark.parametrize("change, message", [
    ({"t1": {"modality": "imgae"}}, "tasks[1].modality: 'imgae' is not a registered modality"),
    ({"t1": {"encoder": "log-mel"}}, "tasks[1].encoder: no encoder 'log-mel' for modality 'image'"),
    ({"t2": {"data": {"format": "csv", "files": {"train": "nope.csv", "val": "tones-val.csv", "test": "tones-test.csv"}}}},
     "tasks[2].data.files.train: 'nope.csv' matches no file"),
    ({"t2": {"data": {"format": "xlsx", "dir": "wav"}}}, "tasks[2].data.format: 'xlsx' is not one of"),
    ({"t3": {"prompt": "<input> <input>"}}, "tasks[3].prompt: holds <input> more than once"),
    ({"t3": {"colour": "red"}}, "tasks[3].colour: unknown field"),
    ({"t1": {"answer": None}}, "tasks[1].answer: must be a string"),
])
def test_a_bad_stream_file_names_the_field(tmp_path, change, message):
    path = write_stream(tmp_path / "data", **change)
    with pytest.raises(StreamFileError) as e:
        read_spec(path)
    assert message in str(e.value) and str(path) in str(e.value)


class BrokenPatches(ImagePatches):
    """An image encoder that cannot read its inputs."""

    def featurize(self, raw):
        raise RuntimeError("cannot read these images")


def test_validate_uses_the_encoder_the_stream_file_declares(tmp_path):
    path = write_stream(tmp_path / "data", t1={"encoder": f"{__name__}:BrokenPatches"})
    out = CliRunner().invoke(main, ["validate", "--stream", str(path), "--cache-dir", str(tmp_path / "cache")])
    assert out.exit_code == 1 and "task 'digits' train split: encoder" in out.output
    assert "RuntimeError: cannot read these images" in out.output


def test_a_bad_column_is_named_when_the_data_is_read(tmp_path):
    path = write_stream(tmp_path / "data", t2={"answer": "numbr"})
    out = CliRunner().invoke(main, ["validate", "--stream", str(path), "--cache-dir", str(tmp_path / "cache")])
    assert out.exit_code == 2 and "tasks[2].answer: no column 'numbr' in the train split" in out.output
    out = CliRunner().invoke(main, ["run", "--stream", str(tmp_path / "missing.yaml")])
    assert out.exit_code == 2 and "no such stream file" in out.output

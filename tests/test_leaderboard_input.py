"""What the leaderboard takes in: one bad result file never spoils the board.

Each damaged file is left out on one line naming the field and the rule it breaks (cl_bench.results.check_result,
cl_bench.reporting.collect); a copy of a run is counted once, naming the file it repeats. The good fixture runs
(tests/fixtures/results: full-ft seeds 0 and 1, align-only seed 0, joint seeds 0 and 1) stay on the board.
"""

import copy
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from cl_bench.reporting import formats, leaderboard
from cl_bench.results import check_result, load_result

FIXTURES = Path(__file__).parent / "fixtures" / "results" / "runs" / "vision-audio"
FULL_FT = json.loads((FIXTURES / "full-ft" / "mixtral-tiny-seed0-full0.json").read_text())  # schema 1
ALIGN = json.loads((FIXTURES / "align-only" / "mixtral-tiny-seed0-alig0.json").read_text())  # schema 2
_SHARES = {t: [[0.25, 0.25, 0.5, 0.0], [0.5, 0.5, 0.0, 0.0]] for t in ("text", "vision", "audio")}
_ROUTED = {"layers": [0, 1], "expert_stage": [[-1] * 4, [-1, -1, -1, 0]], "shares": _SHARES}
ROUTED = {**ALIGN, "schema_version": 3, "routing": {"rows": [copy.deepcopy(_ROUTED) for _ in range(3)]}}  # schema 3


def _set(path: str, value):
    """A change to a document: the field at `path` ("stream.tasks[1].chance") set to `value`."""
    def change(doc):
        *parents, last = re.findall(r"[^.\[\]]+", path)
        for p in parents:
            doc = doc[int(p)] if isinstance(doc, list) else doc[p]
        doc[int(last) if isinstance(doc, list) else last] = value
    return change


def _drop(path: str):
    def change(doc):
        *parents, last = re.findall(r"[^.\[\]]+", path)
        for p in parents:
            doc = doc[int(p)] if isinstance(doc, list) else doc[p]
        del doc[last]
    return change


# (name, the document it starts from, the change, the exact line it is left out with)
CASES = [
    ("no-stream-name", FULL_FT, _drop("stream.name"), "stream.name: missing"),
    ("schema-text", FULL_FT, _set("schema_version", "3"), "schema_version: '3' is a string, not an integer"),
    ("no-schema", FULL_FT, _drop("schema_version"), "result file lacks 'schema_version'"),
    ("no-matrix", FULL_FT, _drop("accuracy_matrix"), "result file lacks 'accuracy_matrix'"),
    ("cell-text", FULL_FT, _set("accuracy_matrix[1][2]", "a"), "accuracy_matrix[1][2]: 'a' is a string, not a number"),
    ("cells-text", FULL_FT, _set("accuracy_matrix", [["a"] * 3] * 3),
     "accuracy_matrix[0][0]: 'a' is a string, not a number (and 8 more cells)"),
    ("cell-bool", FULL_FT, _set("accuracy_matrix[0][0]", True), "accuracy_matrix[0][0]: True is a boolean, not a number"),
    ("cell-above-1", FULL_FT, _set("accuracy_matrix[2][0]", 1.5), "accuracy_matrix[2][0]: 1.5 is outside [0, 1]"),
    ("cell-nan", FULL_FT, _set("accuracy_matrix[2][0]", math.nan), "accuracy_matrix[2][0]: nan is outside [0, 1]"),
    ("row-short", FULL_FT, _set("accuracy_matrix[1]", [0.5, 0.6]), "accuracy_matrix[1]: 2 cells for 3 tasks"),
    ("rows-missing", FULL_FT, _set("accuracy_matrix", [[0.9, 0.1, 0.1], [0.5, 0.6, 0.1]]),
     "accuracy_matrix: 2 rows for 3 tasks (one per evaluation: the base model, then after each stage)"),
    ("row-text", FULL_FT, _set("accuracy_matrix[2]", "0.3 0.4 0.7"),
     "accuracy_matrix[2]: '0.3 0.4 0.7' is a string, not a list"),
    ("seed-text", FULL_FT, _set("seed", "zero"), "seed: 'zero' is a string, not an integer"),
    ("run-key-number", FULL_FT, _set("run_key", 5), "run_key: 5 is an integer, not a string"),
    ("status-failed", FULL_FT, _set("status", "failed"), "status 'failed': not a finished run"),
    ("newer-schema", FULL_FT, _set("schema_version", 99),
     "schema_version 99 is newer than this clbench reads (3); upgrade clbench"),
    ("config-list", FULL_FT, _set("config", []), "config: [] is a list, not an object"),
    ("no-strategy", FULL_FT, _drop("config.strategy"), "config.strategy: missing"),
    ("strategy-number", FULL_FT, _set("config.strategy", 5), "config.strategy: 5 is an integer, not a string"),
    ("no-model", FULL_FT, _drop("config.model"), "config.model: missing"),
    ("stream-list", FULL_FT, _set("stream", ["vision-audio"]), "stream: ['vision-audio'] is a list, not an object"),
    ("tasks-none", FULL_FT, _set("stream.tasks", None), "stream.tasks: null, not a list"),
    ("no-chance", FULL_FT, _drop("stream.tasks[1].chance"), "stream.tasks[1].chance: missing"),
    ("chance-2", FULL_FT, _set("stream.tasks[1].chance", 2), "stream.tasks[1].chance: 2 is outside [0, 1]"),
    ("no-modality", FULL_FT, _drop("stream.tasks[2].modality"), "stream.tasks[2].modality: missing"),
    ("task-twice", FULL_FT, _set("stream.tasks[2].name", "vision"),
     "stream.tasks[2].name: 'vision' is stream.tasks[1]'s name too"),
    ("order-text", FULL_FT, _set("stream.order", "audio,vision"),
     "stream.order: 'audio,vision' is a string, not a list"),
    ("order-unknown", FULL_FT, _set("stream.order", ["sound", "vision"]),
     "stream.order[0]: 'sound' is not a new task of the stream (vision, audio)"),
    ("base-list", FULL_FT, _set("base_model", []), "base_model: [] is a list, not an object"),
    ("metric-text", FULL_FT, _set("metrics.acc", "high"), "metrics.acc: 'high' is a string, not a number"),
    ("metric-missing", FULL_FT, _drop("metrics.bwt"), "metrics.bwt: missing"),
    ("metric-nan", FULL_FT, _set("metrics.forgetting", math.nan), "metrics.forgetting: nan is not finite"),
    ("stages-none", FULL_FT, _set("stages", None), "stages: null, not a list"),
    ("stage-missing", FULL_FT, lambda d: d["stages"].pop(), "stages: 1 stage records for 2 stages"),
    ("no-cost", FULL_FT, _drop("stages[0].cost"), "stages[0].cost: missing"),
    ("cost-text", FULL_FT, _set("stages[0].cost.trainable", "many"),
     "stages[0].cost.trainable: 'many' is a string, not an integer"),
    ("cost-off", FULL_FT, _set("stages[1].cost.total", 5),
     "stage audio: cost does not add up: total 5 != base 1783936 + added 143872; "
     "stage audio: trainable 1000000 outside [0, total]"),
    ("no-stage-seconds", FULL_FT, _drop("stages[1].train_seconds"), "stages[1].train_seconds: missing"),
    ("loss-text", FULL_FT, _set("stages[0].train_stats.last_loss", "x"),
     "stages[0].train_stats.last_loss: 'x' is a string, not a number"),
    ("loss-nan", FULL_FT, _set("stages[0].train_stats.last_loss", math.nan),
     "stage vision: training diverged (a loss is not finite)"),
    ("no-train-seconds", FULL_FT, _drop("timing.train_seconds"), "timing.train_seconds: missing"),
    ("train-seconds-text", FULL_FT, _set("timing.train_seconds", "70"),
     "timing.train_seconds: '70' is a string, not a number"),
    ("declaration-unknown", FULL_FT, _set("declaration", {"keeps_everything": True}),
     "declaration.keeps_everything: not a field of a declaration "
     "(past_train, past_val, task_weights, modality_routed, task_routed, budget)"),
    ("declaration-flag-text", FULL_FT, _set("declaration", {"past_train": "yes"}),
     "declaration.past_train: 'yes' is a string, not a boolean"),
    ("four-problems", FULL_FT,
     lambda d: (_drop("stream.name")(d), _set("seed", "zero")(d), _drop("config.model")(d), _drop("metrics.acc")(d)),
     "config.model: missing; seed: 'zero' is a string, not an integer; stream.name: missing (and 1 more)"),
    # schema 2: each task's test size, and what each stage spent and kept
    ("n-test-0", ALIGN, _set("stream.tasks[1].n_test", 0),
     "stream.tasks[1].n_test: 0 is not a number of test items (1 or more)"),
    ("no-n-test", ALIGN, _drop("stream.tasks[2].n_test"), "stream.tasks[2].n_test: missing"),
    ("kept-text", ALIGN, _set("stages[0].memory.past_train_items", {"text": "many"}),
     "stages[0].memory.past_train_items.text: 'many' is a string, not a number"),
    ("no-flops", ALIGN, _drop("stages[1].training.flops"), "stages[1].training.flops: missing"),
    ("items-number", ALIGN, _set("item_results.rows[2][1]", 7), "item_results.rows[2][1]: 7 is an integer, not a string"),
    # schema 3: the routing analysis the figures draw
    ("routing-row-text", ROUTED, _set("routing.rows[1]", "experts"),
     "routing.rows[1]: 'experts' is a string, not an object"),
    ("routing-no-layers", ROUTED, _drop("routing.rows[0].layers"), "routing.rows[0].layers: missing"),
    ("routing-stage-5", ROUTED, _set("routing.rows[2].expert_stage[1]", [-1, -1, -1, 5]),
     "routing.rows[2].expert_stage[1]: [-1, -1, -1, 5] is not a list of the stage that added each expert "
     "(-1: the model's own, else 0 to 1)"),
    ("routing-shares-text", ROUTED, _set("routing.rows[2].shares.audio[0]", ["a", 0.5, 0.5, 0.0]),
     "routing analysis of row 2, audio, layer 0: shares ['a', 0.5, 0.5, 0.0] are not a distribution over its 4 "
     "experts"),
]
RAW = [("a-list", "[1, 2]", "not a result file (a JSON list, not an object)"),
       ("empty", "", "unreadable result file (Expecting value: line 1 column 1 (char 0))"),
       ("latin-1", b'{"schema_version": 1, "x": "\xe9"}',
        "unreadable result file ('utf-8' codec can't decode byte 0xe9 in position 28: invalid continuation byte)")]


def _good_runs(root: Path) -> Path:
    runs = root / "runs" / "vision-audio"
    for strategy in ("full-ft", "align-only", "joint"):
        shutil.copytree(FIXTURES / strategy, runs / strategy)
    return runs


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """The good runs, and every damaged file of CASES and RAW beside them (named to be read first)."""
    root = tmp_path_factory.mktemp("damaged")
    runs = _good_runs(root)
    for name, doc, change, _ in CASES:
        d = copy.deepcopy(doc)
        change(d)
        (runs / "full-ft" / f"00-{name}.json").write_text(json.dumps(d))
    for name, text, _ in RAW:
        path = runs / "full-ft" / f"00-{name}.json"
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return root, leaderboard.build(root), leaderboard.build(_good_runs(tmp_path_factory.mktemp("clean")).parent.parent)


@pytest.mark.parametrize("name,expected", [(c[0], c[3]) for c in CASES] + [(r[0], r[2]) for r in RAW])
def test_a_damaged_file_is_left_out_naming_the_field_and_the_rule(damaged, name, expected):
    _, board, _ = damaged
    why = {p.name: reason for p, reason in board.skipped}
    assert why[f"00-{name}.json"] == expected


def test_no_damaged_file_spoils_the_board(damaged):
    """Every damaged file is left out once, and the table is the one the good runs alone make."""
    root, board, clean = damaged
    assert sorted(p.name for p, _ in board.skipped) == sorted(f"00-{n}.json" for n, *_ in CASES + RAW)
    assert formats.to_markdown(board).split("Left out:")[0].rstrip() + "\n" == formats.to_markdown(clean)
    text = formats.to_markdown(board)
    assert f"- {root / 'runs/vision-audio/full-ft/00-no-stream-name.json'}: stream.name: missing" in text


def test_an_integer_accuracy_is_a_number_in_range(tmp_path):
    runs = _good_runs(tmp_path)
    doc = copy.deepcopy(FULL_FT)
    doc["accuracy_matrix"][0] = [1, 0, 0]  # 1 and 0, as JSON writes whole numbers
    assert check_result(doc) == []
    (runs / "full-ft" / "mixtral-tiny-seed0-full0.json").write_text(json.dumps(doc))
    board = leaderboard.build(tmp_path)
    assert [p.name for p, _ in board.skipped] == []
    ft = next(r for r in board.tables[0].rows if r.label == "full-ft")
    assert ft.values["seeds"][0] == 2 and ft.matrix[0] == [0.5 + 0.9 / 2, 0.1 / 2, 0.1 / 2]


def test_a_copy_of_a_result_file_is_counted_once(tmp_path):
    """A single-seed run copied is one seed with no interval, not two seeds with a point interval."""
    runs = _good_runs(tmp_path)
    src = runs / "align-only" / "mixtral-tiny-seed0-alig0.json"
    shutil.copy(src, runs / "align-only" / "zz-copy.json")
    board = leaderboard.build(tmp_path)
    assert board.skipped == [(runs / "align-only" / "zz-copy.json", f"a copy of {src} (byte-identical): counted once")]
    single = next(r for r in board.tables[0].rows if r.label == "align-only")
    assert single.values["seeds"][0] == 1 and len(single.runs) == 1 and math.isnan(single.ci["acc"][0])
    assert f"- {runs / 'align-only' / 'zz-copy.json'}: a copy of {src} (byte-identical): counted once" in (
        formats.to_markdown(board))


def test_a_run_written_twice_is_counted_once(tmp_path):
    """Another file with the same run_key, seed and accuracy matrix (here written at another time) is one run."""
    runs = _good_runs(tmp_path)
    src = runs / "full-ft" / "mixtral-tiny-seed0-full0.json"
    doc = json.loads(src.read_text())
    doc["created"] = "2026-12-01T00:00:00+00:00"
    (runs / "full-ft" / "again.json").write_text(json.dumps(doc, indent=1))
    board = leaderboard.build(tmp_path)
    assert board.skipped == [(src, f"the same run as {runs / 'full-ft' / 'again.json'} (run_key 'full-ft-00000000', "
                                   "seed 0, the same accuracy matrix): counted once")]
    ft = next(r for r in board.tables[0].rows if r.label == "full-ft")
    assert ft.values["seeds"][0] == 2 and ft.ci["acc"] == (pytest.approx(1.4 / 3), pytest.approx(2.0 / 3))


def test_load_result_names_a_string_schema_version_a_type_error(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**FULL_FT, "schema_version": "3"}))
    with pytest.raises(ValueError) as e:
        load_result(path)
    assert str(e.value) == f"{path}: schema_version: '3' is a string, not an integer"


def test_check_result_never_raises_on_a_damaged_document():
    """Every case above, handed to check_result directly: a list of problems, the first one the case's."""
    for name, doc, change, expected in CASES:
        d = copy.deepcopy(doc)
        change(d)
        if name in ("status-failed", "newer-schema", "declaration-unknown", "declaration-flag-text"):
            continue  # the leaderboard's rules, beyond the schema's checks
        assert "; ".join(check_result(d)[:3]).startswith(expected.split(" (and ")[0]), name
    assert check_result(copy.deepcopy(FULL_FT)) == check_result(copy.deepcopy(ALIGN)) == []
    assert check_result(copy.deepcopy(ROUTED)) == []

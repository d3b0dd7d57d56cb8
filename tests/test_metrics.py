import math

import pytest
import torch

from cl_bench.analysis import metrics as M

# Hand-computed example: text, vision, audio (T = 2).
R = torch.tensor([
    [0.90, 0.10, 0.20],  # base model
    [0.80, 0.70, 0.25],  # after vision
    [0.60, 0.50, 0.65],  # after audio
])


def test_acc_is_mean_of_last_row():
    assert M.average_accuracy(R).item() == pytest.approx((0.60 + 0.50 + 0.65) / 3)


def test_bwt_includes_text_and_the_last_earlier_task():
    # j = 0: 0.60 - 0.90 ; j = 1 (= T-1): 0.50 - 0.70
    assert M.backward_transfer(R).item() == pytest.approx(((0.60 - 0.90) + (0.50 - 0.70)) / 2)


def test_fwt_base_reference_drops_first_term():
    # only j = 2: R[1, 2] - R[0, 2]
    assert M.forward_transfer(R).item() == pytest.approx(0.25 - 0.20)


def test_fwt_chance_reference_keeps_every_new_task():
    chance = torch.tensor([0.0, 0.1, 0.1])
    assert M.forward_transfer(R, chance).item() == pytest.approx(((0.10 - 0.1) + (0.25 - 0.1)) / 2)


def test_fwt_undefined_for_one_new_modality():
    assert math.isnan(M.forward_transfer(R[:2, :2]).item())


def test_forgetting_uses_max_over_earlier_rows_and_excludes_last_task():
    # j = 0: max(0.9, 0.8) - 0.6 = 0.3 ; j = 1: max(0.1, 0.7) - 0.5 = 0.2 ; task 2 (last) excluded
    assert M.forgetting_per_task(R).tolist() == pytest.approx([0.3, 0.2])
    assert M.forgetting(R).item() == pytest.approx(0.25)


def test_forgetting_max_can_come_from_before_training():
    R2 = torch.tensor([[0.9, 0.5], [0.4, 0.8]])
    assert M.forgetting(R2).item() == pytest.approx(0.5)


def test_stream_of_one_stage():
    R1 = torch.tensor([[0.9, 0.1], [0.7, 0.8]])
    assert M.backward_transfer(R1).item() == pytest.approx(-0.2)
    assert M.forgetting(R1).item() == pytest.approx(0.2)
    assert M.average_accuracy(R1).item() == pytest.approx(0.75)
    assert math.isnan(M.forward_transfer(R1).item())


def test_zero_stages_is_undefined_not_zero():
    R0 = torch.tensor([[0.9]])
    assert math.isnan(M.backward_transfer(R0).item())
    assert math.isnan(M.forgetting(R0).item())


def test_batched_equals_per_run():
    g = torch.Generator().manual_seed(0)
    batch = torch.rand(50, 4, 4, generator=g)
    for fn in (M.average_accuracy, M.backward_transfer, M.forward_transfer, M.forgetting):
        got = fn(batch)
        assert got.shape == (50,)
        want = torch.stack([fn(r) for r in batch])
        torch.testing.assert_close(got, want)


def test_bad_shape_is_named():
    with pytest.raises(ValueError, match=r"\[\.\.\., T\+1, T\+1\]"):
        M.average_accuracy(torch.zeros(2, 3))


def test_summarize_reports_undefined_as_none():
    s = M.summarize(R[:2, :2])
    assert s["fwt"] is None
    assert s["text_retention"] == pytest.approx(0.8 / 0.9 * 100)


# --- intransigence, retention, plasticity, transfer matrix ---------------------------------

def test_intransigence_against_joint_diagonal():
    joint = torch.tensor([0.80, 0.70])  # a*_1, a*_2: joint training's R_joint[1, 1], R_joint[2, 2]
    # I_1 = 0.80 - R[1, 1] = 0.80 - 0.70 = 0.10 ; I_2 = 0.70 - R[2, 2] = 0.70 - 0.65 = 0.05
    assert M.intransigence_per_task(R, joint).tolist() == pytest.approx([0.10, 0.05])
    assert M.intransigence(R, joint).item() == pytest.approx((0.10 + 0.05) / 2)


def test_joint_reference_is_the_joint_diagonal_without_text():
    R_joint = torch.tensor([[0.90, 0.10, 0.20], [0.88, 0.80, 0.30], [0.87, 0.78, 0.70]])
    assert M.joint_reference(R_joint).tolist() == pytest.approx([0.80, 0.70])
    assert M.intransigence(R, M.joint_reference(R_joint)).item() == pytest.approx(0.075)


def test_best_joint_reference_is_the_best_rows_mean_diagonal():
    joint = torch.tensor([[[0.9, 0.1, 0.1], [0.8, 0.80, 0.1], [0.8, 0.7, 0.70]],
                          [[0.9, 0.1, 0.1], [0.8, 0.90, 0.1], [0.8, 0.7, 0.60]]])  # [runs, T+1, T+1]
    single = torch.tensor([[[0.9, 0.1, 0.1], [0.5, 0.80, 0.1], [0.3, 0.2, 0.75]]])
    # joint's mean diagonal (.85, .65), single-ft's (.80, .75): the best per task
    assert M.best_joint_reference([joint, single]).tolist() == pytest.approx([0.85, 0.75])

def test_intransigence_wants_one_value_per_new_task():
    with pytest.raises(ValueError, match=r"joint_diag must have shape \[\.\.\., 2\]"):
        M.intransigence(R, torch.tensor([0.9, 0.8, 0.7]))  # [T+1] is not accepted


def test_retention_default_reference():
    # text: 100 * 0.60 / R[0, 0] = 100 * 0.60 / 0.90 = 66.67 ; vision: 100 * 0.50 / R[1, 1] = 100 * 0.5 / 0.7
    # = 71.43 ; audio (last): 100 * 0.65 / 0.65 = 100 by construction
    assert M.default_reference(R).tolist() == pytest.approx([0.90, 0.70, 0.65])
    assert M.retention(R).tolist() == pytest.approx([200 / 3, 500 / 7, 100.0])
    # the mean skips the last task, 100 by construction: (66.67 + 71.43) / 2
    assert M.mean_retention(R).item() == pytest.approx((200 / 3 + 500 / 7) / 2)


def test_retention_given_reference_keeps_every_task():
    ref = torch.tensor([0.90, 0.80, 0.50])  # e.g. each modality fine-tuned alone
    # 100 * 0.60 / 0.90 = 66.67 ; 100 * 0.50 / 0.80 = 62.5 ; 100 * 0.65 / 0.50 = 130
    assert M.retention(R, ref).tolist() == pytest.approx([200 / 3, 62.5, 130.0])
    assert M.mean_retention(R, ref).item() == pytest.approx((200 / 3 + 62.5 + 130.0) / 3)


def test_retention_zero_reference_is_nan():
    Rz = torch.tensor([[0.9, 0.0], [0.6, 0.0]])  # the new task never learned: R[1, 1] = 0
    got = M.retention(Rz)
    assert got[0].item() == pytest.approx(100 * 0.6 / 0.9)
    assert math.isnan(got[1].item())
    assert math.isnan(M.retention(torch.tensor([[0.0]]))[0].item())


def test_transfer_matrix_default_reference():
    chance = torch.tensor([0.0, 0.1, 0.1])
    # M[i, j] = (R[i, j] - R[j, j]) / (R[j, j] - chance_j); denominators 0.9, 0.6, 0.55
    want = [
        [0.0, (0.10 - 0.70) / 0.6, (0.20 - 0.65) / 0.55],  # 0, -1, -9/11
        [(0.80 - 0.90) / 0.9, 0.0, (0.25 - 0.65) / 0.55],  # -1/9, 0, -8/11
        [(0.60 - 0.90) / 0.9, (0.50 - 0.70) / 0.6, 0.0],   # -1/3, -1/3, 0
    ]
    got = M.transfer_matrix(R, chance=chance)
    torch.testing.assert_close(got, torch.tensor(want))
    assert got[0, 1].item() == pytest.approx(-1.0)  # vision at chance before learning it


def test_transfer_matrix_without_chance_is_relative_change():
    # chance 0: M[2, 0] = (0.6 - 0.9) / 0.9 = retention / 100 - 1
    assert M.transfer_matrix(R)[2, 0].item() == pytest.approx(M.retention(R)[0].item() / 100 - 1)


def test_transfer_matrix_zero_denominator_is_nan_and_plasticity():
    chance = torch.tensor([0.0, 0.1, 0.1])
    ref = torch.tensor([0.90, 0.10, 0.50])  # vision's reference at chance: column 1 undefined
    got = M.transfer_matrix(R, ref, chance)
    assert torch.isnan(got[:, 1]).all()
    # M[2, 2] = (0.65 - 0.50) / (0.50 - 0.10) = 0.375 ; M[1, 0] = (0.8 - 0.9) / 0.9
    assert got[2, 2].item() == pytest.approx(0.375)
    assert got[1, 0].item() == pytest.approx(-1 / 9)
    norm = M.normalised_plasticity(R, ref, chance)
    assert math.isnan(norm[0].item()) and norm[1].item() == pytest.approx(0.375)
    with pytest.raises(ValueError, match="needs a reference"):
        M.normalised_plasticity(R, None)


def test_plasticity_is_diagonal_of_new_tasks():
    assert M.plasticity(R).tolist() == pytest.approx([0.70, 0.65])


# --- edge cases peers get wrong --------------------------------------------------------------

def test_forgetting_excludes_the_last_task():
    # The last task's zero-shot 0.9 before training and 0.1 after would add 0.8 if it were counted.
    Rl = torch.tensor([[0.9, 0.9], [0.9, 0.1]])
    assert M.forgetting_per_task(Rl).shape == (1,)
    assert M.forgetting(Rl).item() == pytest.approx(0.0)  # text only: max(0.9) - 0.9


def test_bwt_counts_the_j_equals_t_minus_1_term():
    # Only j = T-1 = 1 changed: (0.9 - 0.9) + (0.4 - 0.8), over 2 tasks = -0.2 (a range(T-1) loop gives 0)
    Rb = torch.tensor([[0.9, 0.1, 0.1], [0.9, 0.8, 0.1], [0.9, 0.4, 0.7]])
    assert M.backward_transfer(Rb).item() == pytest.approx(-0.2)


def test_all_metrics_for_a_stream_of_one_stage():
    R1 = torch.tensor([[0.9, 0.1], [0.7, 0.8]])
    m = M.all_metrics(R1, chance=torch.tensor([0.0, 0.5]), joint_diag=torch.tensor([0.85]))
    assert math.isnan(m["fwt"].item())                               # base reference: the only term is 0
    assert m["fwt_vs_chance"].item() == pytest.approx(0.1 - 0.5)      # R[0, 1] - chance_1
    assert m["bwt"].item() == pytest.approx(0.7 - 0.9)                # text only
    assert m["forgetting"].item() == pytest.approx(0.9 - 0.7)         # text only
    assert m["intransigence"].item() == pytest.approx(0.85 - 0.8)
    assert m["retention"].tolist() == pytest.approx([700 / 9, 100.0])  # 100 * 0.7 / 0.9
    assert m["mean_retention"].item() == pytest.approx(700 / 9)       # text only
    assert m["plasticity"].tolist() == pytest.approx([0.8])
    assert m["transfer_matrix"].shape == (2, 2)


def test_all_metrics_with_no_new_task_are_nan():
    m = M.all_metrics(torch.tensor([[0.9]]), joint_diag=torch.zeros(0))
    for k in ("bwt", "fwt", "forgetting", "mean_retention", "mean_plasticity", "intransigence"):
        assert math.isnan(m[k].item()), k
    assert m["acc"].item() == pytest.approx(0.9)


def test_summarize_adds_per_task_lists():
    s = M.summarize(R, torch.tensor([0.0, 0.1, 0.1]), joint_diag=torch.tensor([0.8, 0.7]))
    assert s["retention"] == pytest.approx([200 / 3, 500 / 7, 100.0], abs=1e-4)
    assert s["plasticity"] == pytest.approx([0.7, 0.65])
    assert s["intransigence"] == pytest.approx(0.075)
    assert s["fwt_vs_chance"] == pytest.approx(0.075)
    assert M.summarize(torch.tensor([[0.0, 0.1], [0.5, 0.0]]))["retention"] == [None, None]


# --- batched over runs, on any device ---------------------------------------------------------

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T", [1, 3])
def test_all_metrics_batched_equals_per_run(device, T):
    g = torch.Generator().manual_seed(T)
    batch = torch.rand(64, T + 1, T + 1, generator=g, dtype=torch.float64).to(device)
    batch[3, 1, 1] = 0.0  # a zero reference: NaN in the same place both ways
    chance = torch.rand(T + 1, generator=g, dtype=torch.float64).to(device) * 0.2
    joint = torch.rand(64, T, generator=g, dtype=torch.float64).to(device)
    got = M.all_metrics(batch, chance=chance, joint_diag=joint)
    for k, v in got.items():
        assert v.device == batch.device, k
        assert v.shape[0] == 64, k
        want = torch.stack([M.all_metrics(batch[r], chance=chance, joint_diag=joint[r])[k] for r in range(64)])
        torch.testing.assert_close(v, want, equal_nan=True, msg=k)


def test_all_metrics_on_cuda_skips_without_one():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    Rc = R.to("cuda")
    m = M.all_metrics(Rc, chance=torch.tensor([0.0, 0.1, 0.1]), joint_diag=torch.tensor([0.8, 0.7]))
    assert all(v.device.type == "cuda" for v in m.values())
    assert m["intransigence"].item() == pytest.approx(0.075)


# --- agreement with avalanche-lib where the definitions coincide ------------------------------

def _avalanche():
    return pytest.importorskip("avalanche.evaluation.metrics.forgetting_bwt"), \
        pytest.importorskip("avalanche.evaluation.metrics.forward_transfer"), \
        pytest.importorskip("avalanche.evaluation.functional")


def _stream_metric(cls, R, init_row=None):
    """Drive one of avalanche's stream metrics through its own hooks with accuracies read from R.

    Stage i trains experience i (stage 0: the base model on text), then evaluates every task;
    init_row, when given, is an evaluation before any training (what forward transfer compares to).
    """
    from types import SimpleNamespace

    class Fed(cls):
        def metric_result(self, strategy):
            return float(strategy.row[self.eval_exp_id])

    m = Fed()
    rows = ([] if init_row is None else [("init", init_row)]) + [(i, R[i]) for i in range(R.shape[0])]
    for i, row in rows:
        s = SimpleNamespace(experience=SimpleNamespace(current_experience=i), row=row)
        if i != "init":
            if hasattr(m, "at_init"):
                m.at_init = False  # what after_eval does after the evaluation before training
            m.before_training_exp(s)
        m.before_eval(s)
        for j in range(R.shape[1]):
            m.before_eval_exp(s)
            m.eval_exp_id = j
            m.after_eval_exp(s)
    return m.result()


@pytest.mark.parametrize("seed", range(5))
def test_bwt_matches_avalanche(seed):
    fb, _, functional = _avalanche()
    T = 1 + seed % 4
    Rr = torch.rand(T + 1, T + 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ours = M.backward_transfer(Rr).item()
    # the standalone BWT metric: first value R[j, j], last value R[T, j]; the last task only has a first
    bwt = fb.BWT()
    for j in range(T + 1):
        bwt.update(j, float(Rr[j, j]), initial=True)
        if j < T:
            bwt.update(j, float(Rr[T, j]))
    per_task = bwt.result()
    assert sorted(per_task) == list(range(T))
    assert sum(per_task.values()) / T == pytest.approx(ours)
    assert _stream_metric(fb.StreamBWT, Rr) == pytest.approx(ours)
    # avalanche's forgetting (first minus last) is -BWT, term by term
    assert _stream_metric(fb.StreamForgetting, Rr) == pytest.approx(-ours)
    F = functional.forgetting(Rr.numpy())
    assert F[T, :T].mean() == pytest.approx(-ours)


@pytest.mark.parametrize("seed", range(5))
def test_fwt_with_a_given_reference_matches_avalanche(seed):
    _, ft, _ = _avalanche()
    T = 1 + seed % 4
    g = torch.Generator().manual_seed(100 + seed)
    Rr = torch.rand(T + 1, T + 1, generator=g, dtype=torch.float64)
    chance = torch.rand(T + 1, generator=g, dtype=torch.float64) * 0.3
    ours = M.forward_transfer(Rr, chance).item()
    fwt = ft.ForwardTransfer()
    for j in range(1, T + 1):
        fwt.update(j, float(chance[j]), initial=True)
        fwt.update(j, float(Rr[j - 1, j]))
    assert sum(fwt.result().values()) / T == pytest.approx(ours)
    assert _stream_metric(ft.StreamForwardTransfer, Rr, init_row=chance) == pytest.approx(ours)


def test_where_definitions_differ_from_avalanche():
    fb, ft, _ = _avalanche()
    # Vision peaks after the audio stage (0.8 > R[1, 1] = 0.6), then drops to 0.5.
    Rd = torch.tensor([[0.9, 0.1, 0.1, 0.1],
                       [0.9, 0.6, 0.1, 0.1],
                       [0.9, 0.8, 0.7, 0.1],
                       [0.9, 0.5, 0.7, 0.6]], dtype=torch.float64)
    # Chaudhry (ours): max over l < T: text 0, vision 0.8 - 0.5 = 0.3, audio 0.7 - 0.7 = 0 -> 0.1
    assert M.forgetting(Rd).item() == pytest.approx(0.1)
    # avalanche: first minus last: text 0, vision 0.6 - 0.5 = 0.1, audio 0 -> 0.1 / 3
    assert _stream_metric(fb.StreamForgetting, Rd) == pytest.approx(0.1 / 3)
    # FWT against the base model: avalanche averages the j = 1 term (0 by construction) in,
    # ours leaves it out: ours (0.0 + 0.0) / 2 = 0 here, so use a matrix with zero-shot gains.
    Rf = Rd.clone()
    Rf[1, 2], Rf[2, 3] = 0.3, 0.4  # R[j-1, j] - R[0, j]: 0 (j = 1), 0.2 (j = 2), 0.3 (j = 3)
    assert M.forward_transfer(Rf).item() == pytest.approx((0.2 + 0.3) / 2)
    assert _stream_metric(ft.StreamForwardTransfer, Rf, init_row=Rf[0]) == pytest.approx((0.0 + 0.2 + 0.3) / 3)


# --- confidence intervals ----------------------------------------------------------------------

def test_mean_ci_student_t_ignores_nan():
    # 0.70, 0.74, 0.78 (NaN dropped): n = 3, mean 0.74, s = 0.04, t_{0.975, 2} = 4.3027
    # half-width = 4.3027 * 0.04 / sqrt(3) = 0.099367
    mean, half, n = M.mean_ci([0.70, 0.74, float("nan"), 0.78])
    assert int(n) == 3
    assert float(mean) == pytest.approx(0.74)
    assert float(half) == pytest.approx(4.3027 * 0.04 / math.sqrt(3), rel=1e-4)
    # 90%: t_{0.95, 2} = 2.9200
    assert float(M.mean_ci([0.70, 0.74, 0.78], level=0.90)[1]) == pytest.approx(2.9200 * 0.04 / math.sqrt(3),
                                                                               rel=1e-4)


def test_mean_ci_batched_over_trailing_dims():
    x = torch.tensor([[0.70, 1.0, float("nan")],
                      [0.74, 1.0, float("nan")],
                      [0.78, float("nan"), float("nan")]], dtype=torch.float64)
    mean, half, n = M.mean_ci(x)
    assert n.tolist() == [3, 2, 0]
    assert mean[0].item() == pytest.approx(0.74) and mean[1].item() == 1.0 and math.isnan(mean[2].item())
    assert half[0].item() == pytest.approx(4.3027 * 0.04 / math.sqrt(3), rel=1e-4)
    assert half[1].item() == 0.0 and math.isnan(half[2].item())


def test_mean_ci_of_one_seed_has_no_half_width():
    mean, half, n = M.mean_ci(torch.tensor([0.5]))
    assert float(mean) == 0.5 and math.isnan(float(half)) and int(n) == 1
    with pytest.raises(ValueError, match="level"):
        M.mean_ci([0.5, 0.6], level=95)

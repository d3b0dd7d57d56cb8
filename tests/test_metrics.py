import math

import pytest
import torch

from cl_bench import metrics as M

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

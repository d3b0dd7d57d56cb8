"""MMER's merge and masks against a hand-computed three-task example, and their properties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cl_bench.strategies.mmer import merge as M

TAUS = torch.tensor([
    [1.0, -2.0, 0.5, 0.0],
    [3.0, 1.0, -0.5, 0.0],
    [-1.0, 1.5, -1.0, 2.0],
])


def test_elect_sign():
    assert M.elect_sign(TAUS).tolist() == [1.0, 1.0, -1.0, 1.0]  # sign of [3, 0.5, -1, 2]


def test_merge_max_and_mean_over_agreeing_entries():
    assert M.merge(TAUS, "max").tolist() == [3.0, 1.5, -1.0, 2.0]
    assert M.merge(TAUS, "mean").tolist() == [2.0, 1.25, -0.75, 2.0]
    with pytest.raises(ValueError, match="'max' or 'mean'"):
        M.merge(TAUS, "median")


def test_masks_hand_computed():
    star = M.merge(TAUS, "max")
    assert M.masks(TAUS, star, 1.0).int().tolist() == [[0, 0, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1]]
    assert M.masks(TAUS, star, 0.5).int().tolist()[0] == [1, 1, 0, 0]


def test_trim_keeps_largest_magnitudes():
    assert M.trim(TAUS[2], 0.5).tolist() == [0.0, 1.5, 0.0, 2.0]
    assert torch.equal(M.trim(TAUS[2], 1.0), TAUS[2])
    # trimmed: [1, -2, 0, 0], [3, 1, 0, 0], [0, 1.5, 0, 2]; entry 2 has no vote left
    assert M.merge(TAUS, "max", keep=0.5).tolist() == [3.0, 1.5, 0.0, 2.0]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 4), size=st.integers(1, 50), seed=st.integers(0, 10_000))
def test_lambda_one_picks_the_closer_of_base_and_merged(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    theta0 = torch.randn(size, generator=g, dtype=torch.float64)
    thetas = theta0 + torch.randn(n, size, generator=g, dtype=torch.float64)
    taus = thetas - theta0
    star = M.merge(taus)
    chosen = theta0 + M.masks(taus, star, 1.0) * star  # (n, size)
    best = torch.minimum((thetas - theta0).abs(), (thetas - theta0 - star).abs())
    torch.testing.assert_close((thetas - chosen).abs(), best)


@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3), seed=st.integers(0, 1000))
def test_bit_packed_masks_round_trip(shape, seed):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.5
    packed = M.pack(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    assert torch.equal(M.unpack(packed, tuple(shape)), mask)


def test_trim_over_the_whole_task_vector_differs_from_per_tensor(tmp_path):
    """Two tensors, one of large and one of small entries: keeping the top half of the whole vector
    keeps all of the large tensor and none of the small one; per tensor keeps half of each."""
    from safetensors.torch import save_file

    big, small = torch.tensor([4.0, -5.0, 6.0, 7.0]), torch.tensor([0.1, -0.2, 0.3, 0.4])
    save_file({"a": big, "b": small}, str(tmp_path / "t0.safetensors"))
    save_file({"a": big * 0, "b": small * 0}, str(tmp_path / "t1.safetensors"))
    paths = [tmp_path / "t0.safetensors", tmp_path / "t1.safetensors"]
    per_tensor = M.merge_files(paths, ["a", "b"], keep=0.5)
    whole = M.merge_files(paths, ["a", "b"], keep=0.5, trim_scope="vector")
    assert torch.equal(per_tensor["a"], torch.tensor([0.0, 0.0, 6.0, 7.0]))
    assert torch.equal(per_tensor["b"], torch.tensor([0.0, 0.0, 0.3, 0.4]))
    assert torch.equal(whole["a"], big) and torch.equal(whole["b"], torch.zeros(4))
    assert float(M.global_thresholds(paths[:1], ["a", "b"], 0.5)[0]) == 4.0
    with pytest.raises(ValueError, match="trim_scope must be"):
        M.merge_files(paths, ["a"], keep=0.5, trim_scope="layer")

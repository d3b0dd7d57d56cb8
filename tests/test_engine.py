"""The training loop's accounting: FLOPs estimated from the first step, per-item correctness."""

import pytest
import torch

from cl_bench.api.training import FlopMeter


def test_flop_meter_measures_the_first_step_and_scales_by_tokens():
    layer = torch.nn.Linear(8, 4, bias=False)
    meter = FlopMeter()
    x = torch.randn(2, 3, 8)  # 6 tokens; the input needs no gradient
    meter.start_step(6)
    layer(x).sum().backward()
    meter.end_step()
    # forward 2*6*8*4 = 384, weight gradient 2*4*6*8 = 384: 128 per token
    assert meter.per_token == 128
    meter.start_step(10)  # later steps are not measured, only their tokens counted
    layer(torch.randn(10, 8)).sum().backward()
    meter.end_step()
    assert meter.tokens == 16 and meter.flops == 128 * 16


def test_frozen_weights_cost_no_gradient_flops():
    layer = torch.nn.Linear(8, 4, bias=False)
    layer.requires_grad_(False)
    x = torch.randn(6, 8, requires_grad=True)  # a trainable input upstream: only its gradient is computed
    meter = FlopMeter()
    meter.start_step(6)
    layer(x).sum().backward()
    meter.end_step()
    assert meter.per_token == 128  # forward 384 + input gradient 2*6*4*8 = 384


def test_train_draws_batches_by_the_mix_weights():
    """train(mix=...): each step's batch comes from one dataset, drawn by the weights (not the sizes)."""
    from types import SimpleNamespace

    from cl_bench.api.training import train

    class Data:
        def __init__(self, n):
            self.n, self.served = n, 0

        def __len__(self):
            return self.n

        def batch(self, idx):
            self.served += 1
            b = SimpleNamespace(attention=torch.ones(len(idx), 3))
            b.to = lambda device: b
            return b

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, batch, router_aux_loss=False):
            return SimpleNamespace(loss=(self.w ** 2).sum())

    model = Model()
    for mix, want in (([1.0, 0.0], (12, 0)), ([0.0, 1.0], (0, 12)), (None, None)):
        big, small = Data(100), Data(10)
        train(model, [big, small], [{"params": [model.w], "lr": 1e-3}], steps=12, batch_size=2, seed=0,
              device=torch.device("cpu"), progress=False, mix=mix)
        if want is not None:
            assert (big.served, small.served) == want
        else:  # by size: the 100-item set serves most of the 12 batches
            assert big.served + small.served == 12 and big.served > small.served
    with pytest.raises(ValueError, match="mix needs one weight >= 0 per dataset"):
        train(model, [Data(4), Data(4)], [{"params": [model.w], "lr": 1e-3}], steps=1, batch_size=2, seed=0,
              device=torch.device("cpu"), progress=False, mix=[1.0])

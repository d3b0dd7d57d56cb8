"""The training loop's accounting: FLOPs estimated from the first step, per-item correctness."""

import torch

from cl_bench.engine import FlopMeter


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

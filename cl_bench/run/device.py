"""The run's device and precision: --device and --dtype resolved to torch's, with one-line errors naming the fix."""

from __future__ import annotations

import os

from cl_bench.config import device_problem
from cl_bench.errors import EnvironmentProblem, UsageError

DTYPES = ("float32", "bfloat16", "float16")
# The half-precision path on the CPU is for testing it on machines without a GPU: slow there, and not what
# clbench's CPU runs use.
CPU_HALF_ENV = "CLBENCH_CPU_HALF_PRECISION"


def torch_dtype(name: str, device, allow_cpu_half: bool = False):
    """The torch dtype of --dtype `name` on `device`; ValueError naming the fix for half precision on the CPU."""
    import torch

    allowed = allow_cpu_half or os.environ.get(CPU_HALF_ENV) == "1"
    if name != "float32" and device.type == "cpu" and not allowed:
        raise UsageError(f"--dtype {name} is for GPUs; on the CPU clbench runs float32: drop --dtype or run on "
                         "--device cuda")
    return getattr(torch, name)


def resolve_device(name: str):
    """The torch device of `name` (auto, cpu, cuda or cuda:N); ValueError naming the fix when there is none."""
    import torch

    if device_problem(name):
        raise UsageError(f"--device {device_problem(name)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EnvironmentProblem(f"--device {name} was asked for, but torch sees no CUDA GPU; use --device auto "
                                 "or cpu")
    if ":" in name and int(name.partition(":")[2]) >= torch.cuda.device_count():
        raise EnvironmentProblem(f"--device {name} was asked for, but torch sees {torch.cuda.device_count()} "
                                 f"GPU(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device(name)

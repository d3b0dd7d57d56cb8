"""A new modality: its raw data, and a frozen encoder that turns it into tokens."""

import numpy as np
import torch

from cl_bench import Encoder, Modality

CELLS = 32


class TallyWindows(Encoder):
    """A row of CELLS cells (grain 0-0.2, a tally mark 0.6-1) cut into windows of 8 cells: 4 tokens of 8 values."""

    modality = "tally"
    name = "windows"
    out_dim = 8

    def featurize(self, raw: list) -> torch.Tensor:
        x = torch.as_tensor(np.stack([np.asarray(r, dtype=np.float32) for r in raw]))
        if x.shape[1:] != (CELLS,):
            raise ValueError(f"TallyWindows expects rows of {CELLS} cells, got {tuple(x.shape[1:])}")
        return x

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.reshape(len(features), CELLS // self.out_dim, self.out_dim)


# `data` is a plain string: `clbench ls` reads it from this file without importing it.
TALLY = Modality(name="tally", data="a row of 32 cells with k tally marks, float array",
                 encoders={"windows": "clbench_tally.modality:TallyWindows"}, default_encoder="windows")

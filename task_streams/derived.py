"""Inputs derived from real recordings: moving-digit clips and point clouds of a digit's ink
(both from scikit-learn's digit scans), and the JapaneseVowels series (read through sktime).

The clips and clouds are derived data, not recordings of their own: they test whether a
strategy can add a modality with its own encoder and input statistics, with the answer
grounded in a real scan.
"""

from __future__ import annotations

import numpy as np

FRAMES, FRAME_SIZE = 4, 16  # a clip: 4 frames of 16x16, the 8x8 scan moving inside
POINTS = 128  # points per cloud


def moving_clip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(FRAMES, FRAME_SIZE, FRAME_SIZE) float32: the 8x8 `image` stepping across a 2x2 grid of cells, one step
    a frame to a random side or vertical neighbour, from a random first cell (the frame is empty elsewhere).

    The digit moves in whole cells, so each frame holds it whole in one tubelet's patch: a digit drifting by
    pixels lands split across patches, which a per-token projector over 897 training scans cannot read
    (a run of full-ft learned such clips only to 0.14 accuracy, chance being 0.09).
    """
    size = image.shape[0]
    cells = FRAME_SIZE // size
    clip = np.zeros((FRAMES, FRAME_SIZE, FRAME_SIZE), np.float32)
    cell = rng.integers(0, cells, 2)
    for t in range(FRAMES):
        y, x = cell * size
        clip[t, y:y + size, x:x + size] = image
        axis = rng.integers(0, 2)
        cell = cell.copy()
        cell[axis] = (cell[axis] + rng.integers(1, cells)) % cells  # a different cell along one axis
    return clip


def ink_cloud(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(POINTS, 3) float32: points drawn where the scan has ink (probability by intensity, uniform inside a
    pixel), extruded to a slab of depth 0.3 (the digit cut from a board), turned by a random yaw and pitch
    (each +-25 deg), then centred and scaled into the unit sphere (ModelNet's normalisation)."""
    h, w = image.shape
    p = image.reshape(-1).astype(np.float64)
    idx = rng.choice(p.size, POINTS, p=p / p.sum())
    row, col = np.divmod(idx, w)
    x = (col + rng.random(POINTS)) / w * 2 - 1
    y = 1 - (row + rng.random(POINTS)) / h * 2
    z = rng.uniform(-0.15, 0.15, POINTS)
    yaw, pitch = np.deg2rad(rng.uniform(-25, 25, 2))
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    pts = np.stack([x, y, z], 1) @ (rx @ ry).T
    pts -= pts.mean(0)
    return (pts / np.linalg.norm(pts, axis=1).max()).astype(np.float32)


def japanese_vowels() -> tuple[tuple[list[np.ndarray], list[int]], tuple[list[np.ndarray], list[int]]]:
    """((train series, speakers), (test series, speakers)): (steps, 12) float32 arrays of 7-29 steps, speakers 1-9."""
    from sktime.datasets import load_japanese_vowels

    out = []
    for split in ("train", "test"):
        X, y = load_japanese_vowels(split=split, return_type="nested_univ")  # variable length: not numpy3D
        series = [np.stack([X.iloc[i, c].to_numpy(np.float32) for c in range(X.shape[1])], 1) for i in range(len(X))]
        out.append((series, [int(v) for v in y]))
    return out[0], out[1]

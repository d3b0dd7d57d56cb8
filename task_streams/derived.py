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
    pts = _ink_slab(image, rng)
    yaw, pitch = np.deg2rad(rng.uniform(-25, 25, 2))
    return _turned(pts, yaw, pitch)


def _ink_slab(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(POINTS, 3) float64: ink_cloud's points before the turn (x right, y up, z the slab's depth)."""
    h, w = image.shape
    p = image.reshape(-1).astype(np.float64)
    idx = rng.choice(p.size, POINTS, p=p / p.sum())
    row, col = np.divmod(idx, w)
    x = (col + rng.random(POINTS)) / w * 2 - 1
    y = 1 - (row + rng.random(POINTS)) / h * 2
    z = rng.uniform(-0.15, 0.15, POINTS)
    return np.stack([x, y, z], 1)


def _turned(pts: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """(POINTS, 3) float32: `pts` turned by `yaw` about y, then `pitch` about x (radians), centred and scaled
    into the unit sphere. A positive yaw brings the right side (x > 0) nearer (z < 0, the voxels' front slab);
    a negative pitch brings the top (y > 0) nearer."""
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    pts = pts @ (rx @ ry).T
    pts -= pts.mean(0)
    return (pts / np.linalg.norm(pts, axis=1).max()).astype(np.float32)


# The questions about a derived input's own content (not the digit): each class and how it is made.
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (row, column) step of a clip
NEAR_SIDES = ("left", "right", "top", "bottom")  # the side of a tilted cloud nearest the viewer
THICKNESS = ("thin", "bold")


def directed_clip(image: np.ndarray, rng: np.random.Generator, direction: str) -> np.ndarray:
    """(FRAMES, FRAME_SIZE, FRAME_SIZE) float32: the 8x8 `image` in one cell of the 2x2 grid, then, from a
    random frame 1-3 on, in the neighbouring cell one step towards `direction` (a key of DIRECTIONS).

    The start cell is random among those the step leaves inside the grid (a clip moving right starts in the
    left column, in either row), so the direction is read from where the digit is and when, not from one cell.
    """
    size = image.shape[0]
    cells = FRAME_SIZE // size
    step = np.array(DIRECTIONS[direction])
    start = np.array([rng.choice([c for c in range(cells) if 0 <= c + d < cells]) for d in step])
    turn = rng.integers(1, FRAMES)  # the first frame in the new cell
    clip = np.zeros((FRAMES, FRAME_SIZE, FRAME_SIZE), np.float32)
    for t in range(FRAMES):
        y, x = (start + step * (t >= turn)) * size
        clip[t, y:y + size, x:x + size] = image
    return clip


def tilted_cloud(image: np.ndarray, rng: np.random.Generator, near: str) -> np.ndarray:
    """(POINTS, 3) float32: ink_cloud's slab, turned 20-35 deg so that its `near` side (one of NEAR_SIDES) comes
    nearest the viewer (lowest z), and by at most 5 deg about the other axis."""
    pts = _ink_slab(image, rng)
    tilt, wobble = np.deg2rad(rng.uniform(20, 35)), np.deg2rad(rng.uniform(-5, 5))
    sign = 1.0 if near in ("right", "bottom") else -1.0
    if near in ("left", "right"):
        return _turned(pts, sign * tilt, wobble)
    return _turned(pts, wobble, sign * tilt)


def thick_scan(image: np.ndarray, thickness: str) -> np.ndarray:
    """(8, 8) float32: the scan as written ("thin"), or with every stroke widened by one pixel to the right
    ("bold": each pixel the brighter of itself and its left neighbour; the frame stays 8x8, ink is never cut)."""
    image = image.astype(np.float32)
    if thickness == "thin":
        return image
    if thickness != "bold":
        raise ValueError(f"thick_scan: thickness must be one of {THICKNESS}, got {thickness!r}")
    out = image.copy()
    out[:, 1:] = np.maximum(image[:, 1:], image[:, :-1])
    return out


def length_class(series: np.ndarray) -> str:
    """"short" for a JapaneseVowels recording of at most SHORT_STEPS steps, else "long" (about half of each)."""
    return "short" if len(series) <= SHORT_STEPS else "long"


SHORT_STEPS = 15  # the median length of the archive's training recordings (7-29 steps)


def japanese_vowels() -> tuple[tuple[list[np.ndarray], list[int]], tuple[list[np.ndarray], list[int]]]:
    """((train series, speakers), (test series, speakers)): (steps, 12) float32 arrays of 7-29 steps, speakers 1-9."""
    from sktime.datasets import load_japanese_vowels

    out = []
    for split in ("train", "test"):
        X, y = load_japanese_vowels(split=split, return_type="nested_univ")  # variable length: not numpy3D
        series = [np.stack([X.iloc[i, c].to_numpy(np.float32) for c in range(X.shape[1])], 1) for i in range(len(X))]
        out.append((series, [int(v) for v in y]))
    return out[0], out[1]

"""Frozen modality encoders: standard front-ends by default, pluggable by name.

An encoder has two halves: ``featurize`` runs once per data split on raw inputs
(numpy arrays: 8x8 images, 16 kHz waveforms) and gives a tensor; ``forward`` maps
a batch of those features to tokens of shape (B, T, out_dim) for the projector.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cl_bench.errors import PluginError, UsageError
from cl_bench.models.encoder_base import Encoder


def stack_float32(raw: list) -> torch.Tensor:
    """Raw inputs of one shape (arrays or nested lists) as one float32 tensor (N, ...)."""
    return torch.as_tensor(np.stack([np.asarray(r, dtype=np.float32) for r in raw]))


class ImagePatches(Encoder):
    """Non-overlapping square patches of a grey-scale image, flattened (ViT's front-end).

    An 8x8 digit is one 8x8 patch by default (1 token of 64 values); 4x4 patches give
    4 tokens of 16. Pixel values are scaled by `scale` into [0, 1].
    """

    modality = "image"
    name = "patches"

    def __init__(self, patch: int = 8, image_size: int = 8, scale: float = 16.0) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"patch size {patch} must divide the image size {image_size}")
        self.patch, self.image_size, self.scale = patch, image_size, scale
        self.out_dim = patch * patch

    def featurize(self, raw: list) -> torch.Tensor:
        x = stack_float32(raw)
        if x.shape[1:] != (self.image_size, self.image_size):
            raise UsageError(f"ImagePatches expects {self.image_size}x{self.image_size} images, got {tuple(x.shape[1:])}")
        return x / self.scale  # (N, H, W)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        B, H, W = features.shape
        p = self.patch
        x = features.reshape(B, H // p, p, W // p, p).permute(0, 1, 3, 2, 4)  # (B, H/p, W/p, p, p)
        return x.reshape(B, (H // p) * (W // p), p * p)  # (B, T, p*p)


class LogMelFrames(Encoder):
    """Whisper's log-mel front-end (transformers' WhisperFeatureExtractor), pooled in time.

    One second of 16 kHz audio gives 100 frames of 80 mel bins; average pooling by
    `pool` gives 100 / pool frames, which are stacked `frames_per_token` at a time
    into tokens (default: 10 frames of 80 bins -> 1 token of 800 values).
    """

    modality = "audio"
    name = "log-mel"

    def __init__(self, n_mels: int = 80, seconds: int = 1, pool: int = 10, frames_per_token: int = 10,
                 sampling_rate: int = 16_000) -> None:
        super().__init__()
        from transformers import WhisperFeatureExtractor

        self.extractor = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=sampling_rate,
                                                 chunk_length=seconds)
        frames = self.extractor.nb_max_frames // pool
        if frames % frames_per_token:
            raise ValueError(f"frames_per_token {frames_per_token} must divide the {frames} pooled frames")
        self.pool, self.frames_per_token, self.sampling_rate = pool, frames_per_token, sampling_rate
        self.out_dim = n_mels * frames_per_token

    def featurize(self, raw: list) -> torch.Tensor:
        waves = [np.asarray(r, dtype=np.float32) / 32768.0 for r in raw]
        out = self.extractor(waves, sampling_rate=self.sampling_rate, return_tensors="pt")
        return out["input_features"]  # (N, n_mels, frames)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = nn.functional.avg_pool1d(features, self.pool).transpose(1, 2)  # (B, frames / pool, n_mels)
        B, F, M = x.shape
        return x.reshape(B, F // self.frames_per_token, self.frames_per_token * M)  # (B, T, out_dim)


class VideoTubelets(Encoder):
    """Non-overlapping tubelets of a grey-scale clip, flattened (ViViT's and VideoMAE's front-end).

    A tubelet is `frames` consecutive frames of a `patch` x `patch` square; a clip of 4
    frames of 16x16 gives (4/2) x (16/8)^2 = 8 tokens of 2*8*8 = 128 values by default,
    in time-major order. Pixel values are scaled by `scale` into [0, 1].
    """

    modality = "video"
    name = "tubelets"

    def __init__(self, frames: int = 2, patch: int = 8, clip_frames: int = 4, frame_size: int = 16,
                 scale: float = 16.0) -> None:
        super().__init__()
        if clip_frames % frames or frame_size % patch:
            raise ValueError(f"tubelets of {frames}x{patch}x{patch} must divide clips of "
                             f"{clip_frames}x{frame_size}x{frame_size}")
        self.frames, self.patch, self.clip_frames, self.frame_size, self.scale = frames, patch, clip_frames, frame_size, scale
        self.out_dim = frames * patch * patch

    def featurize(self, raw: list) -> torch.Tensor:
        x = stack_float32(raw)
        want = (self.clip_frames, self.frame_size, self.frame_size)
        if x.shape[1:] != want:
            raise UsageError(f"VideoTubelets expects clips of shape {want} (frames, height, width), got {tuple(x.shape[1:])}")
        return x / self.scale  # (N, T, H, W)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        B, T, H, W = features.shape
        t, p = self.frames, self.patch
        x = features.reshape(B, T // t, t, H // p, p, W // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(B, (T // t) * (H // p) * (W // p), t * p * p)  # (B, tokens, t*p*p)


class SeriesPatches(Encoder):
    """Patches of a multichannel time series, all channels of a patch in one token (PatchTST's
    patching, channel-mixed).

    A series of up to `length` steps and `channels` channels is zero-padded at the end to
    `length` (longer ones are cut) and split into patches of `patch` steps: 32 steps of 12
    channels give 4 tokens of 8*12 = 96 values by default.
    """

    modality = "time-series"
    name = "patches"

    def __init__(self, length: int = 32, channels: int = 12, patch: int = 8) -> None:
        super().__init__()
        if length % patch:
            raise ValueError(f"patch length {patch} must divide the series length {length}")
        self.length, self.channels, self.patch = length, channels, patch
        self.out_dim = patch * channels

    def featurize(self, raw: list) -> torch.Tensor:
        out = np.zeros((len(raw), self.length, self.channels), dtype=np.float32)
        for i, r in enumerate(raw):
            a = np.asarray(r, dtype=np.float32)
            if a.ndim != 2 or a.shape[1] != self.channels:
                raise UsageError(f"SeriesPatches expects series of shape (steps, {self.channels}), got {a.shape}")
            n = min(len(a), self.length)
            out[i, :n] = a[:n]
        return torch.from_numpy(out)  # (N, length, channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        B, L, C = features.shape
        return features.reshape(B, L // self.patch, self.patch * C)  # (B, tokens, patch*channels)


class PointGroups(Encoder):
    """Point-BERT's and Point-MAE's front-end: farthest point sampling picks `groups` centres,
    each centre's `neighbours` nearest points (coordinates relative to the centre) and the
    centre's own coordinates make one token: 8 groups of 16 points give 8 tokens of
    3 + 16*3 = 51 values by default. Deterministic (sampling starts at the first point).
    """

    modality = "point-cloud"
    name = "point-groups"

    def __init__(self, groups: int = 8, neighbours: int = 16) -> None:
        super().__init__()
        self.groups, self.neighbours = groups, neighbours
        self.out_dim = 3 + 3 * neighbours

    def featurize(self, raw: list) -> torch.Tensor:
        x = stack_float32(raw)
        if x.ndim != 3 or x.shape[2] != 3 or x.shape[1] < max(self.groups, self.neighbours):
            raise UsageError(f"PointGroups expects clouds of shape (points >= {max(self.groups, self.neighbours)}, 3), "
                             f"got {tuple(x.shape[1:])}")
        return x  # (N, P, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        B, P, _ = features.shape
        # Farthest point sampling: written out because it is a few lines of torch (the
        # libraries that ship it, e.g. pytorch3d, need compiled extensions).
        chosen = torch.zeros(B, self.groups, dtype=torch.long, device=features.device)
        dist = torch.full((B, P), float("inf"), device=features.device)
        last = features[:, 0]
        for g in range(1, self.groups):
            dist = torch.minimum(dist, ((features - last[:, None]) ** 2).sum(-1))
            chosen[:, g] = dist.argmax(-1)
            last = features[torch.arange(B), chosen[:, g]]
        centres = features.gather(1, chosen[..., None].expand(-1, -1, 3))  # (B, G, 3)
        knn = torch.cdist(centres, features).topk(self.neighbours, largest=False).indices  # (B, G, K), nearest first
        near = features.gather(1, knn.reshape(B, -1, 1).expand(-1, -1, 3)).reshape(B, self.groups, self.neighbours, 3)
        return torch.cat([centres, (near - centres[:, :, None]).reshape(B, self.groups, -1)], -1)  # (B, G, 3+3K)


class PointVoxels(Encoder):
    """A voxel grid of point density (VoxNet's and 3D ShapeNets' front-end), one token per depth slab.

    Clouds normalised into the unit sphere are binned into a `grid` x `grid` x `depth` grid over
    [-1, 1]^3; each voxel holds its share of the cloud's points, scaled by the cloud's fullest voxel
    into [0, 1]. The default 8x8x2 grid gives 2 tokens of 64 values (front slab, back slab), x fastest.
    Points outside the cube are clamped into its border voxels.
    """

    modality = "point-cloud"
    name = "voxels"

    def __init__(self, grid: int = 8, depth: int = 2) -> None:
        super().__init__()
        if grid < 1 or depth < 1:
            raise ValueError(f"PointVoxels needs grid >= 1 and depth >= 1, got grid={grid}, depth={depth}")
        self.grid, self.depth = grid, depth
        self.out_dim = grid * grid

    def featurize(self, raw: list) -> torch.Tensor:
        x = stack_float32(raw)
        if x.ndim != 3 or x.shape[2] != 3:
            raise UsageError(f"PointVoxels expects clouds of shape (points, 3), got {tuple(x.shape[1:])}")
        B, P, _ = x.shape
        size = torch.tensor([self.grid, self.grid, self.depth], dtype=x.dtype)
        cell = ((x + 1) / 2 * size).floor().long().clamp(min=torch.zeros(3, dtype=torch.long), max=size.long() - 1)
        # row-major index (z, y, x): y is flipped so that the top of the cloud is the first row, as in an image
        y = self.grid - 1 - cell[..., 1]
        flat = (cell[..., 2] * self.grid + y) * self.grid + cell[..., 0]
        counts = torch.zeros(B, self.depth * self.grid * self.grid).scatter_add_(1, flat, torch.ones(B, P))
        return counts / counts.amax(1, keepdim=True)  # (N, depth * grid * grid)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.reshape(features.shape[0], self.depth, self.out_dim)  # (B, depth slabs, grid*grid)


def encoder_class(modality, name: str | None = None) -> type[Encoder]:
    """The Encoder subclass `name` of `modality` (a Modality; its default encoder when name is None), loaded and
    checked: an Encoder subclass for that modality."""
    from cl_bench import registry

    name = name or modality.default_encoder
    target = modality.encoder_target(name)
    mine = ":" in name  # the user's own module:Class (--encoder), or one the modality plug-in declares
    try:
        cls = registry.Entry(name, target, "--encoder" if mine else f"modality {modality.name!r}").load()
    except registry.BrokenEntry as e:
        if mine and (e.__cause__ is None or isinstance(e.__cause__, ModuleNotFoundError)):
            raise UsageError(str(e)) from None  # a name that points at nothing: the user's typo
        raise
    # the user's own class is the user's to fix; the modality's declared encoder is its plug-in's bug
    kind = UsageError if mine else (lambda msg: PluginError(registry.modalities.label(modality.name), msg))
    if not (isinstance(cls, type) and issubclass(cls, Encoder)):
        raise kind(f"encoder {name!r} of modality {modality.name!r} is {cls!r}, not a "
                   "cl_bench.models.encoders.Encoder subclass")
    if cls.modality != modality.name:
        raise kind(f"encoder {name!r} is for modality {cls.modality!r}, not {modality.name!r}")
    return cls


def build_encoder(modality: str, name: str | None = None, options: dict | None = None) -> Encoder:
    """The frozen encoder `name` for the registered `modality` (its default when name is None).

    `name` is one of the modality's encoders ("patches", "log-mel", ...), "module:Class"
    naming an Encoder subclass of your own, constructed without arguments, or a directory
    holding a pretrained CLIP, SigLIP, Whisper or wav2vec2-style model (cl_bench.models.pretrained).
    """
    from cl_bench.streams import modality as modalities
    from cl_bench.models.pretrained import build_pretrained, is_model_dir

    if is_model_dir(name):
        modalities.get(modality)  # a known modality, checked as for the others
        enc = build_pretrained(modality, name, options)
    elif options:
        raise UsageError(f"--encoder-option {modality}.{next(iter(options))}: options are for encoders loaded from a "
                         f"directory (--encoder {modality}=DIR); {modality}'s encoder is {name or 'its default'}")
    else:
        enc = encoder_class(modalities.get(modality), name)()
    enc.requires_grad_(False)
    return enc.eval()

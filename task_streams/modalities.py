"""The built-in modalities (each registered by one entry point, group ``clbench.modalities``)."""

from cl_bench.streams.modality import Modality

_E = "cl_bench.models.encoders"

IMAGE = Modality(name="image", data="grey-scale image, (height, width) float array",
                 encoders={"patches": f"{_E}:ImagePatches"}, default_encoder="patches")
AUDIO = Modality(name="audio", data="mono waveform at 16 kHz, int16 array",
                 encoders={"log-mel": f"{_E}:LogMelFrames"}, default_encoder="log-mel")
VIDEO = Modality(name="video", data="grey-scale clip, (frames, height, width) float array",
                 encoders={"tubelets": f"{_E}:VideoTubelets"}, default_encoder="tubelets")
TIME_SERIES = Modality(name="time-series", data="multichannel time series, (steps, channels) float array",
                       encoders={"patches": f"{_E}:SeriesPatches"}, default_encoder="patches")
POINT_CLOUD = Modality(name="point-cloud", data="3-D point cloud, (points, 3) float array",
                       encoders={"voxels": f"{_E}:PointVoxels", "point-groups": f"{_E}:PointGroups"},
                       default_encoder="voxels")

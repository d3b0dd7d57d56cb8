import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One data/model cache for the whole session: the stream is built once."""
    return tmp_path_factory.mktemp("clbench-cache")


@pytest.fixture(scope="session")
def stream(cache_dir):
    from cl_bench.task_streams.vision_audio import VisionAudio

    return VisionAudio().build(cache_dir, progress=False)

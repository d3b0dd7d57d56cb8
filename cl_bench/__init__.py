"""clbench: how well can a language model be grown into new modalities without forgetting?

Importing this package imports no torch; the heavy modules are imported where used. What a
plug-in (a strategy, a stream, a modality) needs is importable from here, e.g.
``from cl_bench import Strategy, Stream, Modality, Encoder``; each name is loaded on first use.
"""

__version__ = "0.4.0.dev0"

# The public API: name -> module that defines it (loaded lazily by __getattr__).
_API = {
    # strategies
    "Strategy": "cl_bench.api.strategy", "RunContext": "cl_bench.api.strategy", "Cost": "cl_bench.api.strategy",
    "Declaration": "cl_bench.api.strategy", "Memory": "cl_bench.api.strategy", "Budget": "cl_bench.config",
    "train": "cl_bench.api.training", "TaskData": "cl_bench.api.training",
    # what a strategy trains and holds in a stage, for the memory plan (Strategy.footprint)
    "Footprint": "cl_bench.api.footprint", "numel": "cl_bench.api.footprint", "projector": "cl_bench.api.footprint",
    "full_model_footprint": "cl_bench.api.footprint",
    # streams
    "Stream": "cl_bench.streams.base", "TaskStream": "cl_bench.streams.experience", "Experience": "cl_bench.streams.experience",
    "TaskInfo": "cl_bench.streams.experience", "INPUT_MARKER": "cl_bench.streams.experience",
    "build_text": "cl_bench.streams.tasks", "number_experience": "cl_bench.streams.tasks",
    # modalities
    "Modality": "cl_bench.streams.modality", "Encoder": "cl_bench.models.encoders",
    "MultimodalLM": "cl_bench.models.multimodal",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cl_bench' has no attribute {name!r}")

"""clbench: how well can a language model be grown into new modalities without forgetting?

Importing this package imports no torch; the heavy modules are imported where used. What a
plug-in (a strategy, a stream, a modality) needs is importable from here, e.g.
``from cl_bench import Strategy, Stream, Modality, Encoder``; each name is loaded on first use.
"""

__version__ = "0.4.0.dev0"

# The public API: name -> module that defines it (loaded lazily by __getattr__).
_API = {
    # strategies
    "Strategy": "cl_bench.strategy", "RunContext": "cl_bench.strategy", "Cost": "cl_bench.strategy",
    "Declaration": "cl_bench.strategy", "Memory": "cl_bench.strategy", "Budget": "cl_bench.config",
    "train": "cl_bench.engine", "TaskData": "cl_bench.engine",
    # streams
    "Stream": "cl_bench.stream", "TaskStream": "cl_bench.experience", "Experience": "cl_bench.experience",
    "TaskInfo": "cl_bench.experience", "INPUT_MARKER": "cl_bench.experience",
    # modalities
    "Modality": "cl_bench.modality", "Encoder": "cl_bench.models.encoders",
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

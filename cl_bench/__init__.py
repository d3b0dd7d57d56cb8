"""clbench: how well can a language model be grown into new modalities without forgetting?

Importing this package imports no torch; the heavy modules are imported where used. What a
plug-in (a strategy, a stream, a modality) needs is importable from here, e.g.
``from cl_bench import Strategy, Stream, Modality, Encoder``; each name is loaded on first use.

The names in ``__all__`` are the public API a plug-in lives on, kept stable; each says what it does
in its docstring (``help(cl_bench.NAME)``; tests/test_public_api.py checks that every one loads and
is documented). Every other module of cl_bench is internal and may change: a plug-in imports from
``cl_bench`` only, as examples/plugin-template does.
"""

__version__ = "0.4.0"

# The public API: name -> module that defines it (loaded lazily by __getattr__).
_API = {
    # strategies
    "Strategy": "cl_bench.api.strategy", "RunContext": "cl_bench.api.strategy", "Cost": "cl_bench.api.strategy",
    "Declaration": "cl_bench.api.strategy", "Memory": "cl_bench.api.strategy", "Budget": "cl_bench.config",
    "tensor_bytes": "cl_bench.api.strategy",
    "train": "cl_bench.api.training", "TaskData": "cl_bench.api.training",
    # what a strategy saves to resume (Strategy.state_dict holds tensors only)
    "encode_state": "cl_bench.api.strategy", "decode_state": "cl_bench.api.strategy",
    # what a strategy trains and holds in a stage, for the memory plan (Strategy.footprint)
    "Footprint": "cl_bench.api.footprint", "numel": "cl_bench.api.footprint", "projector": "cl_bench.api.footprint",
    "full_model_footprint": "cl_bench.api.footprint", "lora_footprint": "cl_bench.api.footprint",
    "adapter_footprint": "cl_bench.api.footprint", "modules_footprint": "cl_bench.api.footprint",
    # streams
    "Stream": "cl_bench.streams.base", "TaskStream": "cl_bench.streams.experience", "Experience": "cl_bench.streams.experience",
    "TaskInfo": "cl_bench.streams.experience", "INPUT_MARKER": "cl_bench.streams.experience",
    # building a stream's tasks: number questions, any question table, another stream's tasks, the data cache
    "build_text": "cl_bench.streams.tasks", "number_questions": "cl_bench.streams.tasks",
    "number_experience": "cl_bench.streams.tasks", "task_experience": "cl_bench.streams.tasks",
    "chance_level": "cl_bench.streams.tasks", "stream_tasks": "cl_bench.api.tasks",
    "cached_splits": "cl_bench.streams.data", "default_cache_dir": "cl_bench.streams.data",
    "stable_hash": "cl_bench.streams.data",
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

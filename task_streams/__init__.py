"""Built-in task streams (installed as ``cl_bench.task_streams``).

Each stream is registered by one entry point in pyproject.toml, group ``clbench.streams``.
"""

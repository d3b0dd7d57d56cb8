"""Built-in strategies (installed as ``cl_bench.strategies``), one module each.

Each is registered by one entry point in pyproject.toml, group ``clbench.strategies``,
exactly as a third-party strategy would be.
"""

"""clbench's streams and model as other libraries' objects (avalanche-lib)."""

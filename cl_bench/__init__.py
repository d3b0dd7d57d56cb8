"""clbench: how well can a language model be grown into new modalities without forgetting?

Importing this package imports no torch; the heavy modules are imported where used.
"""

__version__ = "0.3.0"

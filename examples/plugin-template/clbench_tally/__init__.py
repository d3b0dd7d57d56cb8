"""A clbench plug-in: the tally modality, the tally-numbers stream and the last-layer strategy."""

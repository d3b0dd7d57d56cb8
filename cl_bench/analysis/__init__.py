"""Pure functions over arrays: the metrics of an accuracy matrix and the statistics over seeds and items."""

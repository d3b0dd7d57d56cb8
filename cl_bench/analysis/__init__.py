"""Pure functions over arrays: the metrics of an accuracy matrix (metrics), the statistics over seeds and items
(stats), and which strategies stand together (grouping: tiers, the Pareto front)."""

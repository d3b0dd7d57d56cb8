"""Pure functions over arrays: the metrics of an accuracy matrix (metrics), the statistics over seeds and items
(stats), which strategies stand together (grouping: letter groups of tied strategies, the Pareto front), budget
curves and retention at matched accuracy (curves), how alike two model sizes rank the strategies
(rank_agreement), and the versioned scorer of generated answers (scoring)."""

"""Reads result files only: the leaderboard and its formats, figures, summaries and README splicing."""

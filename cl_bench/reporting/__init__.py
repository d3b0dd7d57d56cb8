"""Reads result files only: the leaderboard and its formats, figures, summaries and the docs' leaderboard section."""

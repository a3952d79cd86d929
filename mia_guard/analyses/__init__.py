"""Analyses: figure groups beyond per-attack metrics (privacy bounds, leakage profile,
image bits/dim) that read one audit's statistics and scores, plus secret extraction
(docs/architecture.md)."""

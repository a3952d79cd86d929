"""End-to-end experiments on the tiny byte-level GPT-2: the demo and the defense
comparison behind ``mia-guard demo`` and ``mia-guard compare`` (docs/architecture.md)."""

"""Subcommands of the ``mia-guard`` CLI; each module has ``register(subparsers)``."""

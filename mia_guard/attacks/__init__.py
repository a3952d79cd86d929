"""Membership-inference attacks: a registry of functions from TokenStats to scores.

``get(name)`` returns a callable :class:`Attack`; ``available()`` lists the names;
``register(name)`` adds one. Every attack returns one float per canary, higher = more
likely a member (docs/architecture.md).
"""

from .registry import Attack, AttackContext, available, get, register

__all__ = ["Attack", "AttackContext", "available", "get", "register"]

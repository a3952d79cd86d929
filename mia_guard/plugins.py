"""Registries of named plug-ins: the one mechanism behind attacks and analyses.

A :class:`Registry` maps names to plug-ins of one kind and finds them in three places,
in this order:

1. plug-ins registered in this process (``mia_guard.attacks.register(name)``,
   ``mia_guard.analyses.register_analysis(name)``);
2. the built-ins, listed as ``name -> module`` and imported on first use, so the
   registry imports none of its plug-ins (and nothing heavier than the module that
   defines the one asked for);
3. other distributions' entry points in the registry's group (``mia_guard.attacks``,
   ``mia_guard.analyses``). An entry point's name is the plug-in's name and its value the
   module (or ``module:object``) whose import registers it, e.g. in ``pyproject.toml``::

       [project.entry-points."mia_guard.attacks"]
       my_attack = "my_package.attacks"

Asking for an unknown name raises :class:`UnknownNameError`, which lists the available
names and suggests the closest.
"""

from __future__ import annotations

import difflib
import importlib
from importlib import metadata
from typing import Generic, Mapping, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """No plug-in of that name (a ``KeyError`` for lookups, a ``ValueError`` for bad input)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


class Registry(Generic[T]):
    """Plug-ins of one ``kind`` by name (see the module docstring).

    Args:
        kind: what a plug-in is, for messages (``"attack"``).
        group: the entry-point group third-party distributions register under.
        builtins: ``{name: module}`` of the built-in plug-ins; importing the module
            must register the name.
    """

    def __init__(self, kind: str, group: str, builtins: Mapping[str, str]) -> None:
        self.kind = kind
        self.group = group
        self.builtins = dict(builtins)
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T, *, overwrite: bool = False) -> None:
        """Register ``item`` as ``name`` (refused when the name is taken, unless ``overwrite``)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items and not overwrite:
            raise ValueError(f"a {self.kind} named {name!r} is already registered; pass overwrite=True to replace it")
        self._items[name] = item

    def names(self) -> list[str]:
        """Every available name, sorted (registered, built-in and entry points; nothing is imported)."""
        return sorted(set(self._items) | set(self.builtins) | set(self._entry_points()))

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self.builtins or name in self._entry_points()

    def check(self, name: str) -> None:
        """Raise :class:`UnknownNameError` unless ``name`` is available (imports nothing)."""
        if name not in self:
            raise self._unknown(name)

    def get(self, name: str) -> T:
        """The plug-in called ``name``, importing its module on first use."""
        if name not in self._items:
            self._load(name)
        return self._items[name]

    def _load(self, name: str) -> None:
        if name in self.builtins:
            source = f"module {self.builtins[name]}"
            importlib.import_module(self.builtins[name])
        else:
            entry_point = self._entry_points().get(name)
            if entry_point is None:
                raise self._unknown(name)
            source = f"entry point {name} = {entry_point.value} (group {self.group})"
            entry_point.load()
        if name not in self._items:
            raise RuntimeError(
                f"{source} was imported but did not register the {self.kind} {name!r}; "
                f"its import must register it under that name"
            )

    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        """Installed distributions' entry points of :attr:`group` (read on demand: installing a plug-in needs no restart)."""
        return {ep.name: ep for ep in metadata.entry_points(group=self.group)}

    def _unknown(self, name: str) -> UnknownNameError:
        available = self.names()
        close = difflib.get_close_matches(str(name), available, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return UnknownNameError(f"unknown {self.kind} {name!r}{hint}; available: {', '.join(available)}")

"""Import paths of the flat 0.1 layout, kept working for one release (removed in 0.3).

0.2 grouped the modules by pipeline stage (docs/architecture.md). ``import
mia_guard.metrics`` and ``from mia_guard.defenses.dp_trainer import DPTrainer`` still
work: the old name resolves to a module that forwards every attribute to the new one,
with a ``DeprecationWarning`` naming the new path. Objects are the same objects, so
``isinstance`` checks hold; setting an attribute on the old name does not reach the new
module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Any

#: old module -> new module, or the modules it was split into (searched in this order)
MOVED_MODULES: dict[str, str | tuple[str, ...]] = {
    "mia_guard.templates": "mia_guard.canaries.templates",
    "mia_guard.encoding": "mia_guard.canaries.encoding",
    "mia_guard.insertion": "mia_guard.canaries.insertion",
    "mia_guard.images": ("mia_guard.canaries.images", "mia_guard.analyses.images"),
    "mia_guard.token_stats": "mia_guard.scoring.token_stats",
    "mia_guard.distributed": "mia_guard.scoring.distributed",
    "mia_guard.faults": "mia_guard.scoring.faults",
    "mia_guard.metrics": ("mia_guard.stats.metrics", "mia_guard.stats.roc", "mia_guard.stats.estimate"),
    "mia_guard.privacy": (
        "mia_guard.stats.epsilon_one_run",
        "mia_guard.stats.epsilon_two_point",
        "mia_guard.stats.exposure",
        "mia_guard.stats.metrics",
    ),
    "mia_guard.privacy_audit": "mia_guard.analyses.privacy",
    "mia_guard.profile": "mia_guard.analyses.profile",
    "mia_guard.extraction": "mia_guard.analyses.extraction",
    "mia_guard.prefix": "mia_guard.audit.prefix",
    "mia_guard.audit_result": "mia_guard.audit.result",
    "mia_guard.report_schema": "mia_guard.report.schema",
    "mia_guard.report_markdown": "mia_guard.report.markdown",
    "mia_guard.report_plots": "mia_guard.report.plots",
    "mia_guard.sinks": "mia_guard.callbacks.sinks",
    "mia_guard.demo": "mia_guard.experiments.demo",
    "mia_guard.demo_assets": "mia_guard.experiments.demo_assets",
    "mia_guard.compare": "mia_guard.experiments.compare",
    "mia_guard.compare_defenses": "mia_guard.experiments.compare_defenses",
    "mia_guard.compare_report": "mia_guard.experiments.compare_report",
    "mia_guard.compare_utility": "mia_guard.experiments.compare_utility",
    "mia_guard.defenses.dp_accounting": "mia_guard.defenses.dp.accounting",
    "mia_guard.defenses.dp_clipping": "mia_guard.defenses.dp.clipping",
    "mia_guard.defenses.dp_config": "mia_guard.defenses.dp.config",
    "mia_guard.defenses.dp_loss": "mia_guard.defenses.dp.loss",
    "mia_guard.defenses.dp_model": "mia_guard.defenses.dp.model",
    "mia_guard.defenses.dp_sampling": "mia_guard.defenses.dp.sampling",
    "mia_guard.defenses.dp_trainer": "mia_guard.defenses.dp.trainer",
}


class _ForwardingModule(types.ModuleType):
    """Stands in for a moved module: attribute reads go to the module(s) at the new path."""

    def __init__(self, name: str, targets: list[types.ModuleType]) -> None:
        super().__init__(name, f"Moved to {', '.join(t.__name__ for t in targets)}; this name is deprecated.")
        self._targets = targets

    def __getattr__(self, attr: str) -> Any:
        for target in self._targets:
            if hasattr(target, attr):
                return getattr(target, attr)
        raise AttributeError(f"module {self.__name__!r} (moved) has no attribute {attr!r}")

    def __dir__(self) -> list[str]:
        return sorted({name for target in self._targets for name in dir(target)})


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves the old module names of :data:`MOVED_MODULES` (last on ``sys.meta_path``)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> types.ModuleType:
        new = MOVED_MODULES[spec.name]
        targets = [new] if isinstance(new, str) else list(new)
        warnings.warn(
            f"{spec.name} moved to {' / '.join(targets)} in mia_guard 0.2; the old path is removed in 0.3.",
            DeprecationWarning,
            stacklevel=2,
        )
        return _ForwardingModule(spec.name, [importlib.import_module(t) for t in targets])

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the forwarding module is complete when created."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (after the regular finders)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())

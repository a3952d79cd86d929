"""One plug-in mechanism for attacks and analyses: registered by name, built-ins imported on
first use, third-party plug-ins found through entry points, unknown names refused with the
available ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mia_guard import Auditor, CanarySet, TokenStats
from mia_guard.analyses import registry as analysis_registry
from mia_guard.attacks import registry as attack_registry
from mia_guard.plugins import Registry, UnknownNameError

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, *paths: Path) -> dict:
    """Run ``code`` in a fresh interpreter (this checkout and ``paths`` on sys.path); its last stdout line as JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, paths)])}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("registry", "package"), [(attack_registry.ATTACKS, "mia_guard.attacks"),
                                                   (analysis_registry.ANALYSES, "mia_guard.analyses")])
def test_builtin_table_lists_exactly_what_the_builtin_modules_register(registry, package):
    for name, module in registry.builtins.items():
        assert getattr(registry.get(name), "fn", registry.get(name)).__module__ == module, name
    # every module of the table is imported now: nothing they register is missing from the table
    registered = {name for name, item in registry._items.items()
                  if getattr(item, "fn", item).__module__.startswith(package + ".")}
    assert registered == set(registry.builtins)


def test_listing_and_checking_names_imports_no_plugin_and_no_torch():
    got = _run("""
        import json, sys
        from mia_guard.attacks import available, registry
        from mia_guard import analyses
        names = available()
        registry.ATTACKS.check("seq_lira")
        loaded_before = sorted(m for m in sys.modules if m.startswith("mia_guard.attacks."))
        torch_before = "torch" in sys.modules
        registry.get("loss")
        print(json.dumps({"names": names, "analyses": analyses.available(), "loaded_before": loaded_before,
                          "torch_before": torch_before,
                          "lira_after": "mia_guard.attacks.lira" in sys.modules,
                          "reference_free_after": "mia_guard.attacks.reference_free" in sys.modules}))
    """)
    assert {"loss", "seq_lira", "trajectory_rnn", "shadow_classifier"} <= set(got["names"])
    assert got["analyses"] == ["image", "privacy", "profile"]
    assert got["loaded_before"] == ["mia_guard.attacks.registry"] and not got["torch_before"]
    assert got["reference_free_after"] and not got["lira_after"]  # only the module that defines "loss"


def _plugin_distribution(root: Path) -> Path:
    """A distribution installed the way pip leaves it: a package and its dist-info with entry points."""
    package = root / "mia_guard_test_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent('''
        from mia_guard.analyses import register_analysis
        from mia_guard.attacks import register

        @register("plugin_top1_rate")
        def top1_rate(ctx):
            """Mean top-1 hit rate of the scored tokens."""
            return ctx.stats.masked_mean("top1")

        @register_analysis("plugin_count")
        def count(inputs):
            return {"valid": int(inputs.valid.sum()), "attacks": sorted(inputs.scores)}
    '''))
    (package / "silent.py").write_text("# registers nothing\n")
    info = root / "mia_guard_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mia-guard-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [mia_guard.attacks]
        plugin_top1_rate = mia_guard_test_plugin
        plugin_silent = mia_guard_test_plugin.silent

        [mia_guard.analyses]
        plugin_count = mia_guard_test_plugin:count
    """))
    return root


def test_entry_point_plugins_run_in_an_audit(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_plugin_distribution(tmp_path)))
    assert "plugin_top1_rate" in attack_registry.available() and "plugin_count" in analysis_registry.available()
    n = 40
    canaries = CanarySet.from_token_ids([[1, 2, 3, i + 5] for i in range(n)], seed=0)
    member = torch.tensor(canaries.is_member)
    top1 = member[:, None].float().expand(n, 3).clone()  # members are predicted right, others not
    ones = torch.ones(n, 3)
    stats = TokenStats(1 - top1, ones, ones, ones, top1, torch.ones(n, 3, dtype=torch.bool))
    auditor = Auditor(canaries, attacks=["loss", "plugin_top1_rate"], analyses=["plugin_count"], reference="none")
    result = auditor.evaluate(stats, step=0)
    assert result.metrics["plugin_top1_rate"].auc.value == 1.0
    assert result.extras["plugin_count"] == {"valid": n, "attacks": ["loss", "plugin_top1_rate"]}
    with pytest.raises(RuntimeError, match="did not register the attack 'plugin_silent'"):
        attack_registry.get("plugin_silent")


def test_unknown_names_list_the_available_ones_and_taken_names_are_refused():
    with pytest.raises(UnknownNameError, match=r"unknown attack 'min_kk' \(did you mean 'min_k'\?\); available: "):
        attack_registry.get("min_kk")
    with pytest.raises(KeyError):  # a lookup error and a bad-input error at once
        analysis_registry.get("privacy_bounds")
    with pytest.raises(ValueError, match="'loss' is already registered; pass overwrite=True"):
        attack_registry.register("loss")(lambda ctx: np.zeros(ctx.num_canaries))
    registry: Registry[int] = Registry("widget", "mia_guard.test_widgets", {})
    registry.add("one", 1)
    registry.add("one", 2, overwrite=True)
    assert registry.get("one") == 2 and registry.names() == ["one"]
    with pytest.raises(UnknownNameError, match="unknown widget 'two'; available: one"):
        registry.check("two")

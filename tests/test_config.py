"""AuditConfig: one frozen, validated, JSON-round-trippable set of audit options, taken by
the Auditor, the Trainer callback, the loop API and prefix sensitivity."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import numpy as np
import pytest

from mia_guard import AuditConfig, Auditor, CanarySet
from mia_guard.audit.prefix import prefix_sensitivity
from mia_guard.callbacks import AuditLoop

OPTIONS = dict(
    attacks=["loss", "min_k", "classifier_mlp"],
    attack_params={"min_k": {"k": 0.1}, "classifier_mlp": {"hidden": [16, 8], "alpha": 1.0}},
    fprs=[0.1, 0.01],
    confidence=0.9,
    n_folds=3,
    seed=11,
    analyses=["privacy", "profile"],
    analysis_options={"delta": 1e-6, "profile": {"max_positions": 8}},
    reference="none",
    prefix_tokens=2,
    batch_size=32,
    chunk_size=4096,
)


def token_canaries(n: int = 40) -> CanarySet:
    return CanarySet.from_token_ids([[1, 2, 3, 4, i % 250 + 5] for i in range(n)], seed=0)


def test_json_round_trip_is_exact_and_covers_every_field():
    config = AuditConfig(**OPTIONS)
    data = json.loads(json.dumps(config.to_dict(), allow_nan=False))
    assert set(data) == {f.name for f in dataclasses.fields(AuditConfig)}
    assert AuditConfig.from_dict(data) == config
    assert data["fprs"] == [0.01, 0.1]  # stored sorted
    assert data["attack_params"]["classifier_mlp"] == {"hidden": [16, 8], "alpha": 1.0}
    assert AuditConfig.from_dict({}) == AuditConfig()  # missing fields take their defaults
    with pytest.raises(TypeError, match="unknown option 'atacks' \\(did you mean 'attacks'\\?\\)"):
        AuditConfig.from_dict({"atacks": ["loss"]})


def test_config_is_frozen_and_hands_out_copies():
    params = {"min_k": {"k": 0.1}}
    config = AuditConfig(attacks=["min_k"], attack_params=params)
    params["min_k"]["k"] = 0.9  # the caller's dict is copied, not kept
    assert config.params_for("min_k") == {"k": 0.1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3
    with pytest.raises(TypeError):
        config.attack_params["min_k"]["k"] = 0.5
    handed_out = config.params_for("min_k")
    handed_out["k"] = 0.7
    assert config.params_for("min_k") == {"k": 0.1} and config.params_for("loss") == {}
    assert copy.deepcopy(config) == config and pickle.loads(pickle.dumps(config)) == config


def test_keyword_options_override_the_config_in_one_place():
    base = AuditConfig(attacks=["loss"], seed=1)
    assert AuditConfig.from_options(base, seed=2) == AuditConfig(attacks=["loss"], seed=2)
    assert AuditConfig.from_options(base.to_dict(), n_folds=4).n_folds == 4
    assert AuditConfig.from_options(None) == AuditConfig()
    canaries = token_canaries()
    short = Auditor(canaries, attacks=["loss"], seed=2)
    assert short.config == Auditor(canaries, config=base, seed=2).config
    with pytest.raises(TypeError, match="unknown option 'n_fold' \\(did you mean 'n_folds'\\?\\)"):
        Auditor(canaries, n_fold=3)
    with pytest.raises(TypeError, match="did you mean 'every_n_steps'"):
        AuditLoop(canaries, output_dir="unused", every_n_step=3)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"attacks": "loss"}, TypeError, r"list of names, e.g. \['loss'\]"),
        ({"attacks": []}, ValueError, "attacks is empty; name at least one"),
        ({"attacks": ["lossy"]}, KeyError, r"unknown attack 'lossy' \(did you mean 'loss'\?\); available: .*min_k"),
        ({"attacks": ["loss", "loss"]}, ValueError, r"\['loss'\] are listed more than once"),
        ({"analyses": ["privacy2"]}, ValueError, "unknown analysis 'privacy2' .*available: image, privacy, profile"),
        ({"attacks": ["loss"], "attack_params": {"min_k": {"k": 0.1}}}, ValueError, "not in the list"),
        ({"attack_params": {"min_k": 0.1}}, TypeError, "must be a dict of keyword arguments"),
        ({"attack_params": {"min_k_plus_plus": {"k": np.array([0.1])}}}, TypeError,
         r"attack_params\['min_k_plus_plus'\]\['k'\] must be a JSON"),
        ({"analysis_options": {"delta": float("nan")}}, ValueError, "must be finite"),
        ({"fprs": [0.0]}, ValueError, "FPR levels must be in"),
        ({"fprs": 0.01}, TypeError, "list of rates"),
        ({"confidence": 1.0}, ValueError, r"confidence must be a number in \[0.5, 1\)"),
        ({"n_folds": 1}, ValueError, "n_folds must be an integer >= 2"),
        ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
        ({"seed": 1.5}, ValueError, "seed must be an integer"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"prefix_tokens": True}, ValueError, "prefix_tokens must be an integer"),
        ({"reference": "base"}, ValueError, "reference must be one of"),
    ],
)
def test_bad_options_get_clear_errors(options, error, message):
    with pytest.raises(error, match=message):
        AuditConfig(**options)


def test_numpy_numbers_are_accepted_as_json_numbers():
    config = AuditConfig(attacks=["min_k"], attack_params={"min_k": {"k": np.float32(0.25)}}, seed=np.int64(3),
                         fprs=np.array([0.01, 0.1]))
    assert config.params_for("min_k") == {"k": 0.25} and type(config.params_for("min_k")["k"]) is float
    assert json.dumps(config.to_dict())


def test_prefix_sensitivity_takes_the_config_and_sets_reference_and_prefix_itself():
    with pytest.raises(TypeError, match="sets reference per row"):
        prefix_sensitivity(None, token_canaries(), reference="first_audit")

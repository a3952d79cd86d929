"""AuditCadence: the fixed cadence, and the overhead budget on a simulated clock (exact
arithmetic), plus the budget through the real Trainer and the loop API."""

import json

import pytest

from mia_guard.callbacks.cadence import AuditCadence


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def simulate(budget, *, steps, step_seconds, audit_seconds, every_n_steps=None, first_audit=True):
    """A run on a simulated clock: returns the audited steps and the cadence."""
    clock = Clock()
    cadence = AuditCadence(every_n_steps, budget, clock=clock)
    audited = []

    def audit(step):
        clock.now += audit_seconds(step) if callable(audit_seconds) else audit_seconds
        cadence.record(step, audit_seconds(step) if callable(audit_seconds) else audit_seconds)
        audited.append(step)

    if first_audit:
        audit(0)
    cadence.start_training(0)
    for step in range(1, steps + 1):
        clock.now += step_seconds
        if step < steps and cadence.due(step):
            audit(step)
    audit(steps)  # the final audit always runs
    return audited, cadence


def test_fixed_cadence_is_every_n_steps():
    cadence = AuditCadence(5, None)
    assert [s for s in range(1, 21) if cadence.due(s)] == [5, 10, 15, 20]
    assert not any(AuditCadence(None, None).due(s) for s in range(1, 50))


def test_budget_keeps_audits_within_it_at_every_audit_and_at_the_end():
    audited, cadence = simulate(0.05, steps=2000, step_seconds=0.5, audit_seconds=2.0)
    # spacing settles at audit / (budget * step) = 2 / (0.05 * 0.5) = 80 steps
    gaps = [b - a for a, b in zip(audited[1:-1], audited[2:-1])]
    assert set(gaps) == {80}
    assert cadence.spent / cadence.training_seconds() <= 0.05
    assert cadence.spent / cadence.training_seconds() > 0.045  # and it uses the budget it has
    summary = cadence.summary()
    assert summary["audit_cadence"] == "overhead budget" and summary["overhead_budget"] == 0.05
    assert summary["audit_overhead"] == pytest.approx(cadence.spent / cadence.training_seconds(), abs=1e-4)
    assert "over_budget" not in summary


def test_budget_adapts_when_audits_get_slower():
    audited, cadence = simulate(0.1, steps=3000, step_seconds=1.0,
                                audit_seconds=lambda step: 1.0 if step < 1500 else 4.0)
    # first the step-0 audit and the reserve for the final one are earned: (1 + 1 + 1) / 0.1 = 30 steps
    assert audited[:2] == [0, 30]
    early = [b - a for a, b in zip(audited[1:], audited[2:]) if b < 1400]
    late = [b - a for a, b in zip(audited, audited[1:]) if a > 1700 and b < 3000]
    assert set(early) == {10} and min(late) >= 38  # 1 s / (0.1 * 1 s) = 10 steps, then 4 s -> 40
    assert cadence.spent / cadence.training_seconds() <= 0.1


def test_every_n_steps_is_the_shortest_spacing_under_a_budget():
    audited, _ = simulate(0.5, steps=200, step_seconds=1.0, audit_seconds=0.1, every_n_steps=25)
    assert audited == [0, 25, 50, 75, 100, 125, 150, 175, 200]


def test_a_run_too_short_for_its_budget_keeps_only_the_first_and_final_audit_and_says_so():
    audited, cadence = simulate(0.03, steps=50, step_seconds=0.1, audit_seconds=1.0)
    assert audited == [0, 50]
    assert "over the budget of 3.0%" in cadence.summary()["over_budget"]


def test_cost_figures_of_an_audit():
    clock = Clock()
    cadence = AuditCadence(None, 0.1, clock=clock)
    assert "overhead" not in cadence.figures(1.0)  # before training: no overhead to speak of
    cadence.record(0, 1.0)
    cadence.start_training(0)
    clock.now = 20.0
    figures = cadence.figures(1.0)
    assert figures == {"seconds": 1.0, "training_seconds": 20.0, "budget": 0.1, "overhead": 0.1}


@pytest.mark.parametrize("budget", [0, 1, 1.5, -0.1, True, "3%"])
def test_a_budget_must_be_a_fraction(budget):
    with pytest.raises(ValueError, match=r"overhead_budget must be a fraction in \(0, 1\)"):
        AuditCadence(None, budget)


def test_budget_through_the_trainer_logs_cost_figures_and_reports_them(tmp_path):
    from trainer_runs import canaries, make_trainer

    from mia_guard.callbacks import MIAAuditCallback
    from mia_guard.report.files import load_report

    callback = MIAAuditCallback(canaries(), every_n_steps=None, overhead_budget=0.5, output_dir=tmp_path / "mia",
                                progress=False, tensorboard=False)
    make_trainer(tmp_path, [callback], max_steps=12).train()
    steps = callback.history.steps
    assert steps[0] == 0 and steps[-1] == 12
    lines = [json.loads(line) for line in (tmp_path / "mia" / "audits.jsonl").read_text().splitlines()]
    assert all(line["scalars"]["audit/seconds"] > 0 for line in lines)
    assert "audit/overhead" not in lines[0]["scalars"]  # the step-0 audit comes before any training
    assert lines[-1]["scalars"]["audit/overhead"] > 0
    run_info = load_report(tmp_path / "mia" / "report.json")["run_info"]
    assert run_info["overhead_budget"] == 0.5 and run_info["audit_cadence"] == "overhead budget"
    assert run_info["audit_overhead"] == pytest.approx(run_info["audit_seconds"] / run_info["training_seconds"],
                                                       rel=1e-2)
    assert callback.state()["args"]["overhead_budget"] == 0.5


def test_budget_through_the_loop_api(tmp_path):
    from plain_loop_runs import train
    from trainer_runs import canaries

    from mia_guard.callbacks import AuditLoop
    from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2

    loop = AuditLoop(canaries(), byte_tokenizer(), every_n_steps=None, overhead_budget=0.9,
                     output_dir=tmp_path / "mia")
    model = tiny_gpt2(n_layer=1, n_embd=32)
    last = train(model, loop.auditor.canaries, 10, loop)
    loop.finish(model, last)
    assert loop.history.steps[0] == 0 and loop.history.steps[-1] == 10
    costs = [r.extras["cost"] for r in loop.history]
    assert all(c["budget"] == 0.9 and c["seconds"] > 0 for c in costs)
    summary = loop.session.cadence.summary()
    assert summary["audit_seconds"] == pytest.approx(loop.session.seconds["audits"], abs=1e-3)

"""The model's parameter table, presets, kernel eras and their error messages."""

from __future__ import annotations

import math

import pytest

from pipeline.model import params as P
from pipeline.model.eras import era_for, parse_era


def test_defaults_then_preset_then_assignments():
    values = P.resolve("pingpong", ["cpus=3", "xstate=amx", "entry_events=off"])
    assert values["cpus"] == 3  # assignment beats the preset's 2
    assert values["vms"] == 1  # the preset beats the default 2
    assert values["host_busy_us"] == 500.0  # untouched default
    assert values["xstate"] == "amx"
    assert values["entry_events"] == 0


def test_every_parameter_has_a_default_of_its_kind_and_a_valid_preset_value():
    for p in P.PARAMS:
        assert p.help and p.dist and p.group
        if p.kind == "choice":
            assert p.default in p.choices
        else:
            assert P.parse_value(p, str(p.default)) == p.default
    for name, preset in P.PRESETS.items():
        assert name in P.PRESET_HELP
        for key, value in preset.items():
            p = P.BY_NAME[key]
            text = "inf" if isinstance(value, float) and math.isinf(value) else str(value)
            assert P.parse_value(p, text) == value


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("cpus=0", "cpus=0: must be >= 1"),
        ("cpus=2.5", "cpus='2.5': expected an integer"),
        ("wakeup_preempt=1.5", "wakeup_preempt=1.5: must be <= 1"),
        ("exit_hz=nan", "exit_hz='nan': expected a number"),
        ("fpu_events=maybe", "fpu_events='maybe': expected 0 or 1"),
        ("xstate=avx3", "xstate='avx3': expected one of sse, avx2, avx512, amx"),
        ("nope=1", "unknown parameter 'nope' (see `fpureplay simulate --show-params`)"),
        ("cpus", "'cpus': expected KEY=VALUE"),
    ],
)
def test_bad_assignments_name_the_problem(assignment, message):
    with pytest.raises(P.ParamError) as err:
        P.resolve("mixed", [assignment])
    assert str(err.value) == message


def test_unknown_preset():
    with pytest.raises(P.ParamError, match="unknown preset 'busy'; expected one of idle, "):
        P.resolve("busy")


def test_help_text_and_rows_list_every_parameter_once():
    text = P.help_text()
    rows = P.rows(P.resolve("overcommit"))
    assert [r["param"] for r in rows] == [p.name for p in P.PARAMS]
    for p in P.PARAMS:
        assert text.count(f"  {p.name}=") == 1
    # the preset's value is shown next to the default it overrides; inf prints as inf
    busy = next(r for r in rows if r["param"] == "guest_busy_us")
    assert (busy["value"], busy["default"]) == ("inf", "400")


def test_canonical_is_json_safe():
    import json

    values = P.resolve("overcommit")
    assert json.loads(json.dumps(P.canonical(values)))["guest_busy_us"] == "inf"


@pytest.mark.parametrize(
    ("era", "pid", "flags", "entry", "exit", "new_fpu", "hashed", "state"),
    [
        ("4.14", 5, 4, 0, 0, False, False, "R+"),
        ("4.19", 5, 4, 0, 0, False, True, "R+"),
        ("5.4", 5, 4, 0, 0, True, True, "R+"),
        ("5.10", 7, 4, 1, 1, True, True, "R+"),
        ("5.15", 7, 5, 1, 2, True, True, "R"),
        ("6.18", 7, 5, 2, 2, True, True, "R"),
    ],
)
def test_era_features(era, pid, flags, entry, exit, new_fpu, hashed, state):
    e = parse_era(era)
    assert (e.pid_width, e.flag_columns, e.entry_form, e.exit_form) == (pid, flags, entry, exit)
    assert (e.fpu_new_format, e.hashed_pointers, e.vcpu_preempt_state) == (new_fpu, hashed, state)


def test_policy_and_era_must_agree():
    assert era_for("legacy", None).name == "4.14"
    assert era_for("vcpu_run", "4.14.300").name == "4.14"  # 4.14.y with the backport
    assert era_for("deferred", None).name == "6.18"
    with pytest.raises(ValueError) as err:
        era_for("legacy", "6.18")
    assert str(err.value) == (
        "--policy legacy is run by 4.11-4.14 kernels; a 6.18 kernel does not log it"
    )
    with pytest.raises(ValueError, match=r"--policy deferred is run by 5\.2\+ kernels"):
        era_for("deferred", "5.1")
    with pytest.raises(ValueError, match=r"before 4\.11 KVM's guest FPU was lazy"):
        parse_era("4.9")
    with pytest.raises(ValueError, match=r"expected a version such as 4\.14"):
        parse_era("six")


def test_docs_list_every_parameter_and_preset():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "model.md").read_text()
    for p in P.PARAMS:
        assert f"| `{p.name}` | {P.show_value(p.default)} |" in doc, p.name
    for name in P.PRESETS:
        assert f"| `{name}` | {P.PRESET_HELP[name]} |" in doc, name

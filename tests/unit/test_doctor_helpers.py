"""What doctor derives without a server: the restore_command it runs, the name the standby
reports to the primary."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zsnap.checks import Check, Status
from zsnap.doctor import Report, application_name
from zsnap.wal.archives import expand_restore_command


def test_restore_command_placeholders() -> None:
    assert expand_restore_command(
        "cp /a/%f '%p' && echo %r 100%% done", "000000010000000000000002", "/tmp/x/RECOVERYXLOG",
        "000000010000000000000001",
    ) == ("cp /a/000000010000000000000002 '/tmp/x/RECOVERYXLOG' && echo "
          "000000010000000000000001 100% done")


def test_expansion_is_one_pass() -> None:
    # A value that itself contains a placeholder is never expanded again.
    assert expand_restore_command("cp %f %p", "%p", "P", "R") == "cp %p P"
    assert expand_restore_command("%%f", "F", "P", "R") == "%f"


@given(st.text(alphabet=st.characters(blacklist_characters="%"), max_size=40))
def test_text_without_placeholders_is_unchanged(command: str) -> None:
    assert expand_restore_command(command, "F", "P", "R") == command


def test_unknown_placeholders_stay() -> None:
    assert expand_restore_command("x %d %f", "F", "P", "R") == "x %d F"


def test_application_name() -> None:
    assert application_name("host=h application_name=s1 user=u", "") == "s1"
    assert application_name("host=h user=u", "replica2") == "replica2"
    assert application_name("host=h user=u", "") == "walreceiver"
    assert application_name("not a conninfo '", "c") == "c"


def test_report_fails_only_on_critical() -> None:
    report = Report(checks=[Check("a", Status.OK, ""), Check("b", Status.WARNING, "")])
    assert not report.failed and report.to_dict()["ok"] is True
    report.checks.append(Check("c", Status.UNKNOWN, ""))
    assert not report.failed
    report.checks.append(Check("d", Status.CRITICAL, "x", "hint"))
    assert report.failed
    assert report.to_dict()["checks"][-1] == {"name": "d", "status": "CRITICAL", "summary": "x",
                                              "hint": "hint"}


def test_hints_print_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """"[verify] amcheck = false" in a hint is text: as markup, rich would drop "[verify]"."""
    from rich.console import Console

    from zsnap.commands import doctor

    out = Console(width=400, force_terminal=False, record=True)
    monkeypatch.setattr(doctor, "console", out)
    doctor._human(Report(checks=[Check("verify privileges", Status.WARNING, "[a] b",
                                       "or set [verify] amcheck = false")]))
    text = out.export_text()
    assert "or set [verify] amcheck = false" in text and "[a] b" in text

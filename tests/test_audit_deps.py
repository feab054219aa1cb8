"""The `make audit` wrapper's verdicts: only a vulnerability with a released fix fails the run."""

from __future__ import annotations

from scripts.audit_deps import Audit, exit_code, record

FIXED = {"id": "PYSEC-2099-1", "fix_versions": ["2.0.1"]}
UNFIXED = {"id": "GHSA-xxxx", "fix_versions": []}


def test_a_vulnerability_with_a_fix_fails_and_names_the_upgrade() -> None:
    audit = Audit()
    record(audit, "somepkg", "2.0.0", [FIXED, UNFIXED], "fix_versions")
    assert audit.fixable == ["somepkg 2.0.0: PYSEC-2099-1 (fixed in 2.0.1)"]
    assert audit.unfixed == ["somepkg 2.0.0: GHSA-xxxx"]
    assert exit_code(audit, strict=False) == 1


def test_vulnerabilities_without_a_fix_and_withdrawn_ones_pass() -> None:
    audit = Audit()
    record(audit, "a", "1.0", [UNFIXED], "fix_versions")
    record(audit, "b", "1.0", [{"id": "OSV-1", "fixed_in": ["1.1"], "withdrawn": "2025-01-01"}], "fixed_in")
    assert audit.audited == 2 and not audit.fixable
    assert exit_code(audit, strict=True) == 0


def test_project_page_vulnerabilities_use_fixed_in() -> None:
    audit = Audit()
    record(audit, "c", "3.0", [{"id": "PYSEC-1", "fixed_in": ["3.0.2"], "withdrawn": None}], "fixed_in")
    assert audit.fixable == ["c 3.0: PYSEC-1 (fixed in 3.0.2)"]


def test_an_incomplete_audit_fails_only_when_strict() -> None:
    audit = Audit(unaudited={"(all)": "pip-audit did not finish within 60 s (slow network?)"})
    assert exit_code(audit, strict=False) == 0
    assert exit_code(audit, strict=True) == 2

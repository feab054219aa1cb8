"""`make audit`: fail on installed packages with a known vulnerability that a newer release fixes.

pip-audit has no switch for "only vulnerabilities with a fix", so this runs `pip-audit -f json` and
decides here: a vulnerability with fix versions fails the run (bump the pin); one without is listed
and passes (nothing to upgrade to). The local editable tuneloom is skipped.

pip-audit asks PyPI for each exact release (/pypi/NAME/VERSION/json). Where that answers 404 (some
mirrors serve only the project page), a package is looked up again on its project page, whose
`vulnerabilities` describe the latest release: that still audits every package pinned to it.
Whatever stays unaudited is counted and named, never passed off as clean. A slow or absent
network makes the audit incomplete, not failed, unless `--strict` (for a CI job with a network).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PYPI = "https://pypi.org/pypi/{name}/json"
EDITABLE = "distribution marked as editable"


@dataclass
class Audit:
    fixable: list[str] = field(default_factory=list)  # "name version: ID (fixed in …)"
    unfixed: list[str] = field(default_factory=list)
    audited: int = 0
    unaudited: dict[str, str] = field(default_factory=dict)  # name → why


def run_pip_audit(timeout: float) -> tuple[list[dict[str, Any]], str]:
    """pip-audit's dependency list, or [] and why there is none."""
    pip_audit = Path(sys.executable).with_name("pip-audit")
    command = [str(pip_audit), "--skip-editable", "--progress-spinner", "off", "-f", "json", "--timeout", "15"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"pip-audit did not finish within {timeout:.0f} s (slow network?)"
    try:
        return list(json.loads(done.stdout)["dependencies"]), ""
    except (ValueError, KeyError, TypeError):
        return [], f"pip-audit failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"


def record(audit: Audit, name: str, version: str, vulns: list[dict[str, Any]], fixes_key: str) -> None:
    audit.audited += 1
    for vuln in vulns:
        if vuln.get("withdrawn"):
            continue
        fixes = vuln.get(fixes_key) or []
        line = f"{name} {version}: {vuln['id']}" + (f" (fixed in {', '.join(fixes)})" if fixes else "")
        (audit.fixable if fixes else audit.unfixed).append(line)


def latest_release(name: str, version: str, timeout: float) -> tuple[list[dict[str, Any]] | None, str]:
    """The project page's vulnerabilities when `version` is its latest release; else None and why."""
    try:
        with urllib.request.urlopen(PYPI.format(name=name), timeout=timeout) as answer:
            page = json.load(answer)
    except (OSError, ValueError) as error:
        return None, f"PyPI did not answer: {error}"
    latest = page.get("info", {}).get("version")
    if latest != version:
        return None, f"PyPI serves no per-release data here and {version} is not the latest ({latest})"
    return list(page.get("vulnerabilities") or []), ""


def audit(timeout: float) -> Audit:
    result = Audit()
    dependencies, problem = run_pip_audit(timeout)
    if problem:
        result.unaudited["(all)"] = problem
    retry: list[tuple[str, str]] = []
    for dep in dependencies:
        reason = dep.get("skip_reason")
        if reason == EDITABLE:
            continue
        if reason:
            version = reason.rsplit("(", 1)[-1].rstrip(")") if reason.endswith(")") else ""
            retry.append((dep["name"], version))
            continue
        record(result, dep["name"], dep["version"], dep.get("vulns") or [], "fix_versions")
    with ThreadPoolExecutor(max_workers=8) as pool:
        pages = pool.map(lambda item: latest_release(item[0], item[1], 10), retry)
        for (name, version), (vulns, why) in zip(retry, pages, strict=True):
            if vulns is None:
                result.unaudited[name] = why
            else:
                record(result, name, version, vulns, "fixed_in")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strict", action="store_true", help="also fail when some packages could not be audited")
    parser.add_argument("--timeout", type=float, default=60, help="seconds pip-audit may take (default 60)")
    args = parser.parse_args(argv)
    result = audit(args.timeout)
    print(f"audit: {result.audited} packages checked, {len(result.unaudited)} could not be")
    for name, why in sorted(result.unaudited.items()):
        print(f"  not audited: {name}: {why}")
    for line in result.unfixed:
        print(f"  known vulnerability, no fix released yet: {line}")
    for line in result.fixable:
        print(f"  VULNERABLE, upgrade: {line}")
    return exit_code(result, strict=args.strict)


def exit_code(result: Audit, *, strict: bool) -> int:
    """1: something to upgrade; 2 (strict only): the audit is incomplete; 0 otherwise."""
    if result.fixable:
        return 1
    return 2 if strict and result.unaudited else 0


if __name__ == "__main__":
    sys.exit(main())

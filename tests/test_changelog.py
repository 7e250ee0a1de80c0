"""CHANGELOG.md follows its own "Versions" rule: an Unreleased section on top, a section for the version in
pyproject.toml, and no change to what spec or result files may hold while pyproject names a released version
whose schema fingerprint differs from the code's (`rft schema fingerprint`)."""
from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the TOML reader pip vendors
    from pip._vendor import tomli as tomllib

from rft_ray.specs import schema_fingerprint

ROOT = Path(__file__).resolve().parents[1]
RELEASE = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", re.M)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_changelog_has_unreleased_on_top_and_the_packages_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert headings and headings[0] == "Unreleased", headings
    released = [version for version, _ in RELEASE.findall(text)]
    assert released == sorted(released, key=_version, reverse=True), "releases newest first"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version in released or all(_version(version) > _version(r) for r in released), (
        f"pyproject.toml's version {version} is neither released in CHANGELOG.md nor newer than every release")


def fingerprint_problem(changelog: str, version: str, now: str) -> str | None:
    """What is wrong when the code's fingerprint `now` is not the one recorded for `version`, else None."""
    section = re.search(rf"^## \[{re.escape(version)}\] - .*?(?=^## \[|\Z)", changelog, re.M | re.S)
    recorded = re.search(r"^Schema fingerprint: ([0-9a-f]{16})$", section.group(0), re.M) if section else None
    if recorded is None or recorded.group(1) == now:  # not released yet, released before the rule, or unchanged
        return None
    return (f"what spec or result files may hold changed since {version} was released (fingerprint "
            f"{recorded.group(1)}, now {now}): bump the version in pyproject.toml and release it in CHANGELOG.md "
            "as its Versions section says")


def test_specs_and_records_change_only_with_a_new_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert fingerprint_problem((ROOT / "CHANGELOG.md").read_text(), version, schema_fingerprint()) is None


def test_the_rule_catches_a_change_after_a_release():
    log = ("## [Unreleased]\n\n## [0.2.0] - 2027-01-01\n\nSchema fingerprint: 0123456789abcdef\n\n"
           "## [0.1.0] - 2026-11-22\n")
    assert fingerprint_problem(log, "0.2.0", "0123456789abcdef") is None
    assert "bump the version" in fingerprint_problem(log, "0.2.0", "fedcba9876543210")
    assert fingerprint_problem(log, "0.3.0", "fedcba9876543210") is None  # bumped, to be released
    assert fingerprint_problem(log, "0.1.0", "fedcba9876543210") is None  # before the rule

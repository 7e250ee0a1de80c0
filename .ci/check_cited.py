"""Every test RELIABILITY.md cites as evidence exists, and passed in CI's JUnit reports.

    python .ci/check_cited.py RELIABILITY.md --report default=default.xml --report slow=slow.xml
    python .ci/check_cited.py RELIABILITY.md            # without reports: the citations' format and existence only

A citation is a backticked pytest node id followed by the suite that runs it, e.g.
`tests/test_sweep.py::test_driver_killed_mid_sweep_resumes_with_each_schedule_once` (slow); the suite is
`default` (pytest's addopts, `-m 'not slow'`) or `slow` (`-m slow`). A cited test passes when the report of
its suite holds it, at least one of its cases (parametrizations) ran and every case passed. Skipped, xfailed,
failed, errored, deselected or never collected: the check fails and names the test and why. Standard
library only, so it runs with any Python 3.10+. Exit status: 0 all good, 1 a cited test did not pass or does
not exist, 2 a report is missing or unreadable, or bad usage.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("default", "slow")
# A backticked span naming a test (`tests/...py::...`), then optionally its suite in parentheses.
CITATION = re.compile(r"`(tests/[^`\s]*\.py::[^`\s]+)`(?:\s*\((\w+)\))?")


@dataclass(frozen=True)
class Citation:
    node_id: str
    suite: str | None
    line: int


def citations(doc: Path) -> list[Citation]:
    found = []
    for number, text in enumerate(doc.read_text().splitlines(), 1):
        found += [Citation(m.group(1), m.group(2), number) for m in CITATION.finditer(text)]
    return found


def _defined_tests(path: Path) -> set[str]:
    """`name` and `Class::name` of every test function the file defines (top level and in classes)."""
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {f"{node.name}::{f.name}" for f in node.body
                      if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def format_and_existence_problems(cited: list[Citation], doc: Path) -> tuple[list[str], set[str]]:
    """Problems with the citations' form and the tests' existence, and the node ids that do not exist."""
    problems, absent = [], set()
    for c in cited:
        where = f"{doc.name}:{c.line}: `{c.node_id}`"
        if c.suite not in SUITES:
            problems.append(f"{where}: give the suite after the node id, ' (default)' or ' (slow)'"
                            + (f", not ({c.suite})" if c.suite else ""))
        file, _, test = c.node_id.partition("::")
        path = ROOT / file
        if not path.is_file():
            problems.append(f"{where}: does not exist ({file} is not a file)")
            absent.add(c.node_id)
        elif test.split("[")[0] not in _defined_tests(path):
            problems.append(f"{where}: does not exist ({file} defines no {test.split('[')[0]})")
            absent.add(c.node_id)
    return problems, absent


def read_report(path: Path) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(classname, test name) -> [(outcome, message)] for every case in a JUnit XML report."""
    cases: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome, message = tag, (element.get("message") or element.text or "").strip()
                break
        cases.setdefault((case.get("classname", ""), case.get("name", "")), []).append((outcome, message))
    return cases


def _junit_key(node_id: str) -> tuple[str, str]:
    """The (classname, name) pytest's JUnit report gives a node id: tests/a.py::C::t -> (tests.a.C, t)."""
    file, *parts = node_id.split("::")
    return ".".join([file[:-len(".py")].replace("/", "."), *parts[:-1]]), parts[-1]


def outcome_problems(cited: list[Citation], reports: dict[str, dict]) -> list[str]:
    problems, seen = [], set()
    for c in cited:
        if c.suite not in reports or (c.node_id, c.suite) in seen:
            continue  # a bad suite label is a format problem, reported already; a test cited twice, once
        seen.add((c.node_id, c.suite))
        classname, name = _junit_key(c.node_id)
        exact = "[" in name
        runs = [(n, outcome, message) for (cls, n), results in reports[c.suite].items() if cls == classname
                and (n == name or (not exact and n.startswith(name + "["))) for outcome, message in results]
        other = [s for s, cases in reports.items() if s != c.suite and any(
            cls == classname and (n == name or (not exact and n.startswith(name + "["))) for cls, n in cases)]
        where = f"`{c.node_id}` ({c.suite}, line {c.line})"
        if not runs:
            hint = (f"; it ran in the {' and '.join(other)} suite instead: fix its citation or its marker" if other
                    else "; deselected or never collected (does its `slow` marker match the suite cited?)")
            problems.append(f"{where}: not in the {c.suite} suite's report{hint}")
            continue
        bad = [f"{n}: {outcome}" + (f" ({message.splitlines()[0][:200]})" if message else "")
               for n, outcome, message in runs if outcome != "passed"]
        if bad:
            problems.append(f"{where}: did not pass: " + "; ".join(bad))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("doc", type=Path, help="the document citing tests (RELIABILITY.md)")
    parser.add_argument("--report", action="append", default=[], metavar="SUITE=PATH",
                        help="a suite's JUnit XML report (pytest --junitxml); repeat for each suite")
    args = parser.parse_args(argv)
    cited = citations(args.doc)
    if not cited:
        print(f"check_cited: {args.doc} cites no test (`tests/...py::test_...` (default|slow)); "
              "has its citation format changed?", file=sys.stderr)
        return 1
    reports = {}
    for item in args.report:
        suite, _, path = item.partition("=")
        if suite not in SUITES or not path:
            parser.error(f"--report {item!r}: give SUITE=PATH with SUITE one of {', '.join(SUITES)}")
        try:
            reports[suite] = read_report(Path(path))
        except (OSError, ET.ParseError) as err:
            print(f"check_cited: the {suite} suite's report {path} cannot be read ({err}): did the suite run?",
                  file=sys.stderr)
            return 2
    problems, absent = format_and_existence_problems(cited, args.doc)
    if reports:
        missing = sorted({c.suite for c in cited if c.suite in SUITES} - set(reports))
        problems += [f"no report for the {s} suite, which {args.doc.name} cites tests of" for s in missing]
        problems += outcome_problems([c for c in cited if c.node_id not in absent], reports)
    unique = len({c.node_id for c in cited})
    if problems:
        print(f"check_cited: {len(problems)} problem(s) with the {unique} tests {args.doc.name} cites:",
              file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    did = "exist and passed in their suites' reports" if reports else "exist (no reports given: not run)"
    print(f"check_cited: all {unique} tests {args.doc.name} cites {did}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

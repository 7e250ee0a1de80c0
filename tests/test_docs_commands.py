"""Every shell block of README.md and docs/ is marked and checked (convention: tests/docs_blocks.py and
docs/contributing.md): fast blocks run in the default suite, slow ones in the slow suite, parse-only ones
(clusters, clouds, hours-long runs) are checked against the parsers they would meet, so a renamed flag, a
removed command or a renamed spec field fails CI."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from docs_blocks import MODES, ROOT, SHELL, all_blocks, split_commands
from docs_checker import CommandChecker

BLOCKS = all_blocks()
PARSE = [b for b in BLOCKS if b.mode == "parse"]
RUN = [pytest.param(b, id=b.name, marks=[pytest.mark.slow] if b.mode == "slow" else [])
       for b in BLOCKS if b.mode in ("fast", "slow") and b.language in SHELL]
LIMIT_S = {"fast": 300, "slow": 3600}  # far beyond their time: a hung command fails instead of hanging CI


def test_every_block_says_what_it_is_and_every_shell_block_how_it_is_checked():
    problems = []
    for block in BLOCKS:
        if not block.language:
            problems.append(f"{block.name}: give the block a language (sh, console, text, yaml, ...)")
        elif block.language in SHELL and block.mode not in MODES:
            problems.append(f"{block.name}: a {block.language} block needs <!-- run: fast|slow|parse --> above it")
        elif block.language not in SHELL and block.mode:
            problems.append(f"{block.name}: a run marker above a {block.language} block (shell blocks only)")
        elif block.mode in ("fast", "slow") and re.search(r"\[--|\|\w", block.script()):
            problems.append(f"{block.name}: a synopsis ([--flag], a|b) cannot run; mark it parse")
    assert problems == []
    assert PARSE and RUN  # the convention is in use: some blocks run, some are parsed


@pytest.fixture(scope="module")
def checker():
    return CommandChecker()


@pytest.mark.parametrize("block", PARSE + [b.values[0] for b in RUN], ids=[b.name for b in PARSE] + [
    b.id for b in RUN])
def test_documented_commands_parse(block, checker, monkeypatch):
    monkeypatch.chdir(ROOT)  # the docs write paths from the repository root
    problems = [p for command in block.commands() for words in split_commands(command) for p in checker.check(words)]
    assert problems == []


@pytest.mark.parametrize("block", RUN)
def test_runnable_blocks_run(block, tmp_path):
    shared = ROOT.parent / "shared"
    for data in re.findall(r"\.\./shared/(\S+)", block.script()):
        if not (shared / data.rstrip("/")).exists():
            pytest.skip(f"{block.name} needs ../shared/{data}, which this machine lacks")
    work = tmp_path / "repo"  # the repository's files, read-only in spirit; what the block writes stays here
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in ("results", "site", ".venv", ".git", ".pytest_cache"):
            (work / entry.name).symlink_to(entry)
    if shared.exists():
        (tmp_path / "shared").symlink_to(shared)
    bin_dir = str(Path(sys.executable).parent)  # rft of this environment, this checkout's code first
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT),
           "RFT_DATA_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.script()], cwd=work, env=env, text=True,
                          capture_output=True, timeout=LIMIT_S[block.mode])
    assert done.returncode == 0, f"{block.name} failed ({done.returncode}):\n{block.script()}\n" + (
        done.stdout + done.stderr)[-3000:]

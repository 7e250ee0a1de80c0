"""The shell blocks of README.md and docs/ and what is checked of each (tests/test_docs_commands.py runs them).

Convention (docs/contributing.md, "Commands in the docs"): every fenced block has a language; a shell block
(`sh`, `bash`, `console`) sits right under a marker comment saying how it is checked:
  <!-- run: fast -->   executed in the default suite (seconds: tiny settings where the page says so)
  <!-- run: slow -->   executed in the slow suite
  <!-- run: parse -->  each command checked, not run: rft commands against their own parsers (and their spec files
                       and --set keys against the loader), ray against the installed Ray's command line, other tools
                       against the table on the contributing page; repository paths they name must exist.
In `console` blocks the commands are the lines that start with `$ `; the rest is output. Parse-only blocks may be
synopses: `[optional parts]` and `a|b` alternatives are read as such.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL = ("sh", "bash", "console")
MODES = ("fast", "slow", "parse")
# A fence opening (indented inside list items too), its language, and the marker line above it.
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```|~~~)(?P<info>[^\n`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*run:\s*(?P<mode>[a-z]+)\s*-->\s*$")
_PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")


def documents() -> list[Path]:
    """The hand-written pages: README, docs/ (not the committed analysis reports of the case study, nor the
    hook), and the kuberay README the Kubernetes guide points to."""
    pages = [ROOT / "README.md", ROOT / "kuberay" / "README.md"]
    pages += sorted(p for p in (ROOT / "docs").rglob("*.md")
                    if not {"hooks", "case-study-cifar-transfer"} & set(p.relative_to(ROOT / "docs").parts[:-1]))
    return pages


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    mode: str | None  # fast, slow, parse, or None when unmarked (or a marker names no mode)
    text: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[str]:
        """The block's shell commands, one string each: continuation lines joined, comment-only and output
        lines (console) dropped."""
        lines = self.text.splitlines()
        if self.language == "console":
            lines = [line[2:] for line in lines if line.startswith("$ ")]
        joined, current = [], ""
        for line in lines:
            if line.rstrip().endswith("\\"):
                current += line.rstrip()[:-1] + " "
                continue
            joined.append(current + line)
            current = ""
        return [c.strip() for c in joined if c.strip() and not c.strip().startswith("#")]

    def script(self) -> str:
        return "\n".join(self.commands()) + "\n"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), len(lines))
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:end]]
        above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.match(above)
        found.append(Block(path, i + 1, opening.group("info").strip().split(" ")[0], marker and marker.group("mode"),
                           "\n".join(body)))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in blocks(path)]


# ---------------------------------------------------------------------------------------------------
# Parse-only commands: split into words the way a reader of a synopsis means them.


def split_commands(command: str) -> list[list[str]]:
    """Words of each command in a line: `&&`, `||`, `;` and `|` separate commands, `$(...)` becomes a command of
    its own, `<placeholders>` a word, `NAME=value` prefixes go, unquoted `[` `]` of synopses go."""
    inner = re.findall(r"\$\(([^()]*)\)", command)
    command = re.sub(r"\$\([^()]*\)", "X", command)
    command = _PLACEHOLDER.sub("X", command)
    words = shlex.split(_drop_unquoted_brackets(command), comments=True)
    commands, current = [], []
    for word in words:
        if word in ("&&", "||", ";", "|"):
            commands.append(current)
            current = []
        else:
            current.append(word)
    commands.append(current)
    commands += [w for text in inner for w in split_commands(text)]
    cleaned = []
    for words in commands:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
            words = words[1:]
        if words:
            cleaned.append(words)
    return cleaned


def _drop_unquoted_brackets(text: str) -> str:
    out, quote = [], ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[]":
            continue
        out.append(char)
    return "".join(out)


def variants(words: list[str]) -> list[list[str]]:
    """A synopsis's alternatives (`--on frontier|all|final`) as separate commands: each alternative once."""
    options = [word.split("|") if "|" in word and not word.startswith("-") and "://" not in word else [word]
               for word in words]
    count = max(len(o) for o in options)
    return [[o[min(i, len(o) - 1)] for o in options] for i in range(count)]


def tool_table(page: Path = ROOT / "docs" / "contributing.md") -> dict[tuple[str, str], set[str]]:
    """The known tools' table of the contributing page: (tool, subcommand or '') -> the flags the docs may use."""
    text = page.read_text(encoding="utf-8")
    section = text.split("<!-- known tools -->", 1)[1].split("\n\n", 2)[1]
    table: dict[tuple[str, str], set[str]] = {}
    for row in section.splitlines()[2:]:
        cells = [c.strip().strip("`") for c in row.strip().strip("|").split("|")]
        flags = {f.strip().strip("`") for f in cells[2].split(",") if f.strip()}
        table[(cells[0], cells[1])] = flags
    return table


def repository_paths(words: list[str]) -> list[str]:
    """Words that name files of this repository (by their first part: a top-level file or folder of it)."""
    top = {p.name for p in ROOT.iterdir()} - {"results", "site", ".venv", ".git"}
    found = []
    for word in words:
        word = word.split("=", 1)[-1].split("::", 1)[0]
        first = word.removeprefix("./").split("/", 1)[0]
        if first in top:
            found.append(word.removeprefix("./"))
    return found

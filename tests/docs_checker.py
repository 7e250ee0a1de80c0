"""What a parse-only command of the docs is checked against (tests/docs_blocks.py says which blocks are).

- `rft ...` (also `./dev rft ...`, and `experiments/launch.py ARGS`, which hands ARGS to `rft sweep`): the
  command's own argparse parser; then the spec it names, with its flags and `--set` keys, through the loader.
- `ray ...`: the installed Ray's own command line (click), subcommand by subcommand, options and arguments;
  `ray job submit`'s entrypoint is checked as a command too.
- `./dev SUB`: the subcommands of the dev script; `./dev test tests/x.py::name`: the test exists.
- `python SCRIPT`: the script exists; any other tool: the known-tools table of docs/contributing.md.
Every word that names a file of this repository must name one that exists.
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from docs_blocks import ROOT, repository_paths, tool_table, variants

LAUNCH = "experiments/launch.py"  # `ray submit`'s entry script: its arguments are rft sweep's


class CommandChecker:
    def __init__(self) -> None:
        from rft_ray.cli import command_parsers

        self.parsers = command_parsers()
        self.table = tool_table()
        dev = (ROOT / "dev").read_text()
        self.dev_commands = set(re.findall(r"^\s+([a-z]+)\)", dev.split("case", 1)[1], re.M))

    def check(self, words: list[str]) -> list[str]:
        """Problems of one command (its words), each naming the command; [] when it is fine."""
        shown = " ".join(words)
        missing = [path for path in repository_paths(words[1:]) if not (ROOT / path).exists()]
        problems = [f"{shown}: {path} does not exist in the repository" for path in missing]
        tool = words[0].removeprefix("./")
        if tool == "rft":
            return problems + self._rft(words[1:], shown)
        if tool == "ray":
            return problems + self._ray(words[1:], shown)
        if tool == "dev":
            return problems + self._dev(words[1:], shown)
        if tool.rsplit("/", 1)[-1].startswith("python"):
            script = words[1] if len(words) > 1 else ""
            if script == LAUNCH:
                return problems + self._rft(["sweep", *words[2:]], shown)
            return problems
        if (ROOT / tool).is_file():
            return problems + ([] if (ROOT / tool).stat().st_mode & 0o111 else [f"{shown}: {tool} is not executable"])
        return problems + self._table(tool, words[1:], shown)

    # -- rft ------------------------------------------------------------------------------------------

    def _rft(self, args: list[str], shown: str) -> list[str]:
        if not args or args[0] not in self.parsers:
            return [f"{shown}: rft has no command {args[0] if args else '(none)'!r}; it has {', '.join(self.parsers)}"]
        problems = []
        for variant in variants(args[1:]):
            stderr = io.StringIO()
            try:
                with contextlib.redirect_stderr(stderr):
                    parsed = self.parsers[args[0]].parse_args(variant)
            except SystemExit as exit_:
                if exit_.code:
                    problems.append(f"{shown}: {stderr.getvalue().strip().splitlines()[-1]}")
                continue
            except Exception as err:  # rft analyze's parser raises its usage error instead of exiting
                problems.append(f"{shown}: {err}")
                continue
            problems += self._spec(args[0], parsed, shown)
        return problems

    def _spec(self, command: str, args, shown: str) -> list[str]:
        """The spec a command would run, built by the loader from its file, flags and --set keys (no data read)."""
        from rft_ray.config import SpecError, parse_sets
        from rft_ray.specs import load_experiment, load_run_spec

        try:
            if command == "run":
                from rft_ray.cli import _run_spec_from_args

                _run_spec_from_args(args)
            elif command in ("sweep", "estimate", "doctor") and getattr(args, "spec", None):
                path = ROOT / args.spec
                if path.is_file():
                    run = "$schema=../site/schema/run.json" in path.read_text()
                    (load_run_spec if run else load_experiment)(path, parse_sets(getattr(args, "set", None)))
        except SpecError as err:
            return [f"{shown}: {err}"]
        return []

    # -- ray ------------------------------------------------------------------------------------------

    def _ray(self, args: list[str], shown: str) -> list[str]:
        import click
        from ray.scripts.scripts import cli

        command, names = cli, ["ray"]
        while isinstance(command, click.Group):
            if not args or args[0] not in command.commands:
                return [f"{shown}: {' '.join(names)} has no subcommand {args[0] if args else '(none)'!r}"]
            names.append(args[0])
            command, args = command.commands[args[0]], args[1:]
        try:
            params = command.make_context(" ".join(names), list(args)).params
        except click.ClickException as err:
            return [f"{shown}: {err.format_message()}"]
        if names[1:] == ["job", "submit"] and params.get("entrypoint"):
            return self.check(list(params["entrypoint"]))
        if names[1:] == ["submit"] and params.get("script") == LAUNCH:
            return self._rft(["sweep", *params.get("script_args", ())], shown)
        return []

    # -- the dev script and other tools -----------------------------------------------------------------

    def _dev(self, args: list[str], shown: str) -> list[str]:
        if not args or args[0] not in self.dev_commands:
            return [f"{shown}: ./dev has no command {args[0] if args else '(none)'!r}; it has "
                    f"{', '.join(sorted(self.dev_commands))}"]
        if args[0] == "rft":
            return self._rft(args[1:], shown)
        problems = []
        for word in args[1:] if args[0] == "test" else []:
            if "::" in word:
                path, name = word.split("::", 1)
                if (ROOT / path).is_file() and f"def {name.split('[')[0]}(" not in (ROOT / path).read_text():
                    problems.append(f"{shown}: {path} has no test {name}")
        return problems

    def _table(self, tool: str, args: list[str], shown: str) -> list[str]:
        rows = {sub: flags for (name, sub), flags in self.table.items() if name == tool}
        if not rows:
            return [f"{shown}: {tool} is neither rft, ray, python, ./dev nor a repository script, and not in the "
                    "known-tools table of docs/contributing.md"]
        words = [a for a in args if not a.startswith("-")]
        sub = "" if "" in rows else (words[0] if words else "")
        if sub not in rows:
            return [f"{shown}: {tool} {sub!r} is not in the known-tools table of docs/contributing.md"]
        flags = [a.split("=", 1)[0] for a in args if a.startswith("-") and a != "-"]
        return [f"{shown}: {tool} {sub} has no flag {flag} in the known-tools table of docs/contributing.md"
                for flag in flags if flag not in rows[sub]]

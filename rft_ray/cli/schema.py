"""`rft schema run|experiment [--out FILE]`: the JSON Schema of spec files, for editors that validate and complete
YAML (`# yaml-language-server: $schema=...`); `rft schema fingerprint`: the hash that decides a version bump."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

KINDS = ("run", "experiment", "fingerprint")


def cmd_schema(args: argparse.Namespace) -> int:
    from rft_ray.config import SpecError
    from rft_ray.specs import EXPERIMENT_TITLE, RUN_TITLE, experiment_schema, run_schema, schema_fingerprint

    if args.kind == "fingerprint":
        if args.out:
            raise SpecError("writes to standard output only; --out is for run and experiment", "--out")
        print(schema_fingerprint())
        return 0
    if args.out:
        _check_destination(Path(args.out), (RUN_TITLE, EXPERIMENT_TITLE))
    schema = run_schema() if args.kind == "run" else experiment_schema()
    text = json.dumps(schema, indent=2) + "\n"
    if not args.out:
        print(text, end="")
        return 0
    from rft_ray.results.files import atomic_write

    atomic_write(args.out, text)
    print(f"rft schema: the {args.kind} spec schema is in {args.out}")
    return 0


def _check_destination(out: Path, titles: tuple[str, ...]) -> None:
    """Before the work: the folder exists, and an existing file there is a schema this command wrote (anything
    else, a spec file given by mistake for one, is never replaced)."""
    from rft_ray.config import SpecError

    if not out.parent.is_dir():
        raise SpecError(f"folder {str(out.parent)!r} does not exist; create it first", "--out")
    if out.is_dir():
        raise SpecError(f"{str(out)!r} is a folder; give a file name, e.g. {out / 'run.schema.json'}", "--out")
    if out.exists():
        try:
            ours = json.loads(out.read_text(encoding="utf-8")).get("title") in titles
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise SpecError(f"{str(out)!r} exists and is not a schema rft schema wrote; it is left as it is "
                            "(remove it, or choose another file)", "--out")


def add_schema_command(sub) -> None:
    p = sub.add_parser("schema", help="JSON Schema of run or experiment spec files (editor validation and completion)",
                       description="Print or write the JSON Schema (draft-07) of run specs (rft run --spec) or "
                       "experiment specs (rft sweep), generated from the spec classes: every field's type, default, "
                       "range and description, strategy and dataset names and their options. Editors with YAML "
                       "support read it from a first line `# yaml-language-server: $schema=<file>`. Rules between "
                       "fields (epochs or steps, not both) are checked by the loader only. `fingerprint` prints "
                       "a hash of both schemas and the result record's fields (CHANGELOG.md: when it changes, the "
                       "version is bumped).")
    p.add_argument("kind", choices=KINDS, help="run, experiment, or fingerprint")
    p.add_argument("--out", metavar="FILE", help="write the schema to FILE (replacing only a schema written before) "
                   "instead of printing it")
    p.set_defaults(handler=cmd_schema)

"""MkDocs hook (mkdocs.yml `hooks:`): what the site takes from outside docs/, with no copy kept in docs/.

- Pages kept elsewhere in the repository (RELIABILITY.md, benchmarks/RESULTS.md, CHANGELOG.md, README.md) are
  read from their files when the site is built (INCLUDED: site page -> repository file).
- Any other repository file that a page links to (a spec in experiments/, the kuberay README, the model card)
  is published as it is under repo/<its path>, and links are rewritten to where their targets are on the site,
  so a link that works on GitHub works on the site; a link to a file that does not exist is left alone for
  MkDocs's strict build to report.
- The reference pages and the JSON Schemas are generated from the code (`rft_ray.cli.reference`,
  `rft_ray.specs`): schema/run.json and schema/experiment.json are what the shipped specs' modelines name.
"""
from __future__ import annotations

import json
import posixpath
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
INCLUDED = {
    "readme.md": "README.md",
    "reliability.md": "RELIABILITY.md",
    "benchmarks.md": "benchmarks/RESULTS.md",
    "changelog.md": "CHANGELOG.md",
}
MIRROR = "repo"
# A Markdown link or image target: [text](target) / ![alt](target); the target has no spaces.
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
_FENCE = re.compile(r"^(```|~~~)", re.M)

_sources: dict[str, str] = {}  # site page -> repository path, for every page whose links are rewritten


def on_files(files: Files, config) -> Files:
    if sys.path[0] != str(ROOT):  # document the code of this checkout, whatever the environment has installed
        sys.path.insert(0, str(ROOT))  # (here: MkDocs restores sys.path after loading a hook module)
    from rft_ray.cli.reference import reference_pages
    from rft_ray.specs import experiment_schema, run_schema

    _sources.clear()
    for uri, text in reference_pages().items():
        files.append(File.generated(config, uri, content=text))
    for kind, schema in (("run", run_schema()), ("experiment", experiment_schema())):
        files.append(File.generated(config, f"schema/{kind}.json", content=json.dumps(schema, indent=2) + "\n"))
    for uri, path in INCLUDED.items():
        files.append(File.generated(config, uri, abs_src_path=str(ROOT / path)))
        _sources[uri] = path
    for page in DOCS.rglob("*.md"):
        if "hooks" not in page.relative_to(DOCS).parts:
            _sources[page.relative_to(DOCS).as_posix()] = page.relative_to(ROOT).as_posix()
    pending = list(_sources.values())
    while pending:  # repository files linked from pages, and from those files when they are pages too
        for target in _linked_files(pending.pop()):
            uri = site_uri(target)
            if uri.startswith(f"{MIRROR}/") and files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(ROOT / target)))
                if target.endswith(".md"):
                    _sources[uri] = target
                    pending.append(target)
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    source = _sources.get(page.file.src_uri)
    if source is None:  # a generated page: its links are written for the site already
        return markdown
    here = posixpath.dirname(page.file.src_uri)

    def relink(match: re.Match) -> str:
        target, anchor = _split(match.group(2))
        resolved = _resolve(source, target)
        if resolved is None:
            return match.group(0)
        return f"{match.group(1)}{posixpath.relpath(site_uri(resolved), here or '.')}{anchor}{match.group(3)}"

    return _outside_code(markdown, lambda text: _LINK.sub(relink, text))


def site_uri(path: str) -> str:
    """Where a repository file is on the site."""
    for uri, included in INCLUDED.items():
        if included == path:
            return uri
    if path.startswith("docs/"):
        return path[len("docs/"):]
    return f"{MIRROR}/{path}"


def _split(target: str) -> tuple[str, str]:
    path, hash_, anchor = target.partition("#")
    return path, hash_ + anchor


def _resolve(source: str, target: str) -> str | None:
    """The repository file a relative link of `source` names, if it is one."""
    if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
        return None  # in-page anchor, URL, or absolute path
    path = posixpath.normpath(posixpath.join(posixpath.dirname(source), target))
    return path if not path.startswith("..") and (ROOT / path).is_file() else None


def _linked_files(source: str) -> list[str]:
    prose: list[str] = []
    if source.endswith(".md"):
        _outside_code((ROOT / source).read_text(encoding="utf-8"), lambda part: prose.append(part) or part)
    found = (_resolve(source, _split(match.group(2))[0]) for part in prose for match in _LINK.finditer(part))
    return [path for path in found if path]


def _outside_code(markdown: str, change) -> str:
    """Apply `change` to the text outside fenced code blocks (links shown as code stay as written)."""
    parts = _FENCE.split(markdown)
    out, inside, fence = [], False, ""
    for part in parts:
        if part in ("```", "~~~"):
            if not inside or part == fence:
                inside, fence = not inside, part
            out.append(part)
        else:
            out.append(part if inside else change(part))
    return "".join(out)

"""The local files and folders a run reads before its first step, checked where they are read.

A sweep's driver (on the head) and its trials (on GPU nodes) are different machines on a cluster. The head
checks, before Ray starts, what it can see: data and weights at paths it shares with the nodes. A dataset that
downloads itself (`download: true`) or lives on each node (`node_local: true`, e.g. synced there by
cluster.yaml) is not the head's business: each trial checks its own inputs when it starts, on its node, and
fails with the same message naming the field, the path and the node.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from rft_ray.config import SpecError


@dataclass(frozen=True)
class Input:
    field: str  # the run spec's field, e.g. dataset.root
    path: str
    kind: str  # "folder" or "file"
    on_head: bool  # also checked by the sweep's driver before any trial starts

    def exists(self) -> bool:
        path = os.path.expanduser(self.path)
        return os.path.isdir(path) if self.kind == "folder" else os.path.isfile(path)


def absolute_paths(run: dict[str, Any]) -> dict[str, Any]:
    """Make the run's local paths absolute (relative to where the sweep starts): Ray Train runs each worker
    in its own trial folder, where a relative `dataset.root` would point nowhere."""
    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            return os.path.abspath(os.path.expanduser(value))
        return value

    dataset, model = run.get("dataset") or {}, run.get("model") or {}
    if dataset.get("root"):
        dataset["root"] = fix(dataset["root"])
    elif isinstance(dataset.get("options"), dict):  # parquet splits are relative to root, else to here
        for key in ("train", "test"):
            if dataset["options"].get(key):
                dataset["options"][key] = fix(dataset["options"][key])
    if isinstance(dataset.get("ood"), dict):  # own OOD sets are relative to here
        dataset["ood"] = {name: fix(source) for name, source in dataset["ood"].items()}
    if model.get("weights"):
        model["weights"] = fix(model["weights"])
    return run


def run_inputs(run: dict[str, Any]) -> list[Input]:
    """The local inputs of one run (a run spec as a dict, paths made absolute)."""
    dataset, model = run.get("dataset") or {}, run.get("model") or {}
    node_local = bool(dataset.get("node_local"))
    inputs = []
    root = dataset.get("root")
    if root and "://" not in root and not dataset.get("download"):
        inputs.append(Input("dataset.root", root, "folder", on_head=not node_local))
    options = dataset.get("options") if isinstance(dataset.get("options"), dict) else {}
    if dataset.get("name") == "parquet":
        for key in ("train", "test"):
            value = options.get(key)
            if isinstance(value, str) and value and "://" not in value and not (root and "://" in root):
                path = value if os.path.isabs(value) or not root else os.path.join(root, value)
                inputs.append(Input(f"dataset.options.{key}", path, "file", on_head=not node_local))
    for name, source in (dataset.get("ood") or {}).items():  # own OOD sets: a folder, or a .parquet file
        if isinstance(source, str) and source and "://" not in source:
            kind = "file" if source.rstrip("/").lower().endswith(".parquet") else "folder"
            inputs.append(Input(f"dataset.ood.{name}", source, kind, on_head=not node_local))
    if model.get("source") == "file" and model.get("weights") and "://" not in model["weights"]:
        inputs.append(Input("model.weights", model["weights"], "file", on_head=True))
    return inputs


def _missing(item: Input, where: str) -> SpecError:
    if item.on_head:
        hint = "a sweep reads local data from the same path on every node"
    else:
        hint = "dataset.node_local: the data must be at this path on every node that runs trials"
    return SpecError(f"{where}: the {item.kind} {item.path} does not exist ({hint})", item.field)


def check_head_inputs(experiment) -> None:
    """Fail before Ray starts when a group's input the head shares with the nodes is missing (every trial would
    fail on it, one Ray Train start-up each): the error names the field, the group and the path."""
    for group in experiment.groups:
        run = absolute_paths(json.loads(json.dumps(group.run)))
        for item in run_inputs(run):
            if item.on_head and not item.exists():
                raise _missing(item, f"group {group.name} (on this machine)")


def check_local_inputs(run: dict[str, Any]) -> None:
    """Every local input of a run started on this machine (`rft run`), before anything heavy is imported: the
    error names the field, the path and the nearest folder that exists."""
    for item in run_inputs(absolute_paths(json.loads(json.dumps(run)))):
        if not item.exists():
            parent = os.path.dirname(os.path.abspath(os.path.expanduser(item.path)))
            while parent and not os.path.isdir(parent) and parent != os.path.dirname(parent):
                parent = os.path.dirname(parent)
            raise SpecError(f"the {item.kind} {item.path} does not exist (the nearest folder that does is {parent})",
                            item.field)


def check_trial_inputs(run: dict[str, Any]) -> None:
    """Every local input of a trial, checked on the node it runs on, before any data is read."""
    for item in run_inputs(run):
        if not item.exists():
            raise _missing(item, f"on node {socket.gethostname()}")

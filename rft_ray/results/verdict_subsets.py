"""The identity of the images per-image verdicts are measured on (`rft_ray.results.verdicts`), kept once per
result store.

A subset (test, test/pgd, ood/<domain>, val, ...) is its image indices into the dataset's split (the seeded,
class-stratified draw; the PGD subsets index the test or validation split too) and a fingerprint, the SHA-256 of
those indices, their labels and pixels. Every run of a dataset with the same `split_seed` and subset sizes draws
the same images, so their fingerprints agree and their verdicts pair image by image.

Each identity is a file of its own, `<store>/verdicts/subsets/<fingerprint>.json` (n, fingerprint, the indices as
zlib-compressed int64 gaps, base64), content-addressed: written once, by the first writer of a sidecar that names
it and before that sidecar, and never replaced. Writers of the same subset write the same content, so concurrent
writers are harmless; a file there with other indices under the fingerprint is refused (`VerdictError`). The
sidecars of `rft run`, `rft attack` and `rft interpolate` name their subsets by fingerprint and n only, so a
study's 10,000-index test subset is stored once per store, not once per run (`rft interpolate`'s store inside
a result store keeps its own copies, so each store reads alone). Sidecars written before this (0.2.0's, and
those with `Subset.to_json` inline) still read.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import zlib
from dataclasses import dataclass

import numpy as np

from rft_ray.results.files import read_bytes, write_bytes

SUBSETS_DIR = "verdicts/subsets"  # under the store's root
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


class VerdictError(ValueError):
    """A verdict file that cannot be read, or verdicts that do not pair."""


@dataclass(frozen=True)
class Subset:
    """The images a metric is measured on: indices into the split, and the fingerprint of those images."""

    indices: np.ndarray  # int64
    fingerprint: str

    @classmethod
    def of(cls, indices, labels, images=None) -> "Subset":
        """The identity of a subset from its split indices, labels and (optionally) pixels."""
        idx = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
        digest = hashlib.sha256(idx.tobytes())
        digest.update(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes())
        if images is not None:
            digest.update(np.ascontiguousarray(np.asarray(images)).tobytes())
        return cls(idx, digest.hexdigest())

    def to_json(self) -> dict:
        packed = base64.b64encode(zlib.compress(np.diff(self.indices, prepend=0).astype("<i8").tobytes())).decode()
        return {"n": int(len(self.indices)), "fingerprint": self.fingerprint, "indices": packed}

    @classmethod
    def from_json(cls, value: dict) -> "Subset":
        deltas = np.frombuffer(zlib.decompress(base64.b64decode(value["indices"])), dtype="<i8")
        return cls(np.cumsum(deltas).astype(np.int64), str(value["fingerprint"]))

    def same_images(self, other: "Subset") -> bool:
        return self.fingerprint == other.fingerprint and np.array_equal(self.indices, other.indices)


def reference(subset: Subset) -> dict:
    """What a sidecar keeps of a subset: its fingerprint and image count (the indices live in its file)."""
    return {"n": int(len(subset.indices)), "fingerprint": subset.fingerprint}


class SubsetFiles:
    """A store's subset identities (`<folder>/<fingerprint>.json`, on any pyarrow filesystem), with those this
    object has written or read remembered, so that a run writing its sidecar at every point checks each file
    once."""

    def __init__(self, filesystem, folder: str):
        self.fs, self.folder = filesystem, folder
        self._known: dict[str, Subset] = {}

    def path(self, fingerprint: str) -> str:
        if not _FINGERPRINT.match(fingerprint):
            raise VerdictError(f"subset fingerprint {fingerprint!r} is not a SHA-256 hex digest (64 of 0-9a-f)")
        return f"{self.folder}/{fingerprint}.json"

    def put(self, subset: Subset) -> None:
        """Make sure the store holds `subset`'s identity: write its file where absent; VerdictError where a file
        with other images under that fingerprint is there."""
        known = self._known.get(subset.fingerprint)
        if known is not None and known.same_images(subset):
            return
        path = self.path(subset.fingerprint)
        stored = self._read(path)
        if stored is None:
            write_bytes(self.fs, path, json.dumps(subset.to_json(), sort_keys=True).encode())
        elif not stored.same_images(subset):
            raise VerdictError(f"subset identity file {path} holds {len(stored.indices)} other image indices than "
                               f"the {len(subset.indices)} of the subset with that fingerprint being written; the "
                               "file is damaged or was replaced by hand: delete it and rerun the writing command")
        self._known[subset.fingerprint] = subset

    def get(self, fingerprint: str, n: int, named_by: str) -> Subset:
        """The identity of the subset a sidecar (`named_by`) names; VerdictError naming the file where it is
        missing, damaged or of another size."""
        known = self._known.get(fingerprint)
        if known is None:
            if not _FINGERPRINT.match(fingerprint):
                raise VerdictError(f"verdict file {named_by} names a subset by {fingerprint[:70]!r}, not a "
                                   "fingerprint (64 of 0-9a-f); the file is damaged")
            path = self.path(fingerprint)
            known = self._read(path)
            if known is None:
                raise VerdictError(f"verdict file {named_by} names the subset of {n} images with fingerprint "
                                   f"{fingerprint[:12]}..., but its identity file {path} is missing (it is written "
                                   "beside the store's verdicts before any sidecar naming it; copy it along with "
                                   "the sidecar)")
            if known.fingerprint != fingerprint or len(known.indices) != n:
                raise VerdictError(f"subset identity file {path} holds {len(known.indices)} images of fingerprint "
                                   f"{known.fingerprint[:12]}..., not the {n} of {fingerprint[:12]}... that "
                                   f"{named_by} names; the file is damaged")
            self._known[fingerprint] = known
        return known

    def _read(self, path: str) -> Subset | None:
        data = read_bytes(self.fs, path)
        if data is None:
            return None
        try:
            return Subset.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError, zlib.error) as err:
            raise VerdictError(f"subset identity file {path} is not readable ({type(err).__name__}: {err}); it is "
                               "written by rft run (rft attack, rft interpolate) beside the verdicts") from err

"""The adaptive evaluation schedule: dense early in fine-tuning, sparse later.

A schedule is a list of segments (until, every): a step s in the segment (previous until, until]
is an evaluation point when s is a multiple of `every`. Step 0 and the final step are always points.

`restarts` (the first steps of a strategy's later phases, e.g. LP-FT's fine-tuning) start the schedule
again: each restart step is a point, and after it a step is a point when its distance from the restart is,
so every phase is measured densely early and sparsely later.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rft_ray.config import EvaluationSpec, ScheduleSegment


@dataclass(frozen=True)
class Segment:
    until: int | None  # None: no end
    every: int


PRESETS: dict[str, tuple[Segment, ...]] = {
    # The paper's text: every 50 steps to 700, every 1000 to 3000, every 6000 after.
    "default": (Segment(700, 50), Segment(3000, 1000), Segment(None, 6000)),
    # The schedule in the paper's public code.
    "paper_code": (Segment(100, 50), Segment(300, 30), Segment(1000, 200), Segment(3000, 2000),
                   Segment(10000, 4000), Segment(30000, 6000), Segment(None, 20000)),
}


class EvalSchedule:
    def __init__(self, segments: Sequence[Segment], restarts: Sequence[int] = ()):
        self.segments = tuple(segments)
        self.restarts = tuple(sorted(set(restarts)))
        if any(step < 1 for step in self.restarts):
            raise ValueError(f"schedule restarts are steps after the first, got {list(restarts)}")

    @classmethod
    def from_spec(cls, spec: EvaluationSpec, restarts: Sequence[int] = ()) -> "EvalSchedule":
        if isinstance(spec.schedule, str):
            return cls(PRESETS[spec.schedule], restarts)
        return cls([Segment(s.until, s.every) for s in spec.schedule if isinstance(s, ScheduleSegment)], restarts)

    def every_at(self, step: int) -> int | None:
        for segment in self.segments:
            if segment.until is None or step <= segment.until:
                return segment.every
        return None  # past the last bounded segment: no more points but the final step

    def is_point(self, step: int, total_steps: int) -> bool:
        if step == 0 or step == total_steps:
            return True
        local = step - max((r for r in self.restarts if r <= step), default=0)  # steps since the phase began
        if local == 0:
            return True
        every = self.every_at(local)
        return every is not None and local % every == 0

    def points(self, total_steps: int) -> list[int]:
        return [s for s in range(total_steps + 1) if self.is_point(s, total_steps)]

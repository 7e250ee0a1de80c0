import pytest

from rft_ray.evaluation.schedule import PRESETS, EvalSchedule, Segment
from rft_ray.specs import run_spec


def test_default_schedule_is_the_papers_text():
    points = EvalSchedule(PRESETS["default"]).points(20000)
    assert points[:15] == list(range(0, 701, 50))
    assert points[15:] == [1000, 2000, 3000, 6000, 12000, 18000, 20000]


def test_paper_code_preset():
    points = EvalSchedule(PRESETS["paper_code"]).points(50000)
    expected = ([0, 50, 100] + list(range(120, 301, 30)) + list(range(400, 1001, 200)) + [2000]
                + [4000, 8000] + [12000, 18000, 24000, 30000] + [40000, 50000])
    assert points == sorted(set(expected))


def test_step_zero_and_final_step_always_and_bounded_custom_schedule_stops():
    schedule = EvalSchedule([Segment(10, 5)])
    assert schedule.points(23) == [0, 5, 10, 23]
    assert EvalSchedule([Segment(None, 7)]).points(20) == [0, 7, 14, 20]


def test_custom_schedule_from_spec():
    spec = run_spec({"evaluation": {"schedule": [{"until": 30, "every": 10}, {"until": None, "every": 25}]}})
    assert EvalSchedule.from_spec(spec.evaluation).points(80) == [0, 10, 20, 30, 50, 75, 80]


@pytest.mark.parametrize("total", [1, 49, 50, 51, 701])
def test_points_are_sorted_unique_and_end_at_total(total):
    points = EvalSchedule(PRESETS["default"]).points(total)
    assert points == sorted(set(points)) and points[0] == 0 and points[-1] == total

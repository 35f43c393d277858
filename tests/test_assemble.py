"""The streamed assembly's order, computed from integers, is the order the plain definition
gives (phases ascending; within a phase each path's rows of that phase, the path repeated
until its seed is presented often enough; sequences merged by `curriculum.schedule`), for
every schedule, on random paths."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from microvar.curriculum import SCHEDULES, repeats_for, schedule
from microvar.pipeline.assemble import curriculum_order


def plain_order(paths: list[list[int]], presentations: list[int], how: str) -> list[tuple[int, int]]:
    """(repeat, global row index) in dataset order, straight from the definition."""
    rows, start = [], 0
    for phases in paths:
        rows.append([(start + k, ph) for k, ph in enumerate(phases)])
        start += len(phases)
    ordered = []
    for phase in sorted({ph for phases in paths for ph in phases}):
        sequences = []
        for path, pres in zip(rows, presentations):
            segment = [i for i, ph in path if ph == phase]
            if segment:
                reps = repeats_for(len(path), pres)
                sequences.append([(rep, i) for rep in range(reps) for i in segment])
        ordered.extend(schedule(sequences, how))
    return ordered


paths_st = st.lists(st.lists(st.integers(1, 3), min_size=1, max_size=9).map(sorted), min_size=0, max_size=12)


@settings(max_examples=150, deadline=None)
@given(paths=paths_st, data=st.data())
def test_order_from_integers_is_the_plain_order(paths, data):
    presentations = data.draw(st.lists(st.integers(1, 30), min_size=len(paths), max_size=len(paths)))
    lengths = np.array([len(p) for p in paths], dtype=np.int64)
    phase = np.array([ph for p in paths for ph in p], dtype=np.int32)
    for how in SCHEDULES:
        order = curriculum_order(lengths, np.array(presentations, dtype=np.int64), phase, how)
        assert list(zip(order.repeat.tolist(), order.row.tolist())) == plain_order(paths, presentations, how), how


def test_unsorted_phases_within_a_path_keep_the_path_order():
    """A bridge may show an earlier row again, so a path's phases need not be sorted."""
    paths = [[1, 2, 1, 2], [2, 1]]
    lengths, phase = np.array([4, 2]), np.array([1, 2, 1, 2, 2, 1])
    for how in SCHEDULES:
        order = curriculum_order(lengths, np.array([4, 4]), phase, how)
        assert list(zip(order.repeat.tolist(), order.row.tolist())) == plain_order(paths, [4, 4], how)

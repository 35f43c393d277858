"""A shard's counts survive the work directory: Summary -> JSON -> Summary is the same
Summary, every Counter and nested statistic included (a Counter inside a dataclass is where
``dataclasses.asdict`` goes wrong)."""

from __future__ import annotations

import json

from microvar.pipeline.summary import Summary


def test_summary_state_round_trips_through_json():
    s = Summary(seeds=3, scored=True, made=40, kept=12, resumed=(1, 4))
    s.rejected.update({"step": 5, "budget": 2})
    s.budget.removed.update({"surprisal <= 2.5x": 7, "ripple_kl <= 0.5": 1})
    s.budget.drift_layers.update({3: 2, 5: 1})
    s.budget.values["surprisal"].extend([1.5, float("inf"), 0.1])
    s.budget.cascaded = 4
    s.reorder.considered, s.reorder.deltas = 9, [0.25, -1.0]
    s.substitution.words = 3
    s.kept_per_seed.extend([4, 8])
    s.gaps.append({"seed_id": "a", "from": "x", "to": "y", "tokens": 5, "budget": 2})
    s.unused_edits.append({"seed_id": "a", "edit": "{a|b}", "reason": "step"})
    s.stage_rows.update({"mark": 3})
    s.scoring.update(seconds=1.5, texts=12, device="cpu")
    back = Summary.from_state(json.loads(json.dumps(s.state())))
    assert back == s
    assert back.budget.removed.most_common(1) == [("surprisal <= 2.5x", 7)]
    assert type(back.budget.drift_layers) is type(s.budget.drift_layers) and 3 in back.budget.drift_layers

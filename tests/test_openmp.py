"""The `microvar` command sets OpenMP's passive wait before torch loads (a spinning wait
burns the CPU share a busy machine leaves: benchmarks/bench_load.py), and keeps a user's own
setting. In a fresh interpreter: this one has torch loaded already."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = ("import os, sys; import microvar.cli; "
         "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_cli_import_sets_passive_wait_before_torch(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, "False"]

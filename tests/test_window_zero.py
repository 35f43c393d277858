"""`expand --ripple-window 0` (every variant measured over the whole remainder) scores the
shipped examples as the code before the ripple window did (d2835a8, the parent of 92bdaa7,
which brought the window in).

tests/data/window0_golden.json holds what that old code wrote for `data/seeds.jsonl`
(default recipe, `--seed 7 --drift --budget 'top1>=0.61, ripple_kl<=0.0053'`), scored by a
tiny random Llama: the real default tokenizer and the `model_dir` fixture's config with
max_position_embeddings raised from 40 to 512 (at 40, two seeds and 702 variants are
rejected for context; at 512 none are), its weights drawn from a seeded generator, so the
same model every time (the test checks a digest of its tensors against the golden file's).
Its near-uniform distributions put surprisal and nll near ln(49152) = 10.8, the KLs at 0 to
0.01 and top1 at 0 to 1. The default budget never cuts such a model, so the two extra limits
make it cut, each in a gap of the values: no top1 lies within 3.9e-3 of 0.61 and no
ripple_kl within 3.9e-4 of 0.0053, so float noise cannot flip a decision. This test runs the
current code with `--ripple-window 0` and the same options and checks, for every variant in
both runs with the same parent (kept rows and budget rejects, which carry their volatility
too):

* the same text, and the same budget decision (kept, or rejected for the same limits);
* new_tokens, aligned_tokens, drift_layer and seed_drift_layer exactly;
* the KL metrics (ripple_kl, ripple_kl_max and their seed_ forms) within 3e-4: measured max
  |difference| 1.72e-4 (ripple_kl_max; ripple_kl 8.6e-5). It is the old code's error: its
  KL was -H(P_a) - sum P_a log P_b, two float32 sums over 49,152 entries near 10.8
  cancelling; now sum P_a (log P_a - log P_b). Against values this small the bound is
  loose; the exact aligned_tokens and the metrics below carry the window check.
* every other float (surprisal, surprisal_max, delta_nll, top1, nll, the seed_ forms, the
  drift curve) within 2e-5: measured max 5.0e-6 (surprisal and nll near 10.8), nearly all of
  it the golden's rounding to 7 significant digits; delta_nll 2.4e-7, top1 5.0e-8, drift
  6.4e-8.

Measured when written (torch 2.13.0+cpu): 896 variants (kept + budget-rejected) in the old
run, 830 of them in the new one with the same parent (0 decisions differ): grow edits
changed since (they reveal whole words), so some grown texts differ. Since stop 25, 635 (243
only old, 222 only new): `grow model` no longer continues text the model spells in fragments
nor glues onto the seed's last word, which removes most of the random model's continuations,
and each seed's cap of 64 then fills with other variants (other ids, other parents). With
`--ripple-window 32` instead this test fails (checked by hand): aligned_tokens differs (63
against 38, 85 against 32, ...), and the metrics after it. About 15 s on 2 cores.

Regenerate the golden file (needs a checkout of the old code, e.g.
`git worktree add /tmp/old d2835a8`): `python tests/test_window_zero.py /tmp/old`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "window0_golden.json"
OLD_COMMIT = "d2835a8a98867eada12d829ad9d83f4db3e26f4f"   # 92bdaa7^
OPTIONS = ["--seed", "7", "--drift", "--budget", "top1>=0.61, ripple_kl<=0.0053"]
KL = ("ripple_kl", "ripple_kl_max", "seed_ripple_kl", "seed_ripple_kl_max")
KL_TOL = 3e-4        # measured 1.72e-4
FLOAT_TOL = 2e-5     # measured 5.0e-6 (rounding of the golden included)
MIN_COMMON = 600     # measured 829 of 895 when written, 635 since stop 25 (below)


def tiny_model(d: Path, tk) -> Path:
    """conftest's `model_dir` with room for every example (512 positions) and weights drawn
    here from a seeded generator (normal, std 0.02; norms 1), not by transformers' own
    initialisation, which may change between versions."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tk.hf.save_pretrained(str(d))
    config = LlamaConfig(vocab_size=tk.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512)
    model = LlamaForCausalLM(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02 if p.dim() > 1 else torch.ones(p.shape))
    model.save_pretrained(str(d))
    return d


def weights_sha256(d: Path) -> str:
    """A digest of the tiny model's tensors (names, shapes and float32 bytes), not of the file."""
    import torch
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(str(d / "model.safetensors")).items()):
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def text_key(text: str) -> str:
    return text if len(text) <= 40 else "sha1:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def reason(detail: str) -> str:
    """A budget reject's limits without the measured value ('top1 0.5 breaks ...')."""
    return re.sub(r"(\w+) -?[0-9][0-9.e+-]* breaks", r"\1 breaks", detail)


def collect(out: Path) -> dict:
    """variant_id -> parent, text, decision ('kept' or the budget reject's detail), volatility:
    the distinct rows of the dataset and the budget rejects."""
    from datasets import load_from_disk

    found = {}
    for r in load_from_disk(str(out)):
        found[r["variant_id"]] = {"parent": r["parent_id"], "text": text_key(r["text"]), "decision": "kept",
                                  "volatility": r["volatility"]}
    for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r["check"] == "budget":
            assert r["variant_id"] not in found
            found[r["variant_id"]] = {"parent": r["parent_id"], "text": text_key(r["text"]),
                                      "decision": r["detail"], "volatility": r["volatility"]}
    return found


def round7(x):
    if isinstance(x, float):
        return float(f"{x:.7g}")
    if isinstance(x, list):
        return [round7(y) for y in x]
    return x


def test_window_zero_scores_as_before_the_window(tmp_path, tk, cli):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    metrics = golden["metrics"]
    old = {k: v | {"volatility": dict(zip(metrics, v["volatility"]))} for k, v in golden["variants"].items()}

    model = tiny_model(tmp_path / "tiny-llama", tk)
    assert weights_sha256(model) == golden["weights_sha256"], "the tiny model is not the one the golden file was made with"
    out = tmp_path / "out"
    res = cli("expand", ROOT / "data" / "seeds.jsonl", "-o", out, "--model", model, *OPTIONS,
              "--ripple-window", "0", "-q")
    assert res.exit_code == 0, res.stderr
    new = collect(out)

    common = [k for k in old if k in new and old[k]["parent"] == new[k]["parent"]]
    assert len(common) >= MIN_COMMON, (f"{len(common)} of {len(old)} old variants in the new run with the same parent "
                                       f"({len(set(old) - set(new))} only old, {len(set(new) - set(old))} only new)")
    assert all(old[k]["text"] == new[k]["text"] for k in common)

    decided = [(k, old[k]["decision"], new[k]["decision"]) for k in common
               if reason(old[k]["decision"]) != reason(new[k]["decision"])]
    assert not decided, f"{len(decided)} budget decisions differ, e.g. {decided[:3]}"

    worst: dict[str, tuple[float, str]] = {}
    exact = []
    for k in common:
        a, b = old[k]["volatility"], new[k]["volatility"]
        assert set(b) == set(metrics), (k, sorted(b))
        for m in metrics:
            x, y = a[m], b[m]
            if isinstance(x, float) or isinstance(y, float) or isinstance(x, list):
                d = (max((abs(p - q) for p, q in zip(x, y)), default=0.0) if isinstance(x, list) and len(x) == len(y)
                     else math.inf if isinstance(x, list) or x is None or y is None else abs(x - y))
                if d > worst.get(m, (-1.0, ""))[0]:
                    worst[m] = (d, k)
            elif x != y:
                exact.append((k, m, x, y))
    assert not exact, f"{len(exact)} integer fields differ, e.g. {exact[:5]}"
    report = ", ".join(f"{m} {d:.3g} ({k})" for m, (d, k) in sorted(worst.items()))
    over = [m for m, (d, _) in worst.items() if d > (KL_TOL if m in KL else FLOAT_TOL)]
    assert not over, f"over tolerance: {over}; max |difference| per metric over {len(common)} variants: {report}"


def write_golden(old_checkout: Path) -> None:
    """Run the old code in ``old_checkout`` (a checkout of OLD_COMMIT) and write GOLDEN."""
    import os
    import subprocess
    import tempfile

    import torch
    import transformers

    from microvar.model.load import load_tokenizer

    commit = subprocess.run(["git", "-C", str(old_checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert commit == OLD_COMMIT, commit
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tiny_model(tmp / "tiny-llama", load_tokenizer()[0])
        weights = weights_sha256(model)
        out = tmp / "out"
        env = os.environ | {"PYTHONPATH": str(old_checkout), "OMP_WAIT_POLICY": "PASSIVE"}
        # run outside this checkout: python -m and -c put the working directory first on sys.path
        where = subprocess.run([sys.executable, "-c", "import microvar; print(microvar.__file__)"], env=env,
                               cwd=tmp, capture_output=True, text=True, check=True).stdout.strip()
        assert Path(where).resolve().is_relative_to(old_checkout.resolve()), where
        cmd = [sys.executable, "-m", "microvar", "expand", str(ROOT / "data" / "seeds.jsonl"), "-o", str(out),
               "--model", str(model), *OPTIONS, "-q"]
        subprocess.run(cmd, env=env, cwd=tmp, check=True)
        found = collect(out)
    metrics = list(next(iter(found.values()))["volatility"])
    head = {"about": "tests/test_window_zero.py: what the code before the ripple window wrote for the examples",
            "old_commit": OLD_COMMIT,
            "command": (f"cd <outside this repository> && PYTHONPATH=<checkout of {OLD_COMMIT[:7]}> "
                        "python -m microvar expand <this repository>/data/seeds.jsonl "
                        f"-o OUT --model TINY {' '.join(repr(o) if ' ' in o else o for o in OPTIONS)} -q"),
            "model": "TINY: tiny_model() in tests/test_window_zero.py", "weights_sha256": weights,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "texts": "up to 40 characters as they are, longer as sha1: and 16 hex digits of the SHA-1 of the UTF-8",
            "decision": "kept, or the budget reject's detail from rejects.jsonl",
            "metrics": metrics}
    lines = [json.dumps(head, ensure_ascii=False)[:-1] + ', "variants": {']
    rows = [f"{json.dumps(k)}: " + json.dumps({"parent": v["parent"], "text": v["text"], "decision": v["decision"],
                                               "volatility": [round7(v["volatility"][m]) for m in metrics]},
                                              ensure_ascii=False)
            for k, v in sorted(found.items())]
    GOLDEN.write_text("\n".join(lines + [",\n".join(rows), "}}"]) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}: {len(found)} variants, {GOLDEN.stat().st_size} bytes")


if __name__ == "__main__":
    write_golden(Path(sys.argv[1]))

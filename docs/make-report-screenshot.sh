#!/usr/bin/env bash
# Remakes docs/report.png and docs/probe-sample.json from the shipped examples with the default
# model (run by hand from a checkout with microvar installed and Debian's chromium; ~2 minutes on
# 2 CPU cores). WORK=DIR keeps the intermediate dataset, map and page (default: a temporary dir).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${WORK:-$(mktemp -d)}
[ -d "$work/out" ] || microvar expand data/seeds.jsonl -o "$work/out" --drift -q
microvar probe data/seeds.jsonl -o "$work/map.json"
microvar report "$work/out" -o "$work/report.html" --probe "$work/map.json" \
    --seeds lithography-ru,code-markup,mixed-emoji --rows-per-seed 16
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$work/chromium" \
    --window-size=1280,1600 --screenshot="$PWD/docs/report.png" "file://$work/report.html" 2>/dev/null
# the sample: the map's header, the all-seeds table, and one seed with three of its variants
python - "$work/map.json" docs/probe-sample.json <<'PY'
import json, sys
from microvar.tools.probe import dumps
m = json.load(open(sys.argv[1], encoding="utf-8"))
seed = next(s for s in m["seeds"] if s["id"] == "think-ru-markup")
m["seeds"] = [{**seed, "detail": seed["detail"][:3]}]
m["note"] = "an excerpt of `microvar probe data/seeds.jsonl -o map.json`: one seed of 14, three of its variants"
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write(dumps(m) + "\n")
PY
echo "wrote docs/report.png and docs/probe-sample.json (work files in $work)"

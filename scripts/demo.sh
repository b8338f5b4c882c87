#!/usr/bin/env bash
# The main job on the embedded sample: degrade -> verify -> preview -> leaderboard. Outputs land in runs/demo/.
set -euo pipefail
bin=${1:-.venv/bin}
out=runs/demo
rm -rf "$out"
"$bin/degrade" build --src sample --out "$out/shards" --crop 256 --crops-per-image 2 --shard-samples 8 --seed 0 --workers 2
"$bin/degrade" verify "$out/shards"
"$bin/degrade" preview "$out/shards" --out "$out/preview.png"

"$bin/evaluate" leaderboard --methods all --datasets sample --out "$out/eval"
echo "leaderboard: $out/eval/leaderboard.md"

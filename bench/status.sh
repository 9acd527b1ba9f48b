#!/usr/bin/env bash
# Time of `hubvault status` against the number of connectors, on a local-directory bucket.
#
#   bench/status.sh [N...]        default: 100 1000 10000
#
# Seeds each bucket with the keys a hubvault backup leaves per connector (canonical
# object, label marker, one version and its manifest: 4 objects) with small placeholder
# bodies; status reads none of them, only the listing. Uses hyperfine when installed
# (apt-get install -y hyperfine), else a median of RUNS timed runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin hubvault
hv=$(pwd)/target/release/hubvault
work=${BENCH_DIR:-/tmp/hubvault-bench-status}
runs=${RUNS:-5}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000 10000)

seed() { # seed DIR N
  python3 - "$1" "$2" <<'PY'
import os, sys, uuid
root, n = sys.argv[1], int(sys.argv[2])
hubs = [str(uuid.uuid4()) for _ in range(max(1, n // 50))]
v = "20261124T070102.123Z-ab12cd34ef56"
for i in range(n):
    d = os.path.join(root, "bench", "datahub", hubs[i % len(hubs)], "connector", str(uuid.uuid4()))
    os.makedirs(os.path.join(d, "hubvault", "versions"))
    os.makedirs(os.path.join(d, "hubvault", "label", "sdc"))
    for path, body in [("sqlite.db", b"SQLite format 3\0placeholder"),
                       (f"hubvault/label/sdc/source-{i}", b""),
                       (f"hubvault/versions/{v}.db.zst", b"zstd"),
                       (f"hubvault/versions/{v}.json", b"{}")]:
        with open(os.path.join(d, path), "wb") as f:
            f.write(body)
PY
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '| connectors | objects listed | hubvault status --json (median) |\n|---|---|---|\n'
for n in "${sizes[@]}"; do
  bucket="$work/$n"
  if [ ! -d "$bucket/bench" ]; then
    rm -rf "$bucket" && mkdir -p "$bucket"
    seed "$bucket" "$n"
  fi
  cmd="$hv status --json --org bench --bucket file://$bucket"
  $cmd >/dev/null  # warm the page cache; also checks it runs (exit 0: all fresh)
  if command -v hyperfine >/dev/null; then
    hyperfine --runs "$runs" --warmup 1 --export-json "$work/h.json" --style none "$cmd >/dev/null" >/dev/null
    t=$(python3 -c "import json;print('%.3f s' % json.load(open('$work/h.json'))['results'][0]['median'])")
  else
    t=$(for _ in $(seq 1 "$runs"); do
          s=$(date +%s.%N); $cmd >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc
        done | median)
    t="$t s"
  fi
  printf '| %s | %s | %s |\n' "$n" "$((4 * n))" "$t"
done

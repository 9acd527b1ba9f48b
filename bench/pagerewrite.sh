#!/usr/bin/env bash
# The id rewrite on the pages against the SQL rewrite, on the same input, alternating run
# by run: `hubvault remap --db SRC --output OUT` without and with HUBVAULT_PAGE_REWRITE=1.
# SRC is only read (remap --output copies it with the backup API into a temp file beside
# OUT, rewrites and checks that, then renames it to OUT); OUT is removed after each run, so
# one copy of the database exists at a time.
#
#   bench/pagerewrite.sh SRC [WORKDIR]     (RUNS=3 by default; results: docs/BENCHMARKS.md)
#
# Prints per run: wall, user and sys seconds (/usr/bin/time) and hubvault's own debug
# timings of the rewrite steps; the load average before each run.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: bench/pagerewrite.sh SRC [WORKDIR]}
work=${2:-$(mktemp -d -t hubvault-bench-pagerewrite.XXXXXX)}
mkdir -p "$work"
cargo build --release --quiet --bin hubvault
bin=$(pwd)/target/release/hubvault
new_hub=11111111-2222-4333-8444-555555555555
new_conn=66666666-7777-4888-8999-aaaaaaaaaaaa
ls -l "$src"
for i in $(seq 1 "${RUNS:-3}"); do
  for path in ${PATHS:-sql pages}; do
    rm -f "$work"/out.db*
    sync
    echo "== run $i, $path path; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "$path" = pages ]; then export HUBVAULT_PAGE_REWRITE=1; else unset HUBVAULT_PAGE_REWRITE; fi
    RUST_LOG=hubvault=debug /usr/bin/time -f "wall %e s, user %U s, sys %S s" \
      "$bin" remap --db "$src" --to-datahub "$new_hub" --to-connector "$new_conn" \
      --output "$work/out.db" > "$work/out.json" 2> "$work/err.log" || { cat "$work/err.log"; exit 1; }
    grep -E "pages rewritten|structure pass|REINDEX|UPDATE Events|UPDATE Integrations|checks of the result|final scan|wall " "$work/err.log" \
      | sed -E 's/^.*(rewrite: |pagerewrite: |wall )/\1/; s/^wall /wall /'
  done
done
rm -f "$work"/out.db*
echo "work dir: $work (remove it when done)"

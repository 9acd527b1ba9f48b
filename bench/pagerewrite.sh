#!/usr/bin/env bash
# The id rewrite of a restore's private copy on the pages against the SQL rewrite, on the
# same input, alternating run by run (examples/rewrite_paths.rs: open the copy as
# `install::prepare` does, rewrite onto new ids, close, run the checks of the result).
# SRC is only read: each run works on a fresh `cp` of it in WORKDIR, removed after the
# run, so one copy of the database exists at a time.
#
#   bench/pagerewrite.sh SRC [WORKDIR]     (RUNS=3 by default; results: docs/BENCHMARKS.md)
#
# Prints per run: the load average before it, the example's own split (rewrite, checks),
# hubvault's debug timings of the rewrite's steps, and wall, user and system seconds of
# the whole process (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: bench/pagerewrite.sh SRC [WORKDIR]}
work=${2:-$(mktemp -d -t hubvault-bench-pagerewrite.XXXXXX)}
mkdir -p "$work"
cargo build --release --quiet --example rewrite_paths
bin=$(pwd)/target/release/examples/rewrite_paths
ls -l "$src"
for i in $(seq 1 "${RUNS:-3}"); do
  for path in ${PATHS:-sql pages}; do
    rm -f "$work"/copy.db*
    cp "$src" "$work/copy.db"
    sync
    echo "== run $i, $path path; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    RUST_LOG=hubvault=debug /usr/bin/time -f "wall %e s, user %U s, sys %S s" \
      "$bin" "$work/copy.db" "$path" > "$work/out.txt" 2> "$work/err.log" || { cat "$work/out.txt" "$work/err.log"; exit 1; }
    cat "$work/out.txt"
    grep -E "structure pass|pages rewritten|REINDEX|UPDATE Events|final scan|wall " "$work/err.log" \
      | sed -E 's/^.*(rewrite: |pagerewrite: |wall )/\1/'
  done
done
rm -f "$work"/copy.db*
echo "work dir: $work (remove it when done)"

#!/usr/bin/env bash
# Does the agent ever make a connector's statement fail with "database is locked"? A
# writer with NO busy timeout (python3's sqlite3, timeout=0: SQLITE_BUSY at the first
# conflict) commits one 200-byte row every 20 ms and VACUUMs every VACUUM_EVERY commits,
# for DURATION seconds, on a connector database (make_fixture, EVENTS events) under a hub root the
# real agent captures (--tick 1s, compaction on) into a local-directory bucket. Counted:
# commits, VACUUMs, and every SQLITE_BUSY with the statement it hit. With SCHED=1 a loop
# also runs `hubvault backup` (a fresh backup: the skip path) every 200 ms, which opens
# the connector's database read-only as the agent's scheduler does at every pass.
#
#   MODE=wal|delete DURATION=60 SCHED=0|1 bench/writer_busy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin hubvault --example make_fixture
hv=$(pwd)/target/release/hubvault
work=${BENCH_DIR:-/tmp/hubvault-bench-busy}
mode=${MODE:-wal}
secs=${DURATION:-60}
rm -rf "$work" && mkdir -p "$work/bucket" "$work/tmp"
agent=""; sched=""
trap '[ -n "$agent" ] && kill -TERM "$agent" 2>/dev/null; [ -n "$sched" ] && kill "$sched" 2>/dev/null; sleep 1; rm -rf "$work"' EXIT
ids=$(target/release/examples/make_fixture "$work/x.db" "${EVENTS:-20000}")
read -r hub conn <<< "$ids"
mkdir -p "$work/hub/$conn"
mv "$work/x.db" "$work/hub/$conn/sqlite.db"
db="$work/hub/$conn/sqlite.db"
sqlite3 "$db" "PRAGMA journal_mode=$mode; CREATE TABLE IF NOT EXISTS bench_w(id INTEGER PRIMARY KEY, v BLOB);" >/dev/null
"$hv" backup --db "$db" --bucket "file://$work/bucket" --org bench --tmp-dir "$work/tmp" >/dev/null
RUST_LOG=warn,hubvault=debug "$hv" agent --hub-root "$work/hub" --bucket "file://$work/bucket" \
  --org bench --tmp-dir "$work/tmp" --tick 1s > "$work/agent.log" 2>&1 &
agent=$!
for _ in $(seq 1 600); do grep -q "base uploaded" "$work/agent.log" && break; sleep 0.1; done
if [ "${SCHED:-0}" = 1 ]; then
  ( while :; do "$hv" backup --db "$db" --bucket "file://$work/bucket" --org bench >/dev/null 2>&1 || true; sleep 0.2; done ) &
  sched=$!
fi
echo "mode $mode, ${secs}s, sched ${SCHED:-0}, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$db" "$secs" "${VACUUM_EVERY:-250}" <<'EOF'
import sqlite3, sys, time, collections
db, secs, every = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
c = sqlite3.connect(db, timeout=0, isolation_level=None)
busy = collections.Counter(); commits = vacuums = 0
end = time.time() + secs
i = 0
while time.time() < end:
    i += 1
    try:
        if i % every == 0:
            c.execute("DELETE FROM bench_w WHERE id % 2 = 0")
            c.execute("VACUUM"); vacuums += 1
        else:
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO bench_w(v) VALUES (randomblob(200))")
            c.execute("COMMIT"); commits += 1
    except sqlite3.OperationalError as e:
        busy[("VACUUM" if i % every == 0 else "commit", str(e))] += 1
        try: c.execute("ROLLBACK")
        except sqlite3.OperationalError: pass
    time.sleep(0.02)
c.close()
print(f"commits {commits}, VACUUMs {vacuums}, SQLITE_BUSY {sum(busy.values())}: {dict(busy)}")
EOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -c "segment uploaded" "$work/agent.log" | sed 's/^/segments uploaded: /' || true

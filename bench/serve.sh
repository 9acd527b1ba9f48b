#!/usr/bin/env bash
# Page times of `hubvault serve` over a fleet of N connectors on a local-directory bucket.
#
#   bench/serve.sh [N]            default: 10000
#
# Seeds the bucket with the keys hubvault leaves per connector (canonical object, label,
# one or two versions with manifests, a drill record key) with small placeholder bodies and
# varied ages (canonical mtimes set back), 1% broken, 3% failed drills. Then:
#   cold: a server with --refresh 0s, so every page load lists the bucket and judges it;
#   warm: a server with --refresh 1h, every page from the cache.
# Prints a Markdown table of medians (curl's time_total, RUNS requests each) and sizes.
# With SHOT=path.png, also takes a screenshot of the warm fleet page with headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin hubvault
hv=$(pwd)/target/release/hubvault
n=${1:-10000}
work=${BENCH_DIR:-/tmp/hubvault-bench-serve}
runs=${RUNS:-15}
bucket="$work/$n"

if [ ! -d "$bucket/bench" ]; then
  rm -rf "$bucket" && mkdir -p "$bucket"
  python3 - "$bucket" "$n" <<'PY'
import datetime as dt, os, random, sys, uuid
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(17)
now = dt.datetime.now(dt.timezone.utc)
types = [("hrb-cellario", "Cellario"), ("sdc", "SDC"), ("idbs-eworkbook", "E-WorkBook"), ("solace", "Solace")]
hubs = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(max(1, n // 50))]
def stamp(t):
    return t.strftime("%Y%m%dT%H%M%S.") + "%03dZ" % (t.microsecond // 1000)
def put(path, body=b"", mtime=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(body)
    if mtime is not None:
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
for i in range(n):
    hub = hubs[i % len(hubs)]
    c = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
    d = os.path.join(root, "bench", "datahub", hub, "connector", c)
    ty, label = types[i % 4]
    # Most connectors backed up within the day; about one in eight is older than 24h.
    age = dt.timedelta(hours=rnd.uniform(0, 23)) if rnd.random() > 0.125 else dt.timedelta(hours=rnd.uniform(25, 96))
    t = now - age
    sha = "%064x" % rnd.getrandbits(256)
    for back in (dt.timedelta(0), dt.timedelta(days=1)):
        v = stamp(t - back) + "-" + sha[:12]
        put(os.path.join(d, "hubvault", "versions", v + ".db.zst"), b"zstd", t - back)
        put(os.path.join(d, "hubvault", "versions", v + ".json"), b"{}", t - back)
    if rnd.random() > 0.01:
        put(os.path.join(d, "sqlite.db"), b"SQLite format 3\0" + b"\0" * rnd.randrange(1000, 60000), t)
    put(os.path.join(d, "hubvault", "label", ty, "%s %s %d" % (label, ["QC", "Screening", "Upstream", "Bioassay"][i % 4], i)))
    r = rnd.random()
    if r < 0.03:
        put(os.path.join(d, "hubvault", "drills", stamp(t) + "-failed.json"), b"{}")
    elif r < 0.63:
        put(os.path.join(d, "hubvault", "drills", stamp(t) + "-ok.json"), b"{}")
PY
fi
objects=$(find "$bucket/bench" -type f | wc -l)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # start REFRESH -> sets url, pid
  local port; port=$(free_port)
  "$hv" serve --bucket "file://$bucket" --org bench --listen "127.0.0.1:$port" --refresh "$1" >/dev/null 2>"$work/serve.log" &
  pid=$!
  url="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -fs -o /dev/null "$url/assets/style.css" && return 0; sleep 0.1; done
  echo "serve did not start: $(cat "$work/serve.log")" >&2; exit 1
}
median() { sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)] * 1000}'; }
timeit() { # timeit PATH -> "median ms | bytes"
  local bytes; bytes=$(curl -fs "$url$1" | wc -c)
  local t; t=$(for _ in $(seq 1 "$runs"); do curl -fs -o /dev/null -w '%{time_total}\n' "$url$1"; done | median)
  echo "$t ms | $bytes"
}

start 1h
curl -fs -o /dev/null "$url/"   # waits for the start-up read
conn=$(curl -fs "$url/api/status?per=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connectors"][0]["connector"])')
hubid=$(curl -fs "$url/api/status?per=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connectors"][0]["datahub"])')
curl -fs -o /dev/null "$url/connectors/$conn"
echo "| page ($n connectors, $objects objects) | warm: median | bytes |"
echo "|---|---|---|"
for p in "/" "/?q=screening+12" "/?q=screening+123" "/?state=stale&sort=age&dir=desc" "/?sort=name&page=20" "/hubs/$hubid" "/connectors/$conn" "/api/status" "/api/status?state=broken"; do
  echo "| \`$p\` | $(timeit "$p") |"
done
if [ -n "${SHOT:-}" ]; then
  prof=$(mktemp -d)
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$prof" --window-size=1400,1000 \
    --screenshot="$SHOT" "$url/?sort=name&per=14" >/dev/null 2>&1
  rm -rf "$prof"
  echo "screenshot: $SHOT" >&2
fi
kill "$pid"; wait "$pid" 2>/dev/null || true

start 0s
echo
echo "| page ($n connectors) | cold (--refresh 0s: LIST + judge + page): median | bytes |"
echo "|---|---|---|"
for p in "/" "/api/status"; do
  echo "| \`$p\` | $(timeit "$p") |"
done
kill "$pid"; wait "$pid" 2>/dev/null || true
echo
echo "One refresh = one paged LIST of the scope: $objects objects = $(( (objects + 999) / 1000 )) requests on S3 (1,000 keys a page)."

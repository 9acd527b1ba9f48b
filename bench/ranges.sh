#!/usr/bin/env bash
# What one download of an object costs on moto (S3 on 127.0.0.1) by the size of its ranged
# GETs: one plain GET of the whole object, then every object read as ranges of 8, 16, 32
# and 64 MiB, 3 in flight (as hubvault's Bucket::body does), timed with curl. For the
# choice of hubvault's RANGE (store/bucket.rs) on the objects a restore reads: the plain
# canonical object and its zstd version.
#
#   bench/ranges.sh FILE...       each FILE is uploaded and read back; RUNS=3
#
# Uses the venv of bench/restore.sh ($BENCH_VENV) for moto and boto3.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${BENCH_VENV:-/tmp/hubvault-bench-venv}
runs=${RUNS:-3}
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" > /dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true' EXIT
url=http://127.0.0.1:$port
for _ in $(seq 1 100); do curl -fsS "$url/moto-api/" -o /dev/null 2>/dev/null && break; sleep 0.1; done
"$venv/bin/python" - "$url" "$@" <<'PY'
import sys, boto3
url, files = sys.argv[1], sys.argv[2:]
s3 = boto3.client('s3', endpoint_url=url, region_name='us-east-1',
                  aws_access_key_id='x', aws_secret_access_key='y')
s3.create_bucket(Bucket='ranges')
for i, f in enumerate(files):
    s3.upload_file(f, 'ranges', f'obj{i}')
PY
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| object | size | whole GET | 8 MiB ranges | 16 MiB | 32 MiB | 64 MiB |"
echo "|---|---|---|---|---|---|---|"
med() { sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]}'; }
i=0
for f in "$@"; do
  size=$(stat -c %s "$f")
  row="| $(basename "$f") | $((size / 1048576)) MiB |"
  t=$(for _ in $(seq 1 "$runs"); do
        /usr/bin/time -f %e curl -fsS "$url/ranges/obj$i" -o /dev/null 2>&1
      done | med)
  row="$row $t s |"
  for mib in 8 16 32 64; do
    r=$((mib * 1048576))
    t=$(for _ in $(seq 1 "$runs"); do
          /usr/bin/time -f %e sh -c "seq 0 $r $((size - 1)) | xargs -P3 -I{} sh -c 'curl -fsS -r {}-\$(({} + $r - 1)) $url/ranges/obj$i -o /dev/null'" 2>&1
        done | med)
    n=$(( (size + r - 1) / r ))
    row="$row $t s ($n) |"
  done
  echo "$row"
  i=$((i + 1))
done
echo "median of $runs runs (ranges in brackets); load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

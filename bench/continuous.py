#!/usr/bin/env python3
"""Continuous capture side by side: no capture, `hubvault agent`, Litestream 0.5.

Run by bench/continuous.sh (which builds and installs what this needs). For each
scenario: a fresh moto server (its access log counts requests by kind), a fresh connector
database, the writer (WAL, busy_timeout 0, 20 rows/s, each row's commit latency logged),
the capture process; after DURATION seconds both are killed with kill -9, the newest state
is restored, and rows lost, requests, bytes stored, capture CPU and peak RSS are reported.
"""
import json, os, re, shutil, signal, socket, subprocess, sys, time, urllib.request

HV, MAKE_FIXTURE, MOTO, LITESTREAM, WORK = sys.argv[1:6]
DURATION = float(os.environ.get("DURATION", "45"))
# Connectors of the one hub, each with its own writer at RATE rows/s (issue 14: 4 at 1/s).
CONNECTORS = int(os.environ.get("CONNECTORS", "1"))
TICK = os.environ.get("TICK", "1s")
RATE = float(os.environ.get("RATE", "20"))

WRITER = r'''
import sqlite3, sys, time
db, log, rate, mode = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
# WAL: busy_timeout 0 (as issue 12 asks); rollback journal: 100 ms.
c = sqlite3.connect(db, timeout=0 if mode == "wal" else 0.1, isolation_level=None)
c.execute("PRAGMA journal_mode=%s" % mode).fetchone()
c.execute("CREATE TABLE IF NOT EXISTS cdc_rows(id INTEGER PRIMARY KEY, t REAL, payload TEXT)")
out = open(log, "a", buffering=1)
start = time.time(); i = 0
while True:
    target = start + i / rate
    now = time.time()
    if target > now:
        time.sleep(target - now)
    tb = time.time()
    try:
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO cdc_rows VALUES (?,?,?)", (i, tb, "p" * 200))
        c.execute("COMMIT")
    except sqlite3.OperationalError as e:
        out.write("busy %d\n" % i)
        try: c.execute("ROLLBACK")
        except Exception: pass
        continue
    out.write("row %d %.6f %.6f\n" % (i, tb, time.time()))
    i += 1
'''


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def start_moto(d):
    port = free_port()
    log = open(os.path.join(d, "moto.log"), "w")
    p = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = "http://127.0.0.1:%d" % port
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1); break
        except Exception:
            time.sleep(0.1)
    urllib.request.urlopen(urllib.request.Request(url + "/bench-bucket", method="PUT"))
    return p, url


REQ = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP')


def requests_by_kind(d, since, until):
    """Requests in moto's access log between two unix times (second resolution)."""
    kinds = {}
    for line in open(os.path.join(d, "moto.log")):
        m = REQ.search(line)
        t = re.search(r"\[(\d+/\w+/\d+ \d+:\d+:\d+)\]", line)
        if not m or not t:
            continue
        ts = time.mktime(time.strptime(t.group(1), "%d/%b/%Y %H:%M:%S"))
        if ts < since or ts > until:  # inclusive whole seconds
            continue
        method, path = m.groups()
        if "/moto-api" in path or path == "/bench-bucket" and method == "PUT":
            continue
        kind = method
        if method == "GET" and ("list-type=2" in path or "prefix=" in path or path.rstrip("/") == "/bench-bucket"):
            kind = "LIST"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def stored_bytes(url, prefix):
    import boto3
    s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1")
    total = n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench-bucket", Prefix=prefix):
        for o in page.get("Contents", []):
            total += o["Size"]; n += 1
    return total, n


def proc_stats(pid):
    """(cpu seconds, peak RSS MiB) of a live process, from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    rss = 0
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024
    return cpu, rss


def rows_in(db):
    import sqlite3
    c = sqlite3.connect(db)
    try:
        return c.execute("SELECT count(*) FROM cdc_rows").fetchone()[0]
    finally:
        c.close()


def scrape(port):
    """hubvault's metrics as {name: value} (summed over labels)."""
    out = {}
    try:
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    except Exception:
        return out
    for line in body.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{")[0].split(" ")[0]
        out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def run(scenario):
    mode = "delete" if scenario.endswith("-rollback") else "wal"
    d = os.path.join(WORK, scenario)
    shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    moto, url = start_moto(d)
    hub = os.path.join(d, "hub"); os.makedirs(hub)
    dbs = []
    datahub = None
    for i in range(CONNECTORS):
        ty = ["sdc", "solace", "hrb-cellario", "idbs-eworkbook"][i % 4]
        extra = [ty] + ([datahub] if datahub else [])
        out = subprocess.run([MAKE_FIXTURE, os.path.join(d, "x.db"), "2000"] + extra, capture_output=True, text=True, check=True)
        datahub, conn = out.stdout.split()
        os.makedirs(os.path.join(hub, conn))
        os.rename(os.path.join(d, "x.db"), os.path.join(hub, conn, "sqlite.db"))
        dbs.append((conn, os.path.join(hub, conn, "sqlite.db")))
    connector, db = dbs[0]
    env = dict(os.environ, AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y",
               AWS_REGION="us-east-1", HUBVAULT_BUCKET="s3://bench-bucket", HUBVAULT_ORG="bench")
    env.pop("AWS_CA_BUNDLE", None)
    open(os.path.join(d, "writer.py"), "w").write(WRITER)
    wlog = os.path.join(d, "writer.log")
    writers = []
    for i, (_, path) in enumerate(dbs):
        log = wlog if i == 0 else os.path.join(d, "writer%d.log" % i)
        writers.append(subprocess.Popen(["/usr/bin/python3", os.path.join(d, "writer.py"), path, log, str(RATE), mode]))
    writer = writers[0]
    time.sleep(0.5)
    cap = None
    cfg = os.path.join(d, "litestream.yml")
    mport = free_port()
    if scenario.startswith("hubvault"):
        cap = subprocess.Popen([HV, "agent", "--hub-root", hub, "--tick", TICK, "--tmp-dir", d,
                                "--metrics-addr", "127.0.0.1:%d" % mport],
                               env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "agent.log"), "w"))
    elif scenario == "litestream":
        entries = "".join(f"""
  - path: {path}
    replicas:
      - type: s3
        bucket: bench-bucket
        path: litestream/{conn}
        endpoint: {url}
        region: us-east-1
        force-path-style: true
        access-key-id: x
        secret-access-key: y
        sync-interval: {TICK}
""" for conn, path in dbs)
        open(cfg, "w").write("dbs:" + entries)
        cap = subprocess.Popen([LITESTREAM, "replicate", "-config", cfg], env=env,
                               stdout=open(os.path.join(d, "litestream.log"), "w"), stderr=subprocess.STDOUT)
    started = time.time()
    time.sleep(DURATION)
    cpu, rss = proc_stats(cap.pid) if cap else (0.0, 0.0)
    metrics = scrape(mport) if scenario.startswith("hubvault") else {}
    killed = time.time()
    if cap:
        cap.send_signal(signal.SIGKILL)
    for w in writers:
        w.send_signal(signal.SIGKILL)
        w.wait()
    if cap:
        cap.wait()
    rows = [l.split() for l in open(wlog) if l.startswith("row ")]
    busy = sum(1 for l in open(wlog) if l.startswith("busy"))
    lat = sorted((float(r[3]) - float(r[2])) * 1000 for r in rows)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    res = {"scenario": scenario, "mode": mode, "connectors": CONNECTORS, "rows_written": len(rows), "busy": busy,
           "p50_ms": round(pct(0.50), 2), "p99_ms": round(pct(0.99), 2),
           "cpu_s": round(cpu, 2), "peak_rss_mib": round(rss, 1), "seconds": round(killed - started, 1)}
    if cap:
        restored = os.path.join(d, "restored.db")
        if scenario.startswith("hubvault"):
            r = subprocess.run([HV, "restore", "--yes", "--datahub", datahub, "--connector", connector,
                                "--output", restored], env=env, capture_output=True, text=True)
        else:
            r = subprocess.run([LITESTREAM, "restore", "-config", cfg, "-o", restored, db], env=env,
                               capture_output=True, text=True)
        if r.returncode != 0:
            res["restore_error"] = (r.stderr or r.stdout)[-500:]
        else:
            n = rows_in(restored)
            res["rows_restored"] = n
            res["rows_lost"] = len(rows) - n
            res["seconds_lost"] = round((len(rows) - n) / RATE, 2)
        # Requests over the steady state (whole seconds from 10 s in to the second
        # before the kill: moto's log has 1 s resolution, and the restore follows at
        # once), per hour.
        import math
        lo, hi = math.ceil(started + 10), math.floor(killed) - 1
        steady = requests_by_kind(d, lo, hi)
        span = hi - lo + 1
        res["requests_per_hour"] = {k: round(v * 3600 / span) for k, v in sorted(steady.items())}
        res["requests_total"] = requests_by_kind(d, 0, time.time() + 1)
        prefix = "bench/stream/" if scenario.startswith("hubvault") else "litestream/"
        b, n = stored_bytes(url, prefix)
        res["stream_bytes"] = b
        res["stream_objects"] = n
        res["stream_bytes_per_hour"] = round(b * 3600 / (killed - started))
        if metrics:
            res["lock_seconds_total"] = round(metrics.get("hubvault_capture_lock_seconds_total", 0.0), 4)
            res["resyncs_total"] = metrics.get("hubvault_capture_resyncs_total")
            res["segments_total"] = metrics.get("hubvault_capture_segments_total")
        if scenario.startswith("hubvault"):
            res["datahub_prefix_bytes"] = stored_bytes(url, "bench/datahub/")[0]
    moto.send_signal(signal.SIGTERM); moto.wait()
    return res


results = [run(s) for s in os.environ.get("SCENARIOS", "none hubvault litestream").split()]
print(json.dumps(results, indent=1))

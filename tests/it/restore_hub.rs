//! `hubvault restore-hub` (issue 15): a whole hub restored in one command, every connector
//! at one common instant; the map's refusals before anything is touched; one failure
//! installs none; kill -9 at random points leaves no half-restored hub.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::RngExt;

use crate::both;
use crate::common::{TestBucket, json_of, rows, run, sha256_of, stderr};
use crate::fixture::{self, CONNECTOR_TYPES, Spec};
use hubvault::model::ids::{ConnectorId, DatahubId};

/// One hub: a connector of each of the four types under `root`, one datahub id.
fn hub(root: &Path, events: usize) -> (DatahubId, Vec<(PathBuf, Spec)>) {
    let datahub = DatahubId::random();
    let mut out = Vec::new();
    for (t, name) in CONNECTOR_TYPES {
        let mut spec = Spec::new(t, name, events);
        spec.datahub = datahub;
        let dir = root.join(spec.connector.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("sqlite.db");
        fixture::create(&db, &spec).unwrap();
        out.push((db, spec));
    }
    // The plan lists connectors by id: keep that order here too.
    out.sort_by_key(|(_, s)| s.connector);
    (datahub, out)
}

fn backup(tb: &TestBucket, db: &Path, force: bool) -> serde_json::Value {
    let mut c = tb.cmd();
    c.args(["backup", "--json", "--db"]).arg(db);
    if force {
        c.arg("--force");
    }
    json_of(&run(&mut c), 0)
}

fn restore_hub(tb: &TestBucket, datahub: DatahubId, hub_root: &Path) -> Command {
    let mut c = tb.cmd();
    c.args(["restore-hub", "--json", "--datahub", &datahub.to_string()])
        .arg("--hub-root")
        .arg(hub_root);
    c
}

/// Every table of `db` as JSON rows, ids swapped by `map` (old -> new) in every value.
fn tables(db: &Path, map: &[(String, String)]) -> BTreeMap<String, String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|t| {
            let mut text = serde_json::to_string(&rows(db, &t)).unwrap();
            for (old, new) in map {
                text = text.replace(old.as_str(), new);
            }
            (t, text)
        })
        .collect()
}

fn integrity(db: &Path) -> String {
    crate::reliability::integrity(db)
}

/// What is in `dir` (names), lock files of connectors left out.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".hubvault-lock"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ---------------------------------------------------------------- the whole story

/// Four connectors of the four types, backed up; the hub is lost; the dry run lists what
/// to create (name, type, metadata, tags) and is a map-file template; restore-hub onto a
/// new hub with that map restores each connector as the expected rewrite of its backup,
/// owned like the new hub root, and runs the hook once.
fn onto_a_new_hub(tb: &TestBucket) {
    let old_root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub(old_root.path(), 150);
    for (db, _) in &conns {
        backup(tb, db, false);
    }
    // What each connector holds at its backup: the expected result, ids swapped.
    let keep = tempfile::tempdir().unwrap();
    let originals: Vec<PathBuf> = conns
        .iter()
        .map(|(db, s)| {
            let copy = keep.path().join(format!("{}.db", s.connector));
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
                .unwrap();
            copy
        })
        .collect();
    drop(old_root); // the hub is lost
    let new_root = tempfile::tempdir().unwrap();
    // The new hub root belongs to the hub's service user, not root.
    std::os::unix::fs::chown(new_root.path(), Some(65534), Some(65534)).unwrap();
    let new_hub = DatahubId::random();

    let plan = json_of(
        &run(restore_hub(tb, datahub, new_root.path()).args([
            "--to-datahub",
            &new_hub.to_string(),
            "--dry-run",
        ])),
        0,
    );
    let listed = plan["plan"]["connectors"].as_array().unwrap();
    assert_eq!(listed.len(), 4);
    for (c, (_, spec)) in listed.iter().zip(&conns) {
        assert_eq!(c["old_connector"], spec.connector.to_string());
        assert!(c["new_connector"].is_null());
        assert_eq!(c["create"]["name"], spec.name.as_str());
        assert_eq!(c["create"]["type"], spec.source_type.as_str());
        assert_eq!(
            c["create"]["metadata"],
            serde_json::json!({"site": "Boston"})
        );
        assert_eq!(c["create"]["tags"], serde_json::json!(["lab"]));
        assert_eq!(c["create_from"], "source.json");
    }
    assert!(
        names(new_root.path()).is_empty(),
        "a dry run changes nothing"
    );

    // The platform creates the connectors; a script writes their ids into the document.
    let new_ids: Vec<ConnectorId> = conns.iter().map(|_| ConnectorId::random()).collect();
    let mut doc = plan.clone();
    for (c, n) in doc["plan"]["connectors"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(&new_ids)
    {
        c["new_connector"] = n.to_string().into();
    }
    let map_file = keep.path().join("map.json");
    std::fs::write(&map_file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let hook_log = keep.path().join("hook.log");
    let out = json_of(
        &run(restore_hub(tb, datahub, new_root.path())
            .args(["--to-datahub", &new_hub.to_string(), "--yes", "--map-file"])
            .arg(&map_file)
            .arg("--then")
            .arg(format!(
                "echo \"$HUBVAULT_NEW_DATAHUB $HUBVAULT_CONNECTORS\" >> {}",
                hook_log.display()
            ))),
        0,
    );
    assert_eq!(out["hook"]["ok"], true);
    let report = out["restore"]["connectors"].as_array().unwrap();
    assert_eq!(report.len(), 4);
    // Each connector's state at the common instant is its version, fetched as the zstd
    // object (on S3 one streamed GET after the first range, not 8 MiB ranges).
    for c in report {
        let key = c["key"].as_str().unwrap();
        assert!(
            key.contains("/hubvault/versions/") && key.ends_with(".db.zst"),
            "{c}"
        );
        assert!(c["instead_of"].is_null(), "{c}");
    }
    for (((_, spec), original), new) in conns.iter().zip(&originals).zip(&new_ids) {
        let target = new_root.path().join(new.to_string()).join("sqlite.db");
        assert_eq!(integrity(&target), "ok");
        let swap = [
            (spec.datahub.to_string(), new_hub.to_string()),
            (spec.connector.to_string(), new.to_string()),
        ];
        assert_eq!(
            tables(&target, &[]),
            tables(original, &swap),
            "{}: not the expected rewrite of its backup",
            spec.source_type
        );
        let m = std::fs::metadata(&target).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 65534, 0o600));
        let d = std::fs::metadata(target.parent().unwrap()).unwrap();
        assert_eq!((d.uid(), d.gid()), (65534, 65534));
    }
    // Nothing else in the hub root: no stage, no lock file.
    let mut expected: Vec<String> = new_ids.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(names(new_root.path()), expected);
    // The hook ran once, after all, with every connector.
    let log = std::fs::read_to_string(&hook_log).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    for n in &new_ids {
        assert!(log.contains(&n.to_string()), "{log}");
    }
    assert!(log.starts_with(&new_hub.to_string()));
}
both!(
    restore_hub_restores_four_connectors_of_four_types_onto_a_new_hub_with_a_map,
    onto_a_new_hub
);

// ---------------------------------------------------------------- one instant

fn add_events(db: &Path, n: usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    for i in 0..n {
        conn.execute(
            "INSERT INTO Events (integration, source, externalId, eventType, createdAt, updatedAt)
             SELECT id, json_extract(sources, '$[0]'), ?1, 'MESSAGE_RECEIVED', '2026-11-24', '2026-11-24' FROM Integrations",
            [format!("later-{i}")],
        )
        .unwrap();
    }
}

fn event_count(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM Events", [], |r| r.get(0))
        .unwrap()
}

/// Connectors backed up at different times: A, B and C, then A and B again with more
/// events. The newest instant all three can be restored to is C's backup: A and B come
/// back as their first backups, C as its newest; the report says how far behind its newest
/// each is. An --at before every backup is refused, changing nothing.
fn common_instant(tb: &TestBucket) {
    let root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub(root.path(), 100);
    let (a, b, c) = (&conns[0], &conns[1], &conns[2]);
    // The fourth connector is not part of this story.
    std::fs::remove_dir_all(conns[3].0.parent().unwrap()).unwrap();
    let firsts: Vec<i64> = [a, b, c].iter().map(|(db, _)| event_count(db)).collect();
    backup(tb, &a.0, false);
    backup(tb, &b.0, false);
    let c_backup = backup(tb, &c.0, false);
    for (db, _) in [a, b] {
        add_events(db, 7);
        backup(tb, db, true);
    }
    assert_eq!(event_count(&a.0), firsts[0] + 7);

    let new_root = tempfile::tempdir().unwrap();
    let new_hub = DatahubId::random();
    let maps: Vec<(ConnectorId, String)> = [a, b, c]
        .iter()
        .map(|(_, s)| {
            let n = ConnectorId::random();
            (n, format!("{}={n}", s.connector))
        })
        .collect();
    let with_map = |cmd: &mut Command| {
        cmd.args(["--to-datahub", &new_hub.to_string()]);
        for (_, m) in &maps {
            cmd.args(["--map", m]);
        }
    };

    // Before every backup: refused, nothing downloaded or written.
    let mut early = restore_hub(tb, datahub, new_root.path());
    with_map(&mut early);
    let out = run(early.args(["--yes", "--at", "2020-01-01T00:00:00Z"]));
    let doc = json_of(&out, 1);
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("nothing restorable at or before 2020-01-01"),
        "{doc}"
    );
    assert!(names(new_root.path()).is_empty());

    let mut cmd = restore_hub(tb, datahub, new_root.path());
    with_map(&mut cmd);
    let out = json_of(&run(cmd.arg("--yes")), 0);
    let r = &out["restore"];
    assert_eq!(r["instant_chosen_by"], "newest common");
    // The instant is C's backup, the newest instant all three have a state at.
    let c_version = c_backup["version"].as_str().unwrap();
    let instant = chrono::DateTime::parse_from_rfc3339(r["instant"].as_str().unwrap()).unwrap();
    assert_eq!(
        &c_version[..20],
        instant.format("%Y%m%dT%H%M%S%.3fZ").to_string(),
        "{r}"
    );
    let by_old: BTreeMap<String, &serde_json::Value> = r["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["old_connector"].as_str().unwrap().to_string(), c))
        .collect();
    for (_, s) in [a, b] {
        let behind = by_old[&s.connector.to_string()]["behind_newest_seconds"].as_f64();
        assert!(behind.unwrap() > 0.0, "{r}");
    }
    assert_eq!(
        by_old[&c.1.connector.to_string()]["behind_newest_seconds"],
        0.0
    );
    let target = |n: ConnectorId| new_root.path().join(n.to_string()).join("sqlite.db");
    for ((n, _), first) in maps.iter().zip(&firsts) {
        assert_eq!(event_count(&target(*n)), *first, "{r}");
    }
}
both!(
    restore_hub_restores_every_connector_at_the_newest_common_instant,
    common_instant
);

/// An idle connector does not hold the hub back to its last change: a backup of its
/// unchanged database makes no new version but says it was read again (`latest.json`,
/// the rule `restore` weighs its newest state by), so its newest instant moves on. A and
/// C backed up, then A changed and backed up, then C backed up unchanged: the newest
/// common instant is A's second backup, A comes back with its new events, C as it is,
/// neither behind its newest.
fn idle_connector(tb: &TestBucket) {
    let root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub(root.path(), 50);
    let (a, c) = (&conns[0], &conns[2]);
    let firsts: Vec<i64> = [a, c].iter().map(|(db, _)| event_count(db)).collect();
    for (db, _) in [a, c] {
        backup(tb, db, false);
    }
    add_events(&a.0, 7);
    let a_second = backup(tb, &a.0, true);
    // S3 keeps upload times in whole seconds (a state time is capped by its upload):
    // step past A's second.
    std::thread::sleep(Duration::from_millis(1100));
    let c_again = backup(tb, &c.0, true);
    assert_eq!(c_again["new_version"], false, "{c_again}");

    let new_root = tempfile::tempdir().unwrap();
    let mut cmd = restore_hub(tb, datahub, new_root.path());
    cmd.args(["--yes", "--to-datahub", &DatahubId::random().to_string()]);
    // B and D are never backed up: not part of this story.
    let mut news = Vec::new();
    for (_, s) in [a, c] {
        let n = ConnectorId::random();
        cmd.args(["--map", &format!("{}={n}", s.connector)]);
        news.push((s.connector, n));
    }
    let out = json_of(&run(&mut cmd), 0);
    let r = &out["restore"];
    assert_eq!(r["instant_chosen_by"], "newest common", "{r}");
    let instant = chrono::DateTime::parse_from_rfc3339(r["instant"].as_str().unwrap()).unwrap();
    let a_version = a_second["version"].as_str().unwrap();
    assert!(
        instant.format("%Y%m%dT%H%M%S%.3fZ").to_string().as_str() >= &a_version[..20],
        "the instant {instant} is before A's second backup {a_version}: {r}"
    );
    let target = |old: ConnectorId| {
        let n = news.iter().find(|(o, _)| *o == old).unwrap().1;
        new_root.path().join(n.to_string()).join("sqlite.db")
    };
    assert_eq!(event_count(&target(a.1.connector)), firsts[0] + 7, "{r}");
    assert_eq!(event_count(&target(c.1.connector)), firsts[1], "{r}");
    let reports = r["connectors"].as_array().unwrap();
    assert_eq!(reports.len(), 2, "{r}");
    for rep in reports {
        assert_eq!(rep["behind_newest_seconds"], 0.0, "{rep}");
    }
}
both!(
    restore_hub_moves_the_common_instant_on_with_an_idle_connector_backed_up_unchanged,
    idle_connector
);

// ---------------------------------------------------------------- refusals

/// Exit 2, with the message naming what is wrong, and the hub root as it was.
fn assert_refused(out: &Output, words: &str, root: &Path, before: &[String]) {
    let doc = json_of(out, 2);
    assert!(
        doc["error"].as_str().unwrap().contains(words),
        "expected {words:?} in {doc}"
    );
    assert_eq!(names(root), before, "the hub root changed");
}

/// Each refusal of the map: unmapped (no map at all, or one missing), an unknown
/// connector, an old id mapped twice, a new id given twice, a new id already under the
/// hub root: exit 2 before anything is downloaded or written.
fn refusals(tb: &TestBucket) {
    let old_root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub(old_root.path(), 20);
    for (db, _) in &conns {
        backup(tb, db, false);
    }
    let root = tempfile::tempdir().unwrap();
    let new_hub = DatahubId::random().to_string();
    let new: Vec<ConnectorId> = conns.iter().map(|_| ConnectorId::random()).collect();
    let full: Vec<String> = conns
        .iter()
        .zip(&new)
        .map(|((_, s), n)| format!("{}={n}", s.connector))
        .collect();
    let attempt = |maps: &[String]| {
        let mut c = restore_hub(tb, datahub, root.path());
        c.args(["--yes", "--to-datahub", &new_hub]);
        for m in maps {
            c.args(["--map", m]);
        }
        run(&mut c)
    };

    // No map at all: the list of what to create comes with the refusal.
    let out = attempt(&[]);
    assert_refused(&out, "has no new id", root.path(), &[]);
    let doc = json_of(&out, 2);
    assert_eq!(doc["plan"]["connectors"].as_array().unwrap().len(), 4);
    assert_eq!(
        doc["plan"]["connectors"][0]["create"]["tags"],
        serde_json::json!(["lab"])
    );
    let text = run(tb
        .cmd()
        .args(["restore-hub", "--yes", "--datahub", &datahub.to_string()])
        .args(["--to-datahub", &new_hub, "--hub-root"])
        .arg(root.path()));
    assert_eq!(text.status.code(), Some(2));
    for (_, s) in &conns {
        assert!(stderr(&text).contains(&s.name), "{}", stderr(&text));
    }

    // One connector missing.
    assert_refused(
        &attempt(&full[..3]),
        &format!("{} has no new id", conns[3].1.connector),
        root.path(),
        &[],
    );
    // A connector that is not on the old hub.
    let stranger = ConnectorId::random();
    let mut maps = full.clone();
    maps.push(format!("{stranger}={}", ConnectorId::random()));
    assert_refused(
        &attempt(&maps),
        "has no backup under the old hub",
        root.path(),
        &[],
    );
    // An old id mapped twice.
    let mut maps = full.clone();
    maps.push(format!(
        "{}={}",
        conns[0].1.connector,
        ConnectorId::random()
    ));
    assert_refused(&attempt(&maps), "is mapped twice", root.path(), &[]);
    // One new id for two connectors.
    let mut maps = full.clone();
    maps[1] = format!("{}={}", conns[1].1.connector, new[0]);
    assert_refused(
        &attempt(&maps),
        "is given to 2 connectors",
        root.path(),
        &[],
    );
    // A new id already under the hub root (the platform deployed it, or a typo).
    std::fs::create_dir(root.path().join(new[2].to_string())).unwrap();
    let before = names(root.path());
    assert_refused(
        &attempt(&full),
        "is already under the hub root",
        root.path(),
        &before,
    );
    std::fs::remove_dir(root.path().join(new[2].to_string())).unwrap();
    // A malformed map entry is a command-line error too.
    let out = attempt(&["not-a-map".to_string()]);
    assert_refused(&out, "is not OLD=NEW", root.path(), &[]);
}
both!(
    restore_hub_refuses_a_wrong_map_with_exit_2_and_leaves_the_hub_root_empty,
    refusals
);

// ---------------------------------------------------------------- one failure

/// The third connector's backup is damaged in the bucket (its kept version replaced by
/// other bytes): restore-hub fails naming it, installs no connector (onto a new hub: the
/// hub root stays empty; onto the same hub: every database is the one that was there,
/// with nothing kept or left beside it).
fn failure_on_the_third(tb: &TestBucket) {
    let root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub(root.path(), 300);
    for (db, _) in &conns {
        backup(tb, db, false);
    }
    let third = &conns[2].1;
    let prefix = format!("acme/datahub/{datahub}/connector/{}", third.connector);
    let version = tb
        .keys(&format!("{prefix}/hubvault/versions"))
        .into_iter()
        .find(|(k, _)| k.ends_with(".db.zst"))
        .unwrap()
        .0;
    {
        // Other bytes, still a valid zstd object: only the checksum can tell.
        let other = zstd::encode_all(&std::fs::read(&conns[0].0).unwrap()[..], 1).unwrap();
        let b = tb.bucket();
        crate::common::rt()
            .block_on(b.put_bytes(
                &object_store::path::Path::from(version.as_str()),
                other,
                hubvault::store::WriteMode::Overwrite,
            ))
            .unwrap();
    }

    // Onto a new hub.
    let new_root = tempfile::tempdir().unwrap();
    let mut c = restore_hub(tb, datahub, new_root.path());
    c.args(["--yes", "--to-datahub", &DatahubId::random().to_string()]);
    for (_, s) in &conns {
        c.args([
            "--map",
            &format!("{}={}", s.connector, ConnectorId::random()),
        ]);
    }
    let doc = json_of(&run(&mut c), 1);
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("checksum mismatch"), "{error}");
    assert!(error.contains(&third.connector.to_string()), "{error}");
    assert!(error.contains("no connector was installed"), "{error}");
    assert_eq!(names(new_root.path()), Vec::<String>::new());

    // Onto the same hub, in place: the databases that were there stay, untouched.
    let before: Vec<(PathBuf, String)> = conns
        .iter()
        .map(|(db, _)| {
            add_events(db, 3);
            (db.clone(), sha256_of(db))
        })
        .collect();
    let listing_before: Vec<Vec<String>> = conns
        .iter()
        .map(|(db, _)| names(db.parent().unwrap()))
        .collect();
    let doc = json_of(&run(restore_hub(tb, datahub, root.path()).arg("--yes")), 1);
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains(&third.connector.to_string())
    );
    for ((db, sha), names_before) in before.iter().zip(&listing_before) {
        assert_eq!(&sha256_of(db), sha, "{} changed", db.display());
        assert_eq!(&names(db.parent().unwrap()), names_before);
    }
    let mut ids: Vec<String> = conns.iter().map(|(_, s)| s.connector.to_string()).collect();
    ids.sort();
    assert_eq!(names(root.path()), ids, "no stage or lock file left");
}
both!(
    restore_hub_with_a_failure_on_the_third_connector_installs_none,
    failure_on_the_third
);

// ---------------------------------------------------------------- ids it cannot rewrite

/// The third connector holds its old id as raw bytes in a BLOB (which the rewrite cannot
/// rewrite): without --accept-unrewritten restore-hub refuses the whole hub, naming that
/// connector and the place, before any connector is installed (the hub root stays
/// empty); with it every connector is installed, the report lists what is left and warns,
/// and the text report never says "no old id left" for that connector.
fn unrewritable_ids(tb: &TestBucket) {
    let old_root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub(old_root.path(), 20);
    let third = &conns[2].1;
    {
        let conn = rusqlite::Connection::open(&conns[2].0).unwrap();
        conn.execute_batch("CREATE TABLE Raw (k INTEGER PRIMARY KEY, b BLOB)")
            .unwrap();
        let mut raw = b"hdr".to_vec();
        raw.extend_from_slice(third.connector.as_uuid().as_bytes());
        conn.execute("INSERT INTO Raw (k, b) VALUES (1, x'00'), (2, ?1)", [raw])
            .unwrap();
    }
    for (db, _) in &conns {
        backup(tb, db, false);
    }
    let new_hub = DatahubId::random().to_string();
    let maps: Vec<String> = conns
        .iter()
        .map(|(_, s)| format!("{}={}", s.connector, ConnectorId::random()))
        .collect();
    let attempt = |root: &Path, extra: &[&str], json: bool| {
        let mut c = tb.cmd();
        c.args(["restore-hub", "--yes", "--datahub", &datahub.to_string()])
            .args(["--to-datahub", &new_hub, "--hub-root"])
            .arg(root)
            .args(extra);
        if json {
            c.arg("--json");
        }
        for m in &maps {
            c.args(["--map", m]);
        }
        run(&mut c)
    };

    let root = tempfile::tempdir().unwrap();
    let doc = json_of(&attempt(root.path(), &[], true), 1);
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains(&third.connector.to_string()), "{error}");
    assert!(
        error.contains("Raw.b") && error.contains("row 2"),
        "{error}"
    );
    assert!(error.contains("no connector was installed"), "{error}");
    assert!(
        doc["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("--accept-unrewritten")
            || error.contains("--accept-unrewritten"),
        "{doc}"
    );
    assert_eq!(
        names(root.path()),
        Vec::<String>::new(),
        "nothing installed"
    );

    // Accepted: every connector installed; the third's report lists what is left.
    let doc = json_of(&attempt(root.path(), &["--accept-unrewritten"], true), 0);
    let reports = doc["restore"]["connectors"].as_array().unwrap();
    assert_eq!(reports.len(), 4);
    for (r, (_, s)) in reports.iter().zip(&conns) {
        assert_eq!(r["old_connector"], s.connector.to_string());
        let rw = &r["rewrite"];
        if s.connector == third.connector {
            assert_eq!(rw["accepted_unrewritten"], true, "{r}");
            let left: Vec<String> = rw["unrewritten"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| format!("{}.{} {}", u["table"], u["column"], u["reason"]))
                .collect();
            assert_eq!(left, vec![r#""Raw"."b" "raw_bytes""#], "{r}");
            assert!(
                r["warnings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|w| w.as_str().unwrap().contains("Raw.b")),
                "{r}"
            );
        } else {
            assert_eq!(rw["accepted_unrewritten"], false, "{r}");
            assert_eq!(rw["unrewritten"], serde_json::json!([]), "{r}");
        }
        assert!(Path::new(r["target"].as_str().unwrap()).is_file());
    }

    // In text: a warning, "OLD IDS LEFT" for the third, "no old id left" for the others.
    let root = tempfile::tempdir().unwrap();
    let out = attempt(root.path(), &["--accept-unrewritten"], false);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("WARNING") && text.contains("NOT rewritten"),
        "{text}"
    );
    assert_eq!(text.matches("OLD IDS LEFT").count(), 1, "{text}");
    assert_eq!(text.matches("no old id left").count(), 3, "{text}");
}
both!(
    restore_hub_refuses_the_whole_hub_when_a_connector_has_ids_it_cannot_rewrite_unless_accepted,
    unrewritable_ids
);

// ---------------------------------------------------------------- kill -9

/// kill -9 at random points of a restore-hub onto the same hub, where two connectors'
/// directories are there (restored in place, the old database kept) and two are not
/// (built in the stage, moved in whole). After each kill every connector is as it was or
/// restored: in place, the old database or the new one verified with the old one kept
/// beside it; new, no directory or a complete one. Stages of killed runs do not pile up,
/// and a run after all the kills succeeds. 20 runs, seed printed (HUBVAULT_SEED replays).
fn killed_at_random_points(tb: &TestBucket) {
    let name = format!("restore_hub_crash_{:?}", tb.kind).to_lowercase();
    let runs = crate::reliability::count(20, 200);
    let mut rng = crate::reliability::rng(&name);
    let root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub(root.path(), 4000);
    for (db, _) in &conns {
        backup(tb, db, false);
    }
    let new_events: Vec<i64> = conns.iter().map(|(db, _)| event_count(db)).collect();
    // Two connectors went on and lost events (their old databases are replaced); two
    // directories are gone (their connectors come back whole).
    let keep = tempfile::tempdir().unwrap();
    let mut pristine = Vec::new();
    for (i, (db, s)) in conns.iter().enumerate() {
        if i < 2 {
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.execute("DELETE FROM Events WHERE rowid % 3 = 0", [])
                .unwrap();
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
            drop(conn);
            let copy = keep.path().join(format!("{}.db", s.connector));
            std::fs::copy(db, &copy).unwrap();
            pristine.push(Some((copy.clone(), sha256_of(&copy))));
        } else {
            pristine.push(None);
        }
    }
    let reset = || {
        for ((db, _), p) in conns.iter().zip(&pristine) {
            let dir = db.parent().unwrap();
            let _ = std::fs::remove_dir_all(dir);
            if let Some((copy, _)) = p {
                std::fs::create_dir(dir).unwrap();
                std::fs::copy(copy, db).unwrap();
            }
        }
        for n in names(root.path()) {
            if n.starts_with(".hubvault-restore-hub") {
                let p = root.path().join(n);
                let _ = std::fs::remove_dir_all(&p);
                let _ = std::fs::remove_file(&p);
            }
        }
    };
    // True if and only if the run has begun its work on disk: the hub's stage, or a work
    // directory beside a database restored in place.
    let work_begun = || {
        names(root.path())
            .iter()
            .any(|n| n.starts_with(".hubvault-restore-hub-"))
            || conns.iter().any(|(db, _)| {
                db.parent().is_some_and(|d| {
                    names(d)
                        .iter()
                        .any(|n| n.starts_with(".sqlite.db.hubvault-restore-"))
                })
            })
    };
    // True if and only if a connector was installed: a new connector's directory or a
    // kept database is there.
    let any_installed = || {
        conns.iter().zip(&pristine).any(|((db, _), p)| {
            let dir = db.parent().unwrap();
            match p {
                None => dir.exists(),
                Some(_) => names(dir)
                    .iter()
                    .any(|n| n.starts_with("sqlite.db.before-restore-")),
            }
        })
    };
    let cmd = || {
        let mut c = restore_hub(tb, datahub, root.path());
        c.arg("--yes");
        c
    };

    reset();
    let t = Instant::now();
    json_of(&run(&mut cmd()), 0);
    let full = t.elapsed();
    let mut window = full.mul_f64(2.0);

    let deadline =
        crate::reliability::Deadline::after(Duration::from_secs(if crate::reliability::long() {
            3600
        } else {
            120
        }));
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut done = 0;
    let mut most_stages = 0;
    for i in 0..runs {
        if deadline.passed() {
            break;
        }
        reset();
        // Half the kills at a random point of the run; one in four as soon as the first
        // connector is installed, so the installs themselves are cut; one in four as soon
        // as the work has begun (a stage or a work directory), so kills before the installs
        // are certain, not left to chance (20 runs are too few for a share to be sure).
        let at_install = i % 4 == 0;
        let at_start = i % 4 == 1;
        let delay = window.mul_f64(rng.random_range(0.0..1.0));
        let started = Instant::now();
        let mut child = cmd()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if at_install || at_start {
            let limit = Instant::now() + full.mul_f64(20.0).max(Duration::from_secs(10));
            let reached = || {
                if at_install {
                    any_installed()
                } else {
                    work_begun()
                }
            };
            while Instant::now() < limit && child.try_wait().unwrap().is_none() && !reached() {
                std::thread::sleep(Duration::from_micros(200));
            }
        } else {
            std::thread::sleep(delay);
        }
        let finished = child.try_wait().unwrap().is_some();
        if finished && !at_install && !at_start {
            window = window
                .min(delay.mul_f64(1.2))
                .max(Duration::from_millis(20));
        } else if !finished {
            child.kill().unwrap(); // SIGKILL
        }
        let delay = started.elapsed();
        let status = child.wait().unwrap();
        if finished {
            assert!(
                status.success(),
                "run {i}: an unkilled restore-hub failed: {status}"
            );
        }
        let mut restored = 0;
        for (((db, s), p), events) in conns.iter().zip(&pristine).zip(&new_events) {
            let dir = db.parent().unwrap();
            let check_new = |why: &str| {
                assert_eq!(integrity(db), "ok", "run {i}: {why}");
                assert_eq!(
                    event_count(db),
                    *events,
                    "run {i}: {why}: neither old nor new"
                );
            };
            match p {
                Some((_, old_sha)) => {
                    assert!(db.exists(), "run {i} (killed after {delay:?}): no database");
                    if &sha256_of(db) != old_sha {
                        check_new("in place");
                        let kept = names(dir).into_iter().any(|n| {
                            n.starts_with("sqlite.db.before-restore-")
                                && !n.ends_with("-wal")
                                && !n.ends_with("-shm")
                                && !n.ends_with("-journal")
                                && &sha256_of(&dir.join(&n)) == old_sha
                        });
                        assert!(
                            kept,
                            "run {i}: the old database of {} was not kept",
                            s.connector
                        );
                        restored += 1;
                    }
                }
                None => {
                    if dir.exists() {
                        assert!(
                            db.exists(),
                            "run {i}: {} is there without its database",
                            dir.display()
                        );
                        let left: Vec<String> = names(dir)
                            .into_iter()
                            .filter(|n| n != "sqlite.db")
                            .collect();
                        assert!(left.is_empty(), "run {i}: {left:?} in a new connector");
                        check_new("new");
                        restored += 1;
                    }
                }
            }
        }
        let stages = names(root.path())
            .iter()
            .filter(|n| n.starts_with(".hubvault-restore-hub-"))
            .count();
        most_stages = most_stages.max(stages);
        let key = match (finished, restored, at_install) {
            (true, _, _) => "finished",
            (false, 0, _) => "killed_none_installed",
            (false, 4, false) => "killed_all_installed",
            (false, 4, true) => "killed_at_install_all_installed",
            (false, _, _) => "killed_during_installs",
        };
        *outcomes.entry(key).or_default() += 1;
        done += 1;
    }
    assert!(done >= runs.min(20), "only {done} runs before the deadline");
    let killed = done - outcomes.get("finished").copied().unwrap_or(0);
    assert!(
        killed * 5 >= done * 2,
        "only {killed} of {done} runs were killed mid-way: {outcomes:?}"
    );
    assert!(
        outcomes.get("killed_none_installed").copied().unwrap_or(0) >= done / 4,
        "too few kills before the installs: {outcomes:?}"
    );
    assert!(most_stages <= 1, "stages pile up");
    // A run after the kills, without resetting the stage it left: succeeds, clears it.
    reset();
    {
        use std::os::unix::fs::DirBuilderExt;
        // As a killed run leaves one: ours, mode 0700, with a connector half built.
        let stale = root.path().join(".hubvault-restore-hub-0000000000000000");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&stale)
            .unwrap();
        let half = stale.join(ConnectorId::random().to_string());
        std::fs::create_dir(&half).unwrap();
        std::fs::write(half.join("sqlite.db"), b"half").unwrap();
    }
    json_of(&run(&mut cmd()), 0);
    let left: Vec<String> = names(root.path())
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    crate::reliability::figures(
        &name,
        serde_json::json!({
            "runs": done,
            "full_restore_hub_ms": full.as_millis() as u64,
            "kill_window_ms": window.as_millis() as u64,
            "outcomes": outcomes,
        }),
    );
}
both!(
    restore_hub_killed_at_random_points_leaves_each_connector_as_it_was_or_restored,
    killed_at_random_points
);

// ---------------------------------------------------------------- old backups

/// Backups made before source.json: the dry run reads metadata and tags from the backup
/// itself; a refusal for a missing map says they are unknown (nothing is downloaded).
fn without_source_json(tb: &TestBucket) {
    let old_root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub(old_root.path(), 20);
    for (db, _) in &conns {
        backup(tb, db, false);
    }
    let b = tb.bucket();
    for (_, s) in &conns {
        let key = format!(
            "acme/datahub/{datahub}/connector/{}/hubvault/source.json",
            s.connector
        );
        crate::common::rt()
            .block_on(b.delete(&object_store::path::Path::from(key.as_str())))
            .unwrap();
    }
    let root = tempfile::tempdir().unwrap();
    let new_hub = DatahubId::random().to_string();
    let out = json_of(
        &run(restore_hub(tb, datahub, root.path()).args(["--to-datahub", &new_hub, "--dry-run"])),
        0,
    );
    for c in out["plan"]["connectors"].as_array().unwrap() {
        assert_eq!(c["create_from"], "download", "{c}");
        assert_eq!(
            c["create"]["metadata"],
            serde_json::json!({"site": "Boston"})
        );
        assert_eq!(c["create"]["tags"], serde_json::json!(["lab"]));
    }
    let out = json_of(
        &run(restore_hub(tb, datahub, root.path()).args(["--to-datahub", &new_hub, "--yes"])),
        2,
    );
    for c in out["plan"]["connectors"].as_array().unwrap() {
        assert_eq!(c["create_from"], "label", "{c}");
        assert!(c["create"]["name"].as_str().is_some_and(|n| !n.is_empty()));
        assert!(c["create"]["tags"].is_null());
    }
    assert!(names(root.path()).is_empty());
}
both!(
    restore_hub_dry_run_reads_metadata_and_tags_from_backups_made_before_source_json,
    without_source_json
);

// ---------------------------------------------------------------- found by the review (2026-11-30, evening)

/// A hub of `hub`'s connectors under `root` (`events` events each), all but the first
/// `keep` removed from it.
fn hub_of(root: &Path, events: usize, keep: usize) -> (DatahubId, Vec<(PathBuf, Spec)>) {
    let (datahub, mut conns) = hub(root, events);
    for (db, _) in conns.drain(keep..) {
        std::fs::remove_dir_all(db.parent().unwrap()).unwrap();
    }
    (datahub, conns)
}

/// A plain backup of each of `conns`.
fn back_up(tb: &TestBucket, conns: &[(PathBuf, Spec)]) {
    for (db, _) in conns {
        backup(tb, db, false);
    }
}

/// A commit of one event (external id `tag`) on `db`.
fn commit_event(db: &Path, tag: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute(
        "INSERT INTO Events (integration, source, externalId, eventType, createdAt, updatedAt)
         SELECT id, json_extract(sources, '$[0]'), ?1, 'MESSAGE_RECEIVED', '2026-11-24', '2026-11-24' FROM Integrations",
        [tag],
    )
    .unwrap();
}

/// A process holding `db` open for reading (up to a minute), returned once it has it
/// open. The caller kills and reaps it.
fn hold_open(db: &Path) -> std::process::Child {
    let mut child = Command::new("sh")
        .args(["-c", "exec 3<\"$1\"; echo open; exec sleep 60", "sh"])
        .arg(db)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the file is open.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    child
}

/// Progress that calls `on` with (connector's index in the plan, stage) at each stage: a
/// test's way to act between the prepare of one connector and the install of all.
struct Hooked<F: Fn(usize, &str) + Send + Sync + 'static> {
    on: std::sync::Arc<F>,
    next: std::sync::atomic::AtomicUsize,
}

struct HookedBar<F: Fn(usize, &str) + Send + Sync + 'static> {
    on: std::sync::Arc<F>,
    index: usize,
}

impl<F: Fn(usize, &str) + Send + Sync + 'static> hubvault::progress::Progress for HookedBar<F> {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
    fn stage(&self, what: &str) {
        (self.on)(self.index, what)
    }
}

impl<F: Fn(usize, &str) + Send + Sync + 'static> hubvault::progress::ProgressSet for Hooked<F> {
    fn item(&self, _: &str) -> Box<dyn hubvault::progress::Progress> {
        let index = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::new(HookedBar {
            on: self.on.clone(),
            index,
        })
    }
}

/// restore-hub through the library, one connector prepared at a time, `on` called at
/// each connector's stages.
fn execute_hooked(
    tb: &TestBucket,
    from: DatahubId,
    to: DatahubId,
    map: Vec<(ConnectorId, ConnectorId)>,
    hub_root: &Path,
    on: impl Fn(usize, &str) + Send + Sync + 'static,
) -> (
    hubvault::ops::restore_hub::HubPlan,
    hubvault::Result<hubvault::ops::restore_hub::HubReport>,
) {
    use hubvault::ops::restore_hub as rh;
    let req = rh::HubRequest {
        org: hubvault::model::ids::OrgSlug::parse("acme").unwrap(),
        from,
        to,
        map,
        exclude: Vec::new(),
        hub_root: hub_root.to_path_buf(),
        at: None,
        db_file: Default::default(),
        parallel: 1,
        accept_unrewritten: false,
    };
    let bucket = tb.bucket();
    let progress = Hooked {
        on: std::sync::Arc::new(on),
        next: std::sync::atomic::AtomicUsize::new(0),
    };
    crate::common::rt().block_on(async {
        let plan = rh::plan(&bucket, &req).await.unwrap();
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        let r = rh::execute(&bucket, &plan, &progress).await;
        (plan, r)
    })
}

/// Onto the same hub, in place: the first connector is prepared (nobody held its
/// database open then), then, while the second is downloaded, a process opens the first's
/// database. restore-hub refuses a connector held open (it has no --force): it must not
/// install that database under the running process, nor any other connector.
fn held_open_after_its_prepare(tb: &TestBucket) {
    let root = tempfile::tempdir().unwrap();
    // Two connectors are enough.
    let (datahub, conns) = hub_of(root.path(), 50, 2);
    back_up(tb, &conns);
    let before: Vec<(String, Vec<String>)> = conns
        .iter()
        .map(|(db, _)| (sha256_of(db), names(db.parent().unwrap())))
        .collect();
    let first_db = conns[0].0.clone();
    let holder: std::sync::Arc<std::sync::Mutex<Option<std::process::Child>>> = Default::default();
    let h = holder.clone();
    let (_, result) = execute_hooked(tb, datahub, datahub, vec![], root.path(), move |i, what| {
        if i == 1 && what == "downloading" {
            *h.lock().unwrap() = Some(hold_open(&first_db));
        }
    });
    let mut child = holder
        .lock()
        .unwrap()
        .take()
        .expect("the holder was started");
    let _ = child.kill();
    let _ = child.wait();
    let e = match result {
        Ok(r) => panic!(
            "restore-hub installed a connector whose database a process held open: {}",
            serde_json::to_string(&r).unwrap()
        ),
        Err(e) => e,
    };
    assert_eq!(e.exit_code(), 1, "{e}");
    assert!(e.to_string().contains("held open"), "{e}");
    assert!(e.to_string().contains("no connector was installed"), "{e}");
    for ((db, _), (sha, listing)) in conns.iter().zip(&before) {
        assert_eq!(&sha256_of(db), sha, "{} changed", db.display());
        assert_eq!(&names(db.parent().unwrap()), listing);
    }
}
both!(
    restore_hub_refuses_a_database_opened_by_a_process_after_its_prepare_and_installs_none,
    held_open_after_its_prepare
);

/// Onto a new hub, the second connector's directory appears while the connectors are
/// prepared (the platform deployed it): the first is installed, the second refused. The
/// error names what is installed, and its advice works: followed to the letter (the
/// directory that appeared moved away, the installed one moved out of the hub root as
/// the error says, the same map), a second run restores the whole hub. A map of the
/// remaining connectors only is no way out: it is refused as unmapped.
fn partial_install_advice(tb: &TestBucket) {
    let old_root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub_of(old_root.path(), 30, 2);
    back_up(tb, &conns);
    let root = tempfile::tempdir().unwrap();
    let new_hub = DatahubId::random();
    let new: Vec<ConnectorId> = conns.iter().map(|_| ConnectorId::random()).collect();
    let map: Vec<(ConnectorId, ConnectorId)> = conns
        .iter()
        .zip(&new)
        .map(|((_, s), n)| (s.connector, *n))
        .collect();
    let squatter = root.path().join(new[1].to_string());
    let sq = squatter.clone();
    let (_, result) = execute_hooked(tb, datahub, new_hub, map, root.path(), move |i, what| {
        if i == 1 && what == "ready" {
            std::fs::create_dir(&sq).unwrap();
        }
    });
    let e = result.expect_err("the second connector's directory appeared");
    let text = e.to_string();
    assert!(
        text.contains(&format!("installed before it: {}", new[0])),
        "{text}"
    );
    assert!(
        !text.contains("with a map of those only"),
        "advice that cannot be followed: {text}"
    );
    assert!(text.contains("move"), "{text}");
    let installed = root.path().join(new[0].to_string());
    assert_eq!(integrity(&installed.join("sqlite.db")), "ok");

    let cmd = |maps: &[(ConnectorId, ConnectorId)]| {
        let mut c = restore_hub(tb, datahub, root.path());
        c.args(["--yes", "--to-datahub", &new_hub.to_string()]);
        for (o, n) in maps {
            c.args(["--map", &format!("{o}={n}")]);
        }
        run(&mut c)
    };
    std::fs::remove_dir(&squatter).unwrap();
    // Only the rest: refused, every connector of the old hub needs its new id.
    json_of(&cmd(&[(conns[1].1.connector, new[1])]), 2);
    // The advice: the installed directory out of the hub root, the same map.
    let aside = tempfile::tempdir().unwrap();
    std::fs::rename(&installed, aside.path().join("moved")).unwrap();
    let full: Vec<(ConnectorId, ConnectorId)> = conns
        .iter()
        .zip(&new)
        .map(|((_, s), n)| (s.connector, *n))
        .collect();
    let out = json_of(&cmd(&full), 0);
    assert_eq!(out["restore"]["connectors"].as_array().unwrap().len(), 2);
    for n in &new {
        assert_eq!(
            integrity(&root.path().join(n.to_string()).join("sqlite.db")),
            "ok"
        );
    }
}
both!(
    restore_hub_cut_off_after_some_installs_names_them_and_gives_advice_that_finishes_the_hub,
    partial_install_advice
);

/// A hostile `source.json` (written by whoever can write the bucket, or read from a
/// connector's own database by the backup): control characters in its name and type
/// (a terminal's escape sequences, a carriage return) never reach the operator's
/// terminal as they are, in the plan, the list of what to create, or the report.
fn hostile_source_json(tb: &TestBucket) {
    let root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub_of(root.path(), 10, 1);
    let (db, spec) = &conns[0];
    backup(tb, db, false);
    let key = format!(
        "acme/datahub/{datahub}/connector/{}/hubvault/source.json",
        spec.connector
    );
    let hostile = serde_json::json!({
        "name": "\u{1b}[2K\rall connectors restored, no old id left\u{1b}[8m",
        "type": "\u{1b}]0;owned\u{7}sdc\u{9b}2J",
        "metadata": {"site": "\u{1b}[31m"},
        "tags": ["\r"],
    });
    crate::common::rt()
        .block_on(tb.bucket().put_bytes(
            &object_store::path::Path::from(key.as_str()),
            serde_json::to_vec(&hostile).unwrap(),
            hubvault::store::WriteMode::Overwrite,
        ))
        .unwrap();
    let clean = |o: &Output, what: &str| {
        for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{what}: a control character reached {stream}: {text:?}"
            );
        }
    };
    let text_cmd = || {
        let mut c = tb.cmd();
        c.args(["restore-hub", "--datahub", &datahub.to_string()])
            .arg("--hub-root")
            .arg(root.path());
        c
    };
    let out = run(text_cmd().arg("--dry-run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    clean(&out, "--dry-run");
    let out = run(text_cmd().args(["--yes", "--to-datahub", &DatahubId::random().to_string()]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    clean(&out, "the refusal for a missing map");
    let out = run(text_cmd().arg("--yes"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    clean(&out, "the report");
}
both!(
    restore_hub_never_prints_the_control_characters_of_a_hostile_source_json,
    hostile_source_json
);

/// The `--then` hook cannot even be started (no `sh` on the PATH): every connector is
/// installed by then, and the error says so (under --json, with the report of what was
/// installed), never leaving the operator to believe nothing was restored.
fn hook_not_started(tb: &TestBucket) {
    let root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub_of(root.path(), 10, 2);
    back_up(tb, &conns);
    let no_path = tempfile::tempdir().unwrap();
    let out = run(restore_hub(tb, datahub, root.path())
        .args(["--yes", "--then", "true"])
        .env("PATH", no_path.path()));
    let doc = json_of(&out, 1);
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("IS installed"), "{doc}");
    assert_eq!(
        doc["restore"]["connectors"].as_array().map(Vec::len),
        Some(2),
        "{doc}"
    );
    for (db, _) in &conns[..2] {
        assert!(
            names(db.parent().unwrap())
                .iter()
                .any(|n| n.contains("before-restore")),
            "{} was not restored",
            db.display()
        );
    }
}
both!(
    restore_hub_whose_hook_cannot_start_says_every_connector_is_installed,
    hook_not_started
);

/// The hub died during a new connector's first backup: its version's data landed, its
/// manifest did not (nothing of it is restorable, nothing vouches for those bytes).
/// restore-hub refuses the hub naming that connector (exit 1, nothing written), and its
/// advice is one that works: no `--at` can help, and what it says to do (remove what is
/// left of that connector, then run again) restores the others.
fn nothing_restorable(tb: &TestBucket) {
    let old_root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub_of(old_root.path(), 10, 3);
    back_up(tb, &conns);
    let cut = &conns[2].1;
    let prefix = format!("acme/datahub/{datahub}/connector/{}/", cut.connector);
    let b = tb.bucket();
    for (key, _) in tb.keys(&prefix) {
        if !key.ends_with(".db.zst") {
            crate::common::rt()
                .block_on(b.delete(&object_store::path::Path::from(key.as_str())))
                .unwrap();
        }
    }
    assert_eq!(tb.keys(&prefix).len(), 1, "only the version's data is left");
    let root = tempfile::tempdir().unwrap();
    let out = run(restore_hub(tb, datahub, root.path()).arg("--yes"));
    let doc = json_of(&out, 1);
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains(&cut.connector.to_string()),
        "{doc}"
    );
    let hint = doc["hint"].as_str().unwrap();
    assert!(
        !hint.contains("pick a later --at"),
        "no --at restores it: {hint}"
    );
    assert!(hint.contains(prefix.trim_end_matches('/')), "{hint}");
    assert!(names(root.path()).is_empty());
    // The advice: what is left of it removed, then the same command.
    for (key, _) in tb.keys(&prefix) {
        crate::common::rt()
            .block_on(b.delete(&object_store::path::Path::from(key.as_str())))
            .unwrap();
    }
    let out = json_of(&run(restore_hub(tb, datahub, root.path()).arg("--yes")), 0);
    assert_eq!(out["restore"]["connectors"].as_array().unwrap().len(), 2);
}
both!(
    restore_hub_refusing_a_connector_with_nothing_restorable_gives_advice_that_works,
    nothing_restorable
);

/// Two connectors under continuous capture: A commits once and is idle after, B goes on
/// committing. A's state at the common instant is its newest (nothing happened to it
/// since its last commit): the report must not call it behind its newest, as it does not
/// for an idle connector backed up unchanged.
fn idle_connector_under_capture(tb: &TestBucket) {
    let root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub_of(root.path(), 20, 2);
    let (a, b) = (&conns[0], &conns[1]);
    let (agent, _rx) = crate::continuous::agent_past_its_base(tb, root.path());
    let mut agent = crate::continuous::Reaped(agent);
    commit_event(&a.0, "a-once");
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        commit_event(&b.0, &format!("b-{i}"));
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(3));
    crate::continuous::sigterm_and_wait(&mut agent.0);
    let a_events = event_count(&a.0);

    let new_root = tempfile::tempdir().unwrap();
    let new_hub = DatahubId::random();
    let mut c = restore_hub(tb, datahub, new_root.path());
    c.args(["--yes", "--to-datahub", &new_hub.to_string()]);
    let mut news = Vec::new();
    for (_, s) in [a, b] {
        let n = ConnectorId::random();
        c.args(["--map", &format!("{}={n}", s.connector)]);
        news.push(n);
    }
    let out = json_of(&run(&mut c), 0);
    let reports = out["restore"]["connectors"].as_array().unwrap();
    let rep_a = reports
        .iter()
        .find(|r| r["old_connector"] == a.1.connector.to_string())
        .unwrap();
    assert!(rep_a["continuous"].is_object(), "{rep_a}");
    let target = new_root.path().join(news[0].to_string()).join("sqlite.db");
    assert_eq!(
        event_count(&target),
        a_events,
        "A is not at its newest: {rep_a}"
    );
    assert_eq!(
        rep_a["behind_newest_seconds"], 0.0,
        "A is at its newest state, yet reported behind it: {rep_a}"
    );
}
both!(
    restore_hub_does_not_call_an_idle_connector_under_capture_behind_its_newest,
    idle_connector_under_capture
);

/// `--at` later than a connector's newest restorable state (a typo of a year, or a
/// connector whose capture stopped before the instant): nothing tells its state at that
/// instant, so it cannot be claimed at it. The report says so for each such connector,
/// rather than calling the hub restored at one instant without a word.
fn at_past_the_newest(tb: &TestBucket) {
    let old_root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub_of(old_root.path(), 10, 2);
    back_up(tb, &conns);
    let root = tempfile::tempdir().unwrap();
    let mut c = restore_hub(tb, datahub, root.path());
    c.args(["--yes", "--at", "2099-01-01T00:00:00Z"])
        .args(["--to-datahub", &DatahubId::random().to_string()]);
    for (_, s) in &conns[..2] {
        c.args([
            "--map",
            &format!("{}={}", s.connector, ConnectorId::random()),
        ]);
    }
    let out = json_of(&run(&mut c), 0);
    let r = &out["restore"];
    assert_eq!(r["instant_chosen_by"], "--at", "{r}");
    for rep in r["connectors"].as_array().unwrap() {
        let warned = rep["warnings"].as_array().unwrap().iter().any(|w| {
            w.as_str()
                .unwrap()
                .contains("after its newest restorable state")
        });
        assert!(warned, "restored at {} without a word: {rep}", r["instant"]);
    }
}
both!(
    restore_hub_at_an_instant_past_a_connectors_newest_state_says_so_for_that_connector,
    at_past_the_newest
);

/// A under continuous capture until the agent stops; seconds later A changes and a plain
/// backup keeps it (version VA, A's newest state). B has plain backups only, one before
/// and one after VA. The newest common instant is VA's: A's state then is VA, not the
/// older state the stream ended with (the stream holds nothing after it: capture had
/// stopped, however recently).
fn stream_then_version_within_a_minute(tb: &TestBucket) {
    let root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub_of(root.path(), 20, 2);
    let (a, b) = (&conns[0], &conns[1]);
    // B is not under capture: outside the hub root the agent watches.
    let elsewhere = tempfile::tempdir().unwrap();
    let b_db = elsewhere.path().join("sqlite.db");
    std::fs::rename(&b.0, &b_db).unwrap();
    let _ = std::fs::rename(b.0.with_extension("db-wal"), b_db.with_extension("db-wal"));
    std::fs::remove_dir_all(b.0.parent().unwrap()).unwrap();
    backup(tb, &b_db, false);
    {
        let (agent, _rx) = crate::continuous::agent_past_its_base(tb, root.path());
        let mut agent = crate::continuous::Reaped(agent);
        commit_event(&a.0, "captured");
        std::thread::sleep(Duration::from_secs(3));
        crate::continuous::sigterm_and_wait(&mut agent.0);
    }
    commit_event(&a.0, "after-capture");
    let va = backup(tb, &a.0, true);
    assert_eq!(va["new_version"], true, "{va}");
    let a_events = event_count(&a.0);
    std::thread::sleep(Duration::from_millis(1100));
    commit_event(&b_db, "b-later");
    backup(tb, &b_db, true);

    let new_root = tempfile::tempdir().unwrap();
    let new_a = ConnectorId::random();
    let mut c = restore_hub(tb, datahub, new_root.path());
    c.args(["--yes", "--to-datahub", &DatahubId::random().to_string()])
        .args(["--map", &format!("{}={new_a}", a.1.connector)])
        .args([
            "--map",
            &format!("{}={}", b.1.connector, ConnectorId::random()),
        ]);
    let out = json_of(&run(&mut c), 0);
    let r = &out["restore"];
    assert_eq!(r["instant_chosen_by"], "newest common", "{r}");
    let target = new_root.path().join(new_a.to_string()).join("sqlite.db");
    assert_eq!(
        event_count(&target),
        a_events,
        "A is not its state at the instant (its version {}): {r}",
        va["version"]
    );
}
both!(
    restore_hub_gives_a_connector_its_version_taken_just_after_its_capture_stopped,
    stream_then_version_within_a_minute
);

/// A connector whose database a process holds open when restore-hub starts: refused
/// (exit 1), nothing changed, and the hint is one restore-hub can follow (it has no
/// `--force`, which `restore`'s refusal offers).
fn held_open_from_the_start(tb: &TestBucket) {
    let root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub_of(root.path(), 20, 2);
    back_up(tb, &conns);
    let before: Vec<String> = conns.iter().map(|(db, _)| sha256_of(db)).collect();
    let mut holder = hold_open(&conns[1].0);
    let out = run(restore_hub(tb, datahub, root.path()).arg("--yes"));
    let _ = holder.kill();
    let _ = holder.wait();
    let doc = json_of(&out, 1);
    assert!(
        doc["error"].as_str().unwrap().contains("held open"),
        "{doc}"
    );
    let hint = doc["hint"].as_str().unwrap();
    assert!(
        !hint.contains("--force"),
        "restore-hub has no --force: {hint}"
    );
    assert!(hint.contains("stop the connectors"), "{hint}");
    for ((db, _), sha) in conns.iter().zip(&before) {
        assert_eq!(&sha256_of(db), sha, "{} changed", db.display());
    }
}
both!(
    restore_hub_refusing_a_database_held_open_gives_a_hint_it_can_follow,
    held_open_from_the_start
);

/// A connector removed from the hub days ago keeps its old backups in the bucket. Without
/// `--at`, the newest common instant would be its last state, and every other connector
/// would be restored days back: refused instead (exit 1, nothing written), naming it, with
/// a hint that gives both ways on. `--exclude` leaves it out and the others come back at
/// their newest; `--at` the instant the hint names restores every connector there, as
/// asked. Here connector 1 was last captured at 10:00 three days ago (a manual clock),
/// connector 0 backed up now.
fn held_back(tb: &TestBucket) {
    let (_rng, bucket, hub, dbs, datahub, t0, clock, rt) =
        crate::stream_races::one_hub(tb, "held_back");
    drop(crate::stream_races::started_capture(
        &rt,
        &bucket,
        hub.path(),
        &clock,
    ));
    backup(tb, &dbs[0].path, true);
    let (kept, gone) = (&dbs[0].spec.connector, &dbs[1].spec.connector);

    let new_root = tempfile::tempdir().unwrap();
    let out = run(restore_hub(tb, datahub, new_root.path()).arg("--yes"));
    let doc = json_of(&out, 1);
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("connector {gone}")) && error.contains("newest state is from"),
        "{doc}"
    );
    assert!(!error.contains(&format!("connector {kept}")), "{doc}");
    let hint = doc["hint"].as_str().unwrap();
    assert!(hint.contains(&format!("--exclude {gone}")), "{hint}");
    let at = hint.rsplit("--at ").next().unwrap().trim();
    let at_time =
        chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("{hint}: {e}"));
    assert!(
        at_time >= t0 && at_time < t0 + chrono::TimeDelta::hours(1),
        "{hint}"
    );
    assert!(
        names(new_root.path()).is_empty(),
        "refused, yet something was written"
    );

    // An --exclude the hub does not have, or one the map names too: exit 2, nothing done.
    let stranger = ConnectorId::random();
    let out = run(restore_hub(tb, datahub, new_root.path()).args([
        "--yes",
        "--exclude",
        &stranger.to_string(),
    ]));
    let doc = json_of(&out, 2);
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains(&format!("--exclude {stranger}")),
        "{doc}"
    );
    let out = run(restore_hub(tb, datahub, new_root.path()).args([
        "--yes",
        "--exclude",
        &gone.to_string(),
        "--map",
        &format!("{gone}={gone}"),
    ]));
    let doc = json_of(&out, 2);
    assert!(
        doc["error"].as_str().unwrap().contains("both left out"),
        "{doc}"
    );
    assert!(names(new_root.path()).is_empty());

    // Left out: the other connector at its newest (its backup of now), nothing of it.
    let out = run(restore_hub(tb, datahub, new_root.path()).args([
        "--yes",
        "--exclude",
        &gone.to_string(),
    ]));
    let doc = json_of(&out, 0);
    let r = &doc["restore"];
    assert_eq!(r["connectors"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(names(new_root.path()), vec![kept.to_string()], "{r}");
    let restored = new_root.path().join(kept.to_string()).join("sqlite.db");
    assert_eq!(tables(&restored, &[]), tables(&dbs[0].path, &[]), "{r}");

    // `--at now`, as the hint offers: each at its newest (the one behind with a warning
    // that its state at the instant is not known).
    let now_root = tempfile::tempdir().unwrap();
    assert!(hint.contains("--at now"), "{hint}");
    let out = run(restore_hub(tb, datahub, now_root.path()).args(["--yes", "--at", "now"]));
    let doc = json_of(&out, 0);
    let restored = now_root.path().join(kept.to_string()).join("sqlite.db");
    assert_eq!(tables(&restored, &[]), tables(&dbs[0].path, &[]), "{doc}");
    let behind = (doc["restore"]["connectors"].as_array().unwrap().iter())
        .find(|c| c["old_connector"] == gone.to_string())
        .unwrap();
    assert!(
        behind["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("not known")),
        "{doc}"
    );

    // At the instant the hint names: both, each at its state then.
    let other_root = tempfile::tempdir().unwrap();
    let out = run(restore_hub(tb, datahub, other_root.path()).args(["--yes", "--at", at]));
    let doc = json_of(&out, 0);
    assert_eq!(
        doc["restore"]["connectors"].as_array().unwrap().len(),
        2,
        "{doc}"
    );
    let mut want = vec![kept.to_string(), gone.to_string()];
    want.sort();
    assert_eq!(names(other_root.path()), want);
}
both!(
    restore_hub_refuses_an_instant_held_back_days_by_a_removed_connector_and_exclude_leaves_it_out,
    held_back
);

/// The held-back refusal holds when the default instant is the "first common" one too. A
/// connector removed days ago (captured at 10:00 three days ago, nothing since) and one
/// added since (its first backup now) make the earliest instant at which every connector
/// has a state the new one's first backup: the newest of the hub's others (backed up a
/// moment later, with a row added since the capture) would be restored as it was three
/// days ago, with no word of it. Refused instead (exit 1, nothing written), naming the
/// removed connector, as for the newest common instant.
fn held_back_first_common(tb: &TestBucket) {
    let (_rng, bucket, hub, dbs, datahub, _t0, clock, rt) =
        crate::stream_races::one_hub(tb, "held_back_first_common");
    drop(crate::stream_races::started_capture(
        &rt,
        &bucket,
        hub.path(),
        &clock,
    ));
    let (kept, gone) = (&dbs[0], &dbs[1].spec.connector);
    // Added to the hub after the removal: its first backup now.
    let added_dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("solace", "added since", 5);
    spec.datahub = datahub;
    let added = added_dir.path().join("sqlite.db");
    fixture::create(&added, &spec).unwrap();
    backup(tb, &added, true);
    // The long-lived connector, changed since the capture and backed up after it.
    let conn = rusqlite::Connection::open(&kept.path).unwrap();
    conn.execute(
        "INSERT INTO cdc_rows VALUES (424242, 'since the capture')",
        [],
    )
    .unwrap();
    drop(conn);
    backup(tb, &kept.path, true);

    let new_root = tempfile::tempdir().unwrap();
    let out = run(restore_hub(tb, datahub, new_root.path()).arg("--yes"));
    let doc = json_of(&out, 1);
    let error = doc["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("connector {gone}")) && error.contains("newest state is from"),
        "{doc}"
    );
    assert!(
        names(new_root.path()).is_empty(),
        "refused, yet something was written"
    );
}
both!(
    restore_hub_refuses_a_first_common_instant_held_back_days_by_a_removed_connector,
    held_back_first_common
);

/// One connector's history holds a version stamped a year ahead (its host's clock was set
/// a year forward for a while, put right since; or a stranger's key). The held-back
/// refusal measures every other connector against it: each would be "a year behind the
/// newest of the hub's others", the plan refused with their own ids as the ones to
/// leave out. A key stamped past any clock S3 accepts requests from is no state of now
/// (as `serve` takes it): the plan stands, every connector in it, no problem.
fn held_back_by_a_future_stamp(tb: &TestBucket) {
    let root = tempfile::tempdir().unwrap();
    let (datahub, conns) = hub_of(root.path(), 10, 3);
    back_up(tb, &conns);
    let ahead = chrono::Utc::now() + chrono::TimeDelta::days(365);
    let id = hubvault::model::layout::VersionId::new(ahead, &format!("{:064x}", 7));
    let ck = hubvault::model::layout::ConnectorKey::new(
        hubvault::model::ids::OrgSlug::parse("acme").unwrap(),
        datahub,
        conns[0].1.connector,
    );
    crate::common::rt().block_on(async {
        let b = tb.bucket();
        for key in [ck.version_data(&id), ck.version_manifest(&id)] {
            b.put_bytes(&key, b"{}".to_vec(), hubvault::store::WriteMode::Overwrite)
                .await
                .unwrap();
        }
    });
    let new_root = tempfile::tempdir().unwrap();
    let out = run(restore_hub(tb, datahub, new_root.path()).arg("--dry-run"));
    let doc = json_of(&out, 0);
    let plan = &doc["plan"];
    assert_eq!(plan["problems"].as_array().map(Vec::len), Some(0), "{doc}");
    assert_eq!(
        plan["connectors"].as_array().map(Vec::len),
        Some(3),
        "{doc}"
    );
}
both!(
    restore_hub_is_not_held_back_by_a_version_stamped_a_year_ahead,
    held_back_by_a_future_stamp
);

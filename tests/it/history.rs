//! Backup history: versions, unchanged databases, retention (issue 4), on both backends.

use std::collections::BTreeSet;

use hubvault::model::layout::{ConnectorKey, VersionId};
use hubvault::store::bucket::WriteMode;

use crate::both;
use crate::common::{TestBucket, connector_db, json_of, rows, rt, run};

fn backup(tb: &TestBucket, db: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    json_of(
        &run(tb
            .cmd()
            .args(["backup", "--json", "--db"])
            .arg(db)
            .args(extra)),
        0,
    )
}

fn ck_of(spec: &crate::fixture::Spec) -> ConnectorKey {
    ConnectorKey::new(
        hubvault::model::ids::OrgSlug::parse("acme").unwrap(),
        spec.datahub,
        spec.connector,
    )
}

/// Writes placeholder versions (data + manifest keys) at the given UTC times: prune
/// decides from keys alone, so the bodies do not matter.
fn seed_versions(
    tb: &TestBucket,
    ck: &ConnectorKey,
    times: &[&str],
    with_manifest: bool,
) -> Vec<VersionId> {
    let b = tb.bucket();
    rt().block_on(async {
        let mut ids = Vec::new();
        for (i, t) in times.iter().enumerate() {
            let at = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M")
                .unwrap()
                .and_utc();
            let id = VersionId::new(at, &format!("{:064x}", i + 1));
            b.put_bytes(
                &ck.version_data(&id),
                b"zstd".to_vec(),
                WriteMode::Overwrite,
            )
            .await
            .unwrap();
            if with_manifest {
                b.put_bytes(
                    &ck.version_manifest(&id),
                    b"{}".to_vec(),
                    WriteMode::Overwrite,
                )
                .await
                .unwrap();
            }
            ids.push(id);
        }
        ids
    })
}

fn version_keys(tb: &TestBucket, ck: &ConnectorKey) -> BTreeSet<String> {
    tb.keys(ck.versions_dir().as_ref())
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn dry_run_lists_exactly_what_prune_deletes(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    // Only seeded versions: a real backup's id is today's, and which of the seeded ones
    // the rules keep beside it would depend on the day the test runs.
    let (_db, spec) = connector_db(hub.path(), "sdc", 100);
    let ck = ck_of(&spec);
    // Gaps, several on one day, a month and a year boundary.
    seed_versions(
        tb,
        &ck,
        &[
            "2026-11-20 23:00",
            "2026-11-20 08:00",
            "2026-11-19 12:00",
            "2026-11-01 00:30",
            "2026-10-31 23:30",
            "2026-10-15 10:00",
            "2026-01-01 00:00",
            "2025-12-31 23:59",
        ],
        true,
    );
    let before = version_keys(tb, &ck);
    let flags = [
        "--keep-daily",
        "3",
        "--keep-monthly",
        "2",
        "--datahub",
        &spec.datahub.to_string(),
        "--connector",
        &spec.connector.to_string(),
    ];
    let dry = json_of(
        &run(tb.cmd().args(["prune", "--json", "--dry-run"]).args(flags)),
        0,
    );
    assert_eq!(version_keys(tb, &ck), before, "a dry run deletes nothing");
    let planned: Vec<String> = dry["connectors"][0]["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert!(!planned.is_empty());
    let real = json_of(&run(tb.cmd().args(["prune", "--json"]).args(flags)), 0);
    let deleted: Vec<String> = real["connectors"][0]["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(planned, deleted);
    assert_eq!(
        real["objects_deleted"].as_u64().unwrap() as usize,
        deleted.len()
    );
    let after = version_keys(tb, &ck);
    let expected: BTreeSet<String> = before
        .difference(&deleted.iter().cloned().collect())
        .cloned()
        .collect();
    assert_eq!(after, expected);
    // restic's rules: daily keeps 11-20 23:00, 11-19 and 11-01; monthly keeps the newest
    // of November (11-20 23:00) and of October (10-31 23:30).
    let kept: Vec<String> = after
        .iter()
        .filter(|k| k.ends_with(".json"))
        .map(|k| k.rsplit('/').next().unwrap()[..13].to_string())
        .collect();
    assert!(kept.contains(&"20261120T2300".to_string()), "{kept:?}");
    assert!(kept.contains(&"20261119T1200".to_string()), "{kept:?}");
    assert!(kept.contains(&"20261101T0030".to_string()), "{kept:?}");
    assert!(kept.contains(&"20261031T2330".to_string()), "{kept:?}");
    assert!(!kept.contains(&"20261120T0800".to_string()), "{kept:?}");
    assert!(!kept.contains(&"20251231T2359".to_string()), "{kept:?}");
    assert_eq!(kept.len(), 4, "{kept:?}");
}
both!(
    prune_dry_run_lists_exactly_what_prune_then_deletes,
    dry_run_lists_exactly_what_prune_deletes
);

fn prune_spares_canonical_and_newest(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "solace", 100);
    let ck = ck_of(&spec);
    // The real backup is the newest; older placeholder versions around it.
    seed_versions(tb, &ck, &["2026-01-02 00:00", "2026-01-01 00:00"], true);
    let current = backup(tb, &db, &[]);
    let out = run(tb.cmd().args(["prune", "--json", "--keep-last", "0"]));
    let doc = json_of(&out, 0);
    assert_eq!(doc["versions_removed"], 2, "{doc}");
    let left = version_keys(tb, &ck);
    let v = current["version"].as_str().unwrap();
    assert!(
        left.iter().any(|k| k.ends_with(&format!("{v}.db.zst"))),
        "{left:?}"
    );
    assert!(
        left.iter().any(|k| k.ends_with(&format!("{v}.json"))),
        "{left:?}"
    );
    assert_eq!(left.len(), 2, "{left:?}");
    let all: Vec<String> = tb.keys("acme").into_iter().map(|(k, _)| k).collect();
    assert!(all.contains(&ck.canonical(&Default::default()).to_string()));
    assert!(all.contains(&ck.latest_manifest().to_string()));
    // Without any rule, prune refuses rather than guessing.
    let out = run(tb.cmd().args(["prune"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::common::stderr(&out).contains("--keep-last"));
}
both!(
    prune_never_removes_the_canonical_object_or_the_newest_version,
    prune_spares_canonical_and_newest
);

fn incomplete_versions_go_after_a_day(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 50);
    backup(tb, &db, &[]);
    let ck = ck_of(&spec);
    let now = chrono::Utc::now();
    let recent = (now - chrono::TimeDelta::hours(2))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let old = seed_versions(tb, &ck, &["2026-01-01 00:00"], false);
    let fresh = seed_versions(tb, &ck, &[&recent], false);
    // Old by the bucket's record too (a local directory's objects can be aged, S3's
    // cannot: there the old one is just written, and stays; see
    // `incomplete_version_just_written_under_an_old_id`).
    if let Some(dir) = &tb.dir {
        set_mtime(
            &dir.path().join(ck.version_data(&old[0]).as_ref()),
            std::time::Duration::from_secs(25 * 3600),
        );
    }
    let doc = json_of(
        &run(tb.cmd().args(["prune", "--json", "--keep-last", "5"])),
        0,
    );
    let left = version_keys(tb, &ck);
    if tb.dir.is_some() {
        assert_eq!(
            doc["connectors"][0]["incomplete"],
            serde_json::json!([old[0].to_string()]),
            "{doc}"
        );
        assert!(!left.iter().any(|k| k.contains(old[0].as_str())));
    }
    assert!(
        left.iter().any(|k| k.contains(fresh[0].as_str())),
        "a backup may be writing it now"
    );
}
both!(
    prune_removes_incomplete_versions_only_once_they_are_a_day_old,
    incomplete_versions_go_after_a_day
);

fn unchanged_db_refreshes_clock_without_new_version(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "hrb-cellario", 300);
    let ck = ck_of(&spec);
    let first = backup(tb, &db, &[]);
    let head = |tb: &TestBucket| {
        let b = tb.bucket();
        rt().block_on(async {
            b.head(&ck.canonical(&Default::default()))
                .await
                .unwrap()
                .unwrap()
        })
    };
    let t1 = head(tb).last_modified;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = backup(tb, &db, &["--force"]);
    assert_eq!(again["new_version"], false, "{again}");
    assert_eq!(again["version"], first["version"]);
    assert_eq!(again["sha256"], first["sha256"]);
    assert!(
        head(tb).last_modified > t1,
        "the canonical object must be refreshed for the 24h rule"
    );
    assert_eq!(
        version_keys(tb, &ck).len(),
        2,
        "still one version (data + manifest)"
    );
    let text = run(tb.cmd().args(["backup", "--force", "--db"]).arg(&db));
    assert!(
        crate::common::stdout(&text).contains("no new version"),
        "{}",
        crate::common::stdout(&text)
    );
    // A change makes a new version.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("INSERT INTO SequelizeMeta VALUES ('x')", [])
        .unwrap();
    let changed = backup(tb, &db, &["--force"]);
    assert_eq!(changed["new_version"], true);
    assert_eq!(version_keys(tb, &ck).len(), 4);
}
both!(
    an_unchanged_database_writes_no_new_version_and_still_refreshes_the_24h_clock,
    unchanged_db_refreshes_clock_without_new_version
);

fn versions_lists_history(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "idbs-eworkbook", 100);
    let mut shas = Vec::new();
    for i in 0..3 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("INSERT INTO SequelizeMeta VALUES (?1)", [format!("m{i}")])
            .unwrap();
        shas.push(
            backup(tb, &db, &["--force"])["sha256"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let args = [
        "versions",
        "--json",
        "--datahub",
        &spec.datahub.to_string(),
        "--connector",
        &spec.connector.to_string(),
    ];
    let doc = json_of(&run(tb.cmd().args(args)), 0);
    let vs = doc["versions"].as_array().unwrap();
    assert_eq!(vs.len(), 3);
    let listed: Vec<&str> = vs.iter().map(|v| v["sha256"].as_str().unwrap()).collect();
    shas.reverse();
    assert_eq!(listed, shas, "newest first");
    assert_eq!(vs[0]["current"], true);
    assert_eq!(vs[1]["current"], false);
    assert_eq!(vs[0]["events"], 100);
    assert!(vs[0]["size"].as_u64().unwrap() > vs[0]["stored_size"].as_u64().unwrap());
    let text = crate::common::stdout(&run(tb.cmd().args(&args[..1]).args(&args[2..])));
    assert!(
        text.contains("= canonical") && text.contains(&shas[0][..16]),
        "{text}"
    );
}
both!(
    versions_lists_every_kept_version_newest_first_with_size_and_sha256,
    versions_lists_history
);

fn backup_applies_retention(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 50);
    let ck = ck_of(&spec);
    let mut last = serde_json::Value::Null;
    for i in 0..4 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("INSERT INTO SequelizeMeta VALUES (?1)", [format!("r{i}")])
            .unwrap();
        last = backup(tb, &db, &["--force", "--keep-last", "2"]);
    }
    assert_eq!(last["pruned"], 1, "{last}");
    assert_eq!(
        version_keys(tb, &ck).len(),
        4,
        "two versions, data + manifest each"
    );
    // The canonical object is still the newest database.
    let dl = tempfile::tempdir().unwrap();
    crate::common::download_with_foreign_client(
        tb,
        ck.canonical(&Default::default()).as_ref(),
        &dl.path().join("x.db"),
    );
    assert_eq!(
        rows(&dl.path().join("x.db"), "SequelizeMeta"),
        rows(&db, "SequelizeMeta")
    );
}
both!(
    backup_applies_the_retention_policy_after_each_upload,
    backup_applies_retention
);

fn prune_keeps_the_drill_verified_version(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 50);
    let ck = ck_of(&spec);
    let verified = backup(tb, &db, &[])["version"]
        .as_str()
        .unwrap()
        .to_string();
    json_of(&run(tb.cmd().args(["verify", "--json"])), 0);
    let mut versions = vec![verified.clone()];
    for i in 0..2 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("INSERT INTO SequelizeMeta VALUES (?1)", [format!("d{i}")])
            .unwrap();
        versions.push(
            backup(tb, &db, &["--force"])["version"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let doc = json_of(
        &run(tb.cmd().args(["prune", "--json", "--keep-last", "1"])),
        0,
    );
    let left = version_keys(tb, &ck);
    let has = |v: &str| left.iter().any(|k| k.contains(v));
    assert!(has(&versions[2]), "newest: {left:?}");
    assert!(
        has(&verified),
        "the newest drill-verified version is protected: {doc}"
    );
    assert!(!has(&versions[1]), "{left:?}");
}
both!(
    prune_never_removes_the_newest_version_a_drill_verified,
    prune_keeps_the_drill_verified_version
);

/// One drill record stamped years ahead (a clock off by years, or anyone who can write
/// under the connector) stood, for `prune`, for the newest successful drill: the version
/// the real drill verified lost its protection and was pruned. `status` already leaves
/// such a record out.
fn prune_keeps_the_drill_verified_version_beside_a_drill_stamped_ahead(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 50);
    let ck = ck_of(&spec);
    let verified = backup(tb, &db, &[])["version"]
        .as_str()
        .unwrap()
        .to_string();
    json_of(&run(tb.cmd().args(["verify", "--json"])), 0);
    rt().block_on(tb.bucket().put_bytes(
        &ck.drill("20990101T000000.000Z", true),
        b"{}".to_vec(),
        WriteMode::Overwrite,
    ))
    .unwrap();
    for i in 0..2 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("INSERT INTO SequelizeMeta VALUES (?1)", [format!("f{i}")])
            .unwrap();
        backup(tb, &db, &["--force"]);
    }
    let doc = json_of(
        &run(tb.cmd().args(["prune", "--json", "--keep-last", "1"])),
        0,
    );
    let left = version_keys(tb, &ck);
    assert!(
        left.iter().any(|k| k.contains(&verified)),
        "the newest drill-verified version is protected: {doc}"
    );
}
both!(
    prune_protects_the_drill_verified_version_whatever_a_drill_stamped_years_ahead_says,
    prune_keeps_the_drill_verified_version_beside_a_drill_stamped_ahead
);

fn config_retention_applies_to_backup_and_agent(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "solace", 50);
    let ck = ck_of(&spec);
    let conf = hub.path().join("hubvault.toml");
    std::fs::write(&conf, "[retention]\nkeep_last = 1\n").unwrap();
    let change = |tag: &str| {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("INSERT INTO SequelizeMeta VALUES (?1)", [tag])
            .unwrap();
    };
    backup(tb, &db, &["--config", conf.to_str().unwrap()]);
    change("c1");
    let r = backup(tb, &db, &["--force", "--config", conf.to_str().unwrap()]);
    assert_eq!(
        r["pruned"], 1,
        "backup applies [retention] from the file: {r}"
    );
    assert_eq!(version_keys(tb, &ck).len(), 2);
    change("c2");
    let out = run(tb
        .cmd()
        .args([
            "agent",
            "--once",
            "--max-age",
            "0s",
            "--config",
            conf.to_str().unwrap(),
            "--hub-root",
        ])
        .arg(hub.path()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::common::stderr(&out)
    );
    let left = version_keys(tb, &ck);
    assert_eq!(
        left.len(),
        2,
        "the agent applies [retention] after its upload: {left:?}"
    );
    assert!(
        !left
            .iter()
            .any(|k| k.contains(r["version"].as_str().unwrap())),
        "{left:?}"
    );
}
both!(
    retention_from_the_config_file_is_applied_by_backup_and_agent,
    config_retention_applies_to_backup_and_agent
);

fn set_mtime(path: &std::path::Path, ago: std::time::Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - ago)
        .unwrap();
}

/// A killed upload into a local-directory bucket leaves `{key}#{n}` beside the key, which
/// no LIST or GET shows. `prune` (and the agent, after each backup of that connector)
/// removes those a day old, and only those: not a fresh one (an upload under way), not a
/// link with a staging name, not a listed object. Local only: S3 has no such files (a
/// killed multipart upload's parts are a lifecycle rule's, docs/AGENT.md).
#[test]
fn prune_removes_the_staging_files_killed_uploads_left_a_day_ago_and_nothing_else() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 20);
    backup(&tb, &db, &[]);
    let ck = ck_of(&spec);
    let root = tb.dir.as_ref().unwrap().path().to_path_buf();
    let canonical = tb
        .keys(ck.prefix().as_ref())
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.ends_with("sqlite.db"))
        .expect("the canonical object");
    let listed_before = tb.keys("");
    let day = std::time::Duration::from_secs(25 * 3600);
    let old = root.join(format!("{canonical}#1"));
    std::fs::write(&old, vec![7u8; 4096]).unwrap();
    set_mtime(&old, day);
    // Under the hub's continuous stream too (the agent's segments are uploads as well).
    let stream_dir = root.join(format!("acme/stream/{}/L0", spec.datahub));
    std::fs::create_dir_all(&stream_dir).unwrap();
    let old_segment = stream_dir.join("00000001.seg#3");
    std::fs::write(&old_segment, b"seg").unwrap();
    set_mtime(&old_segment, day);
    let fresh = root.join(format!("{canonical}#2"));
    std::fs::write(&fresh, b"an upload under way").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious");
    std::fs::write(&target, b"not the bucket's").unwrap();
    let link = root.join(format!("{canonical}#9"));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // A listed name that merely holds a `#`: object_store lists it, so it is an object.
    let listed_hash = root.join(format!("{}/notes#v1", ck.prefix()));
    std::fs::write(&listed_hash, b"x").unwrap();
    set_mtime(&listed_hash, day);

    let org = ["--datahub", &spec.datahub.to_string()];
    let dry = json_of(
        &run(tb
            .cmd()
            .args(["prune", "--json", "--dry-run", "--keep-last", "5"])
            .args(org)),
        0,
    );
    let named: Vec<&str> = dry["staging"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    let seg_key = format!("acme/stream/{}/L0/00000001.seg#3", spec.datahub);
    let mut want = vec![format!("{canonical}#1"), seg_key];
    want.sort();
    assert_eq!(named, want);
    assert_eq!(dry["staging"]["removed"], 0);
    assert!(
        old.exists() && old_segment.exists(),
        "a dry run removes nothing"
    );

    let real = json_of(
        &run(tb
            .cmd()
            .args(["prune", "--json", "--keep-last", "5"])
            .args(org)),
        0,
    );
    assert_eq!(real["staging"]["removed"], 2);
    assert_eq!(real["staging"]["bytes"], 4096 + 3);
    assert!(!old.exists() && !old_segment.exists());
    assert!(fresh.exists(), "an upload under way is not touched");
    assert!(link.symlink_metadata().is_ok(), "a link is not removed");
    assert_eq!(std::fs::read(&target).unwrap(), b"not the bucket's");
    assert!(listed_hash.exists());
    let mut listed_now = tb.keys("");
    listed_now.retain(|(k, _)| !k.ends_with("notes#v1"));
    assert_eq!(listed_now, listed_before, "no object was touched");
}

/// Two real backups of one connector (the second after a change): their version ids,
/// oldest first.
fn two_real_versions(tb: &TestBucket, db: &std::path::Path) -> [String; 2] {
    let first = backup(tb, db, &[])["version"].as_str().unwrap().to_string();
    rusqlite::Connection::open(db)
        .unwrap()
        .execute("INSERT INTO SequelizeMeta VALUES ('later')", [])
        .unwrap();
    let second = backup(tb, db, &["--force"])["version"]
        .as_str()
        .unwrap()
        .to_string();
    [first, second]
}

/// The newest version damaged in two ways a listing cannot see: its manifest is not a
/// manifest, or its data object was replaced by other bytes. `prune --keep-last 1` must
/// still keep the newest GOOD version (the one before), whole: the canonical object is
/// the platform's, which its own upload overwrites, so that version may be the only good
/// state left.
fn newest_good_survives_a_damaged_newest(tb: &TestBucket) {
    for damage in ["manifest", "data"] {
        let hub = tempfile::tempdir().unwrap();
        let (db, spec) = connector_db(hub.path(), "sdc", 50);
        let ck = ck_of(&spec);
        let [good, damaged] = two_real_versions(tb, &db);
        let damaged_id = VersionId::parse(&damaged).unwrap();
        let b = tb.bucket();
        rt().block_on(async {
            let (key, bytes) = match damage {
                "manifest" => (ck.version_manifest(&damaged_id), b"{\"format\":".to_vec()),
                _ => (ck.version_data(&damaged_id), b"not zstd at all".to_vec()),
            };
            b.put_bytes(&key, bytes, WriteMode::Overwrite)
                .await
                .unwrap();
        });
        let flags = [
            "--datahub",
            &spec.datahub.to_string(),
            "--connector",
            &spec.connector.to_string(),
        ];
        let doc = json_of(
            &run(tb
                .cmd()
                .args(["prune", "--json", "--keep-last", "1"])
                .args(flags)),
            0,
        );
        let left = version_keys(tb, &ck);
        for suffix in [".db.zst", ".json"] {
            assert!(
                left.contains(&format!("{}/{good}{suffix}", ck.versions_dir())),
                "{damage} of the newest damaged: the newest good version {good} lost its {suffix}: {left:?}\n{doc}"
            );
        }
        // And it restores.
        let out = hub.path().join(format!("restored-{damage}.db"));
        json_of(
            &run(tb
                .cmd()
                .args(["restore", "--json", "--yes", "--version", &good, "--output"])
                .arg(&out)
                .args(flags)),
            0,
        );
    }
}
both!(
    prune_keeps_the_newest_good_version_when_the_newest_is_damaged,
    newest_good_survives_a_damaged_newest
);

/// The newest version damaged (its data replaced by other bytes), and the bucket failing
/// every read of the older versions' manifests (500 after the retries): prune cannot tell
/// which version is the newest good one, so it must delete nothing and say which key it
/// could not read. Deleting by the rules alone would keep only the damaged newest one,
/// and leave nothing a restore can use.
#[test]
fn prune_deletes_nothing_when_it_cannot_read_which_version_is_the_newest_good_one() {
    let tb = TestBucket::s3();
    let proxy = crate::proxy::Proxy::s3();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 50);
    let ck = ck_of(&spec);
    let [oldest, good] = two_real_versions(&tb, &db);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("INSERT INTO SequelizeMeta VALUES ('newest')", [])
        .unwrap();
    let damaged = backup(&tb, &db, &["--force"])["version"]
        .as_str()
        .unwrap()
        .to_string();
    let damaged_id = VersionId::parse(&damaged).unwrap();
    rt().block_on(async {
        tb.bucket()
            .put_bytes(
                &ck.version_data(&damaged_id),
                b"not zstd at all".to_vec(),
                WriteMode::Overwrite,
            )
            .await
            .unwrap();
    });
    let before = version_keys(&tb, &ck);
    for id in [&oldest, &good] {
        proxy.inject(
            "GET",
            &format!("{id}.json"),
            crate::proxy::Fault::Status500,
            1000,
        );
    }
    let out = proxy
        .cmd(&tb)
        .args(["prune", "--keep-last", "1", "--datahub"])
        .arg(spec.datahub.to_string())
        .arg("--connector")
        .arg(spec.connector.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{good}.json")) && stderr.contains("nothing was deleted"),
        "the error names the key it could not read and says nothing was deleted: {stderr}"
    );
    assert_eq!(version_keys(&tb, &ck), before, "{stderr}");
    // Once the bucket answers again, the same prune keeps the newest good version.
    proxy.reset();
    let again = run(proxy
        .cmd(&tb)
        .args(["prune", "--keep-last", "1", "--datahub"])
        .arg(spec.datahub.to_string())
        .arg("--connector")
        .arg(spec.connector.to_string()));
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let left = version_keys(&tb, &ck);
    assert!(
        left.contains(
            &ck.version_data(&VersionId::parse(&good).unwrap())
                .to_string()
        ),
        "{left:?}"
    );
}

/// A hub whose clock ran a minute ahead of the restoring machine's stamped its newest
/// version a minute "in the future". `restore --at now` asks for everything the bucket
/// holds: it must give that version, not the one before it (which lacks the newest row)
/// with no word of it.
fn at_now_takes_a_version_stamped_ahead(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 20);
    let ck = ck_of(&spec);
    let [_, newest] = two_real_versions(tb, &db);
    let newest = VersionId::parse(&newest).unwrap();
    rt().block_on(async {
        let b = tb.bucket();
        let mut m = hubvault::catalog::history::read_manifest(&b, &ck, &newest)
            .await
            .unwrap();
        let ahead = VersionId::new(
            chrono::Utc::now() + chrono::TimeDelta::seconds(60),
            &m.sha256,
        );
        m.version = ahead.clone();
        let data = b.get_bytes(&ck.version_data(&newest)).await.unwrap();
        b.put_bytes(
            &ck.version_data(&ahead),
            data.to_vec(),
            WriteMode::Overwrite,
        )
        .await
        .unwrap();
        b.put_bytes(
            &ck.version_manifest(&ahead),
            m.to_json(),
            WriteMode::Overwrite,
        )
        .await
        .unwrap();
        for key in [ck.version_data(&newest), ck.version_manifest(&newest)] {
            b.delete(&key).await.unwrap();
        }
    });
    let out = hub.path().join("at-now.db");
    let doc = json_of(
        &run(tb
            .cmd()
            .args(["restore", "--json", "--yes", "--at", "now", "--datahub"])
            .arg(spec.datahub.to_string())
            .arg("--connector")
            .arg(spec.connector.to_string())
            .arg("--output")
            .arg(&out)),
        0,
    );
    let names = rows(&out, "SequelizeMeta");
    assert!(
        names.iter().any(|r| r["name"] == "later"),
        "the newest version (stamped a minute ahead) was not the one restored: {names:?}\n{doc}"
    );
}
both!(
    restore_at_now_takes_a_version_stamped_a_minute_ahead,
    at_now_takes_a_version_stamped_ahead
);

/// A backup on a host whose clock is two days behind is between its two uploads: the
/// data of its version is in the bucket, just written, and its manifest is coming. The
/// version's id says two days old, the bucket says seconds. `prune` must not take it for
/// what a backup cut off a day ago left: deleting its data under the backup leaves a
/// manifest (and `latest.json`) promising data that is gone.
fn incomplete_version_just_written_under_an_old_id(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 50);
    backup(tb, &db, &[]);
    let ck = ck_of(&spec);
    let two_days_ago = (chrono::Utc::now() - chrono::TimeDelta::days(2))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let writing = seed_versions(tb, &ck, &[&two_days_ago], false);
    let doc = json_of(
        &run(tb.cmd().args(["prune", "--json", "--keep-last", "5"])),
        0,
    );
    assert_eq!(
        doc["connectors"][0]["incomplete"],
        serde_json::json!([]),
        "{doc}"
    );
    assert!(
        version_keys(tb, &ck).contains(&ck.version_data(&writing[0]).to_string()),
        "a backup may be writing it now: {doc}"
    );
    // Once the bucket too says it was written more than a day ago, it goes (a local
    // directory's objects can be aged; S3's cannot).
    if let Some(dir) = &tb.dir {
        set_mtime(
            &dir.path().join(ck.version_data(&writing[0]).as_ref()),
            std::time::Duration::from_secs(25 * 3600),
        );
        let doc = json_of(
            &run(tb.cmd().args(["prune", "--json", "--keep-last", "5"])),
            0,
        );
        assert_eq!(
            doc["connectors"][0]["incomplete"],
            serde_json::json!([writing[0].to_string()]),
            "{doc}"
        );
        assert!(!version_keys(tb, &ck).contains(&ck.version_data(&writing[0]).to_string()));
    }
}
both!(
    prune_spares_an_incomplete_version_the_bucket_got_within_a_day_whatever_its_id_says,
    incomplete_version_just_written_under_an_old_id
);

/// A version stamped a year ahead (a host whose clock was set a year forward, put right
/// since) sorts first for every rule: `--keep-last 1` keeps it, and still keeps the
/// version the canonical object equals (the real newest) whole.
fn a_future_version_does_not_cost_the_real_newest(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 50);
    let ck = ck_of(&spec);
    let ahead = (chrono::Utc::now() + chrono::TimeDelta::days(365))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let future = seed_versions(tb, &ck, &[&ahead], true);
    let [_, newest] = two_real_versions(tb, &db);
    let doc = json_of(
        &run(tb.cmd().args(["prune", "--json", "--keep-last", "1"])),
        0,
    );
    let left = version_keys(tb, &ck);
    for suffix in [".db.zst", ".json"] {
        assert!(
            left.contains(&format!("{}/{newest}{suffix}", ck.versions_dir())),
            "{left:?}\n{doc}"
        );
    }
    assert!(left.contains(&ck.version_data(&future[0]).to_string()));
    assert_eq!(doc["versions_removed"], 1, "{doc}");
}
both!(
    prune_keeps_the_real_newest_beside_a_version_stamped_a_year_ahead,
    a_future_version_does_not_cost_the_real_newest
);

/// Two prunes with different rules at once (an operator's and the agent's after an
/// upload): both finish, the newest version stays whole, and no version is left half
/// deleted (each deletes what it planned, data then manifest; a delete of what the other
/// took already is no error).
fn two_prunes_at_once(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 50);
    let ck = ck_of(&spec);
    seed_versions(
        tb,
        &ck,
        &[
            "2026-11-01 10:00",
            "2026-11-02 10:00",
            "2026-11-02 11:00",
            "2026-11-03 10:00",
            "2026-11-04 10:00",
            "2026-11-05 10:00",
        ],
        true,
    );
    let newest = backup(tb, &db, &[])["version"]
        .as_str()
        .unwrap()
        .to_string();
    let children: Vec<std::process::Child> = [["--keep-last", "2"], ["--keep-daily", "3"]]
        .iter()
        .map(|rule| {
            tb.cmd()
                .args(["prune", "--json"])
                .args(rule)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        json_of(&out, 0);
    }
    let left = version_keys(tb, &ck);
    for suffix in [".db.zst", ".json"] {
        assert!(
            left.contains(&format!("{}/{newest}{suffix}", ck.versions_dir())),
            "{left:?}"
        );
    }
    let data = left.iter().filter(|k| k.ends_with(".db.zst")).count();
    let manifests = left.iter().filter(|k| k.ends_with(".json")).count();
    assert_eq!(data, manifests, "a version left half deleted: {left:?}");
    // At most what the stricter of the two keeps, plus the newest.
    assert!(data <= 3, "{left:?}");
}
both!(
    two_prunes_at_once_keep_the_newest_whole_and_leave_no_version_half_deleted,
    two_prunes_at_once
);

/// A stranger's object beside the versions whose name only DECODES to a version's
/// (`{id}%2Ejson`: S3 keeps the `%` as it is). It is not a version of ours: prune must not
/// count it (here: as the manifest of a version whose data is gone, an incomplete
/// version "removed" again at every run while the object stays), and never delete it.
fn a_strangers_object_that_decodes_to_a_version_name(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 50);
    backup(tb, &db, &[]);
    let ck = ck_of(&spec);
    let id = VersionId::parse("20260101T000000.000Z-0123456789ab").unwrap();
    let stranger = format!("{}/{}%2Ejson", ck.versions_dir(), id);
    let key = object_store::path::Path::parse(&stranger).unwrap();
    rt().block_on(
        tb.bucket()
            .put_bytes(&key, b"not ours".to_vec(), WriteMode::Overwrite),
    )
    .unwrap();
    let listed: Vec<String> = tb
        .keys(ck.versions_dir().as_ref())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(listed.contains(&stranger), "{listed:?}");
    for _ in 0..2 {
        let doc = json_of(
            &run(tb.cmd().args(["prune", "--json", "--keep-last", "5"])),
            0,
        );
        assert_eq!(doc["versions_removed"], 0, "{doc}");
        assert_eq!(
            doc["connectors"][0]["delete"],
            serde_json::json!([]),
            "{doc}"
        );
    }
    let listed: Vec<String> = tb
        .keys(ck.versions_dir().as_ref())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(listed.contains(&stranger), "{listed:?}");
}
both!(
    prune_neither_counts_nor_deletes_a_strangers_object_whose_name_decodes_to_a_version,
    a_strangers_object_that_decodes_to_a_version_name
);

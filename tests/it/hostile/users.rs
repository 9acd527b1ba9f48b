//! Root and connectors' users: links planted in a connector's directory, files root
//! leaves there, paths that are not plain files, the `--then` hook, credentials.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::both;
use crate::common::{Kind, TestBucket, connector_db, hubvault, json_of, stderr, stdout};

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success());
}

/// Waits for `child` at most `limit`; kills it and fails if it is still running.
fn finish_within(
    mut child: std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::Output {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what}: still running after {limit:?}");
}

// ------------------------------------------------------------- 8. planted links

fn lock_link(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 10);
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("created-by-root");
    let lock = side(&db, ".hubvault-lock");
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let out = run(crate::common::cmd_private_tmp(tb)
        .args(["backup", "--json", "--db"])
        .arg(&db));
    let doc = json_of(&out, 1);
    let err = doc["error"].as_str().unwrap();
    assert!(
        err.contains("symbolic link") && err.contains(p(&lock)),
        "{doc}"
    );
    assert!(doc["hint"].as_str().unwrap().contains("link"), "{doc}");
    assert!(
        !target.exists(),
        "root created a file where the link points"
    );
    assert!(tb.keys("").is_empty(), "nothing uploaded");
    // A restore onto that connector refuses the same way.
    let other = tempfile::tempdir().unwrap();
    let (db2, _) = connector_db(other.path(), "sdc", 5);
    backup(tb, &db2);
    let out = restore(tb, &spec, &strs(&same_hub(hub.path())));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!target.exists());
}
both!(
    root_never_follows_a_link_planted_at_the_lock_file,
    lock_link
);

#[test]
fn root_refuses_a_fifo_at_the_lock_file_without_hanging() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    mkfifo(&side(&db, ".hubvault-lock"));
    let child = crate::common::cmd_private_tmp(&tb)
        .args(["backup", "--json", "--db"])
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish_within(child, Duration::from_secs(30), "backup with a FIFO lock");
    let doc = json_of(&out, 1);
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{doc}"
    );
}

#[test]
fn root_never_gives_away_a_root_file_hard_linked_at_the_lock_name() {
    let tb = TestBucket::local();
    let hub = open_tempdir();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    give_to_user(db.parent().unwrap());
    // A root-owned file on the same file system, linked in by name.
    let precious = hub.path().join("root-only");
    std::fs::write(&precious, b"root's").unwrap();
    std::fs::hard_link(&precious, side(&db, ".hubvault-lock")).unwrap();
    let out = run(crate::common::cmd_private_tmp(&tb)
        .args(["backup", "--json", "--db"])
        .arg(&db));
    json_of(&out, 0);
    let m = std::fs::metadata(&precious).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (0, 0),
        "the linked root file was given away"
    );
}

fn side_links(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 20);
    backup(tb, &db);
    for s in ["-journal", "-wal", "-shm"] {
        let _ = std::fs::remove_file(side(&db, s));
    }
    let outside = tempfile::tempdir().unwrap();
    let mut sentinels = Vec::new();
    for s in ["-journal", "-wal", "-shm"] {
        let sentinel = outside.path().join(format!("precious{s}"));
        std::fs::write(&sentinel, format!("root's {s}")).unwrap();
        std::os::unix::fs::symlink(&sentinel, side(&db, s)).unwrap();
        sentinels.push((sentinel, format!("root's {s}")));
    }
    let out = restore(tb, &spec, &strs(&same_hub(hub.path())));
    let doc = json_of(&out, 0);
    for (sentinel, text) in &sentinels {
        assert_eq!(&std::fs::read_to_string(sentinel).unwrap(), text);
    }
    assert_eq!(integrity(&db), "ok");
    // The links moved aside with the kept original, still links.
    let kept: Vec<String> = doc["restore"]["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["to"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept.len(), 4, "{doc}");
    for k in kept
        .iter()
        .filter(|k| k.ends_with("-wal") || k.ends_with("-journal"))
    {
        assert!(Path::new(k).is_symlink(), "{k}");
    }
}
both!(
    restore_moves_linked_side_files_aside_without_following_them,
    side_links
);

// ------------------------------------------------------------- 9. root leaves files to the user

fn root_then_user(tb: &TestBucket) {
    let hub = open_tempdir();
    let (db, spec) = connector_db(hub.path(), "sdc", 40);
    let dir = db.parent().unwrap().to_path_buf();
    give_to_user(&dir);
    let user_tmp = open_tempdir();
    give_to_user(user_tmp.path());
    let user_backup = || {
        let mut c = tb.cmd();
        c.args(["backup", "--json", "--force", "--db"])
            .arg(&db)
            .env("TMPDIR", user_tmp.path());
        if let Some(d) = &tb.dir {
            // The bucket of a local-directory test: the user writes to it too.
            give_to_user(d.path());
        }
        let out = run(&mut as_user(&c));
        json_of(&out, 0)
    };
    let all_users = |when: &str| {
        let o = owners(&dir);
        assert!(
            o.iter().all(|(_, uid)| *uid == USER),
            "{when}: files root left to itself: {o:?}"
        );
    };
    // The agent (root) backs the connector up first.
    backup(tb, &db);
    all_users("after root's backup");
    assert!(dir.join("sqlite.db.hubvault-lock").exists());
    user_backup();
    // Root restores the connector in place, then the connector backs itself up.
    let doc = json_of(&restore(tb, &spec, &strs(&same_hub(hub.path()))), 0);
    all_users("after root's restore");
    let kept = doc["restore"]["kept"][0]["to"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(std::fs::metadata(&kept).unwrap().uid(), USER);
    user_backup();
    all_users("after the user's backup");
    // As the user, a restore onto its own connector works too.
    if let Some(d) = &tb.dir {
        give_to_user(d.path());
    }
    let mut c = tb.cmd();
    c.args(["restore", "--json", "--yes"])
        .args(["--datahub", &spec.datahub.to_string()])
        .args(["--connector", &spec.connector.to_string()])
        .args(["--hub-root", p(hub.path())]);
    json_of(&run(&mut as_user(&c)), 0);
}
both!(
    files_root_creates_in_a_connectors_directory_belong_to_its_user,
    root_then_user
);

#[test]
fn a_root_backup_of_a_wal_database_leaves_its_side_files_and_lock_to_the_owner() {
    let tb = TestBucket::local();
    let hub = open_tempdir();
    let (db, _) = connector_db(hub.path(), "sdc", 40);
    give_to_user(db.parent().unwrap());
    for s in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(side(&db, s));
    }
    backup(&tb, &db);
    // SQLite gives the -wal/-shm it creates to the database's owner (fchown); hubvault
    // does the same with its lock file.
    for (name, uid) in owners(db.parent().unwrap()) {
        assert_eq!(uid, USER, "{name}");
    }
}

// ------------------------------------------------------------- 11. paths, not URIs or devices

#[test]
fn db_and_output_paths_are_never_read_as_sqlite_uris() {
    let tb = TestBucket::local();
    let cwd = tempfile::tempdir().unwrap();
    let a = crate::fixture::Spec::new("sdc", "the file named file:x.db", 3);
    let b = crate::fixture::Spec::new("sdc", "x.db", 3);
    crate::fixture::create(&cwd.path().join("file:x.db"), &a).unwrap();
    crate::fixture::create(&cwd.path().join("x.db"), &b).unwrap();
    let inspect = |db: &str| {
        json_of(
            &run(hubvault()
                .current_dir(cwd.path())
                .args(["inspect", "--json", "--db", db])),
            0,
        )
    };
    let doc = inspect("file:x.db");
    assert_eq!(doc["connector"], a.connector.to_string(), "{doc}");
    // A query string is part of the file name, not an instruction to SQLite.
    let out = run(hubvault().current_dir(cwd.path()).args([
        "inspect",
        "--json",
        "--db",
        "file:x.db?mode=memory",
    ]));
    let doc = json_of(&out, 2);
    assert!(
        doc["error"].as_str().unwrap().contains("no such file"),
        "{doc}"
    );
    // Backup keys end with the file name, so a name with ':' is refused by name.
    let doc = json_of(
        &run(crate::common::cmd_private_tmp(&tb)
            .current_dir(cwd.path())
            .args(["backup", "--json", "--db", "file:x.db"])),
        2,
    );
    assert!(
        doc["error"].as_str().unwrap().contains("\"file:x.db\""),
        "{doc}"
    );
    // Restore's --output is a path too.
    std::fs::rename(cwd.path().join("file:x.db"), cwd.path().join("sqlite.db")).unwrap();
    json_of(
        &run(crate::common::cmd_private_tmp(&tb)
            .current_dir(cwd.path())
            .args(["backup", "--json", "--db", "sqlite.db"])),
        0,
    );
    let out = run(tb
        .cmd()
        .current_dir(cwd.path())
        .args(["restore", "--json", "--yes"])
        .args(["--datahub", &a.datahub.to_string()])
        .args(["--connector", &a.connector.to_string()])
        .args(["--output", "file:out.db"]));
    json_of(&out, 0);
    assert!(cwd.path().join("file:out.db").is_file());
    assert!(!cwd.path().join("out.db").exists());
}

#[test]
fn restore_refuses_an_output_that_is_a_device_a_directory_a_fifo_or_a_link() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 5);
    backup(&tb, &db);
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let precious = d.path().join("precious.db");
    std::fs::write(&precious, b"keep me").unwrap();
    let link = d.path().join("link.db");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let dangling = d.path().join("dangling.db");
    std::os::unix::fs::symlink(d.path().join("nowhere.db"), &dangling).unwrap();
    for (what, output) in [
        ("a device", Path::new("/dev/null").to_path_buf()),
        ("a directory", d.path().to_path_buf()),
        ("a directory, with a slash", d.path().join("sub/..")),
        ("a FIFO", fifo.clone()),
        ("a link", link.clone()),
        ("a dangling link", dangling.clone()),
    ] {
        let before = names(d.path());
        let out = restore(&tb, &spec, &["--output", p(&output)]);
        let doc = json_of(&out, 2);
        assert!(doc["hint"].is_string(), "{what}: {doc}");
        assert_eq!(names(d.path()), before, "{what}: the directory changed");
    }
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    assert!(link.is_symlink() && !d.path().join("nowhere.db").exists());
}

#[test]
fn restore_refuses_a_symlinked_connector_directory_or_database() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 5);
    backup(&tb, &db);
    let dir = db.parent().unwrap().to_path_buf();
    // The connector's database is a link to a file elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let real = elsewhere.path().join("real.db");
    std::fs::rename(&db, &real).unwrap();
    std::os::unix::fs::symlink(&real, &db).unwrap();
    let before = crate::common::sha256_of(&real);
    let doc = json_of(&restore(&tb, &spec, &strs(&same_hub(hub.path()))), 2);
    assert!(
        doc["error"].as_str().unwrap().contains("symbolic link"),
        "{doc}"
    );
    assert_eq!(crate::common::sha256_of(&real), before);
    // The connector's directory is a link to a directory elsewhere.
    std::fs::remove_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), &dir).unwrap();
    let listing = names(elsewhere.path());
    let doc = json_of(&restore(&tb, &spec, &strs(&same_hub(hub.path()))), 2);
    assert!(
        doc["error"].as_str().unwrap().contains("symbolic link"),
        "{doc}"
    );
    assert_eq!(names(elsewhere.path()), listing);
}

// ------------------------------------------------------------- 12. the --then hook

fn hook_restore(
    tb: &TestBucket,
    spec: &crate::fixture::Spec,
    hub: &Path,
    hook: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec!["--hub-root", p(hub), "--then", hook];
    args.extend_from_slice(extra);
    restore(tb, spec, &args)
}

#[test]
fn the_then_hook_is_stopped_at_its_timeout_and_the_failure_says_so() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 5);
    backup(&tb, &db);
    let started = Instant::now();
    let out = hook_restore(
        &tb,
        &spec,
        hub.path(),
        "echo syncing; sleep 60",
        &["--then-timeout", "1s"],
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let doc = json_of(&out, 1);
    assert_eq!(doc["hook"]["timed_out"], true, "{doc}");
    let err = doc["error"].as_str().unwrap();
    assert!(err.contains("did not finish within 1s"), "{err}");
    assert!(err.contains("syncing"), "the output tail: {err}");
    assert!(err.contains("IS installed"), "{err}");
    // The environment variable sets it too; a malformed one is refused up front.
    let out = run(tb
        .cmd()
        .env("HUBVAULT_THEN_TIMEOUT", "soon")
        .args([
            "restore",
            "--json",
            "--yes",
            "--datahub",
            &spec.datahub.to_string(),
        ])
        .args([
            "--connector",
            &spec.connector.to_string(),
            "--hub-root",
            p(hub.path()),
        ]));
    let doc = json_of(&out, 2);
    assert!(doc["error"].as_str().unwrap().contains("soon"), "{doc}");
}

/// The hook cannot even be started (no `sh` on the PATH): the database is installed by
/// then, and the error says so (with the report under --json), never leaving the
/// operator to believe nothing was restored (restore-hub's fix, for `restore` too).
#[test]
fn a_then_hook_that_cannot_start_says_the_database_is_installed() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 5);
    backup(&tb, &db);
    let no_path = tempfile::tempdir().unwrap();
    let out = run(tb.cmd().env("PATH", no_path.path()).args([
        "restore",
        "--json",
        "--yes",
        "--datahub",
        &spec.datahub.to_string(),
        "--connector",
        &spec.connector.to_string(),
        "--hub-root",
        p(hub.path()),
        "--then",
        "true",
    ]));
    let doc = json_of(&out, 1);
    let err = doc["error"].as_str().unwrap();
    assert!(err.contains("IS installed"), "{doc}");
    assert!(err.contains(p(&db)), "names the database: {doc}");
    assert_eq!(doc["restore"]["target"].as_str(), Some(p(&db)), "{doc}");
    assert!(
        std::fs::read_dir(hub.path().join(spec.connector.to_string()))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("before-restore")),
        "the database was not restored"
    );
}

#[test]
fn a_failed_then_hook_is_reported_with_its_exit_code_and_the_tail_of_its_output() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 5);
    backup(&tb, &db);
    let hook = "echo 'Update config: ok'; echo 'Sync: 503 from the platform' >&2; exit 3";
    let doc = json_of(&hook_restore(&tb, &spec, hub.path(), hook, &[]), 1);
    assert_eq!(doc["hook"]["exit_code"], 3, "{doc}");
    let tail: Vec<&str> = doc["hook"]["output_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(tail.contains(&"Sync: 503 from the platform"), "{tail:?}");
    // In text: the code and the last output, on stderr.
    let out = run(tb
        .cmd()
        .args(["restore", "--yes", "--datahub", &spec.datahub.to_string()])
        .args([
            "--connector",
            &spec.connector.to_string(),
            "--hub-root",
            p(hub.path()),
        ])
        .args(["--then", hook]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("exit code 3") && err.contains("Sync: 503"),
        "{err}"
    );
}

#[test]
fn the_then_hook_never_sees_the_aws_secret_or_a_password_in_a_url() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 5);
    backup(&tb, &db);
    let env_file = hub.path().join("hook.env");
    let hook = format!("env > {}", p(&env_file));
    let out = run(tb
        .cmd()
        .arg("--bucket")
        .arg(&tb.url)
        .env("HUBVAULT_BUCKET", "s3://AKIAX:MARKERPW@some-bucket")
        .env("AWS_ACCESS_KEY_ID", "AKIAHOOKTEST")
        .env("AWS_SECRET_ACCESS_KEY", "MARKER-secret")
        .env("AWS_SESSION_TOKEN", "MARKER-token")
        .env("AWS_ENDPOINT_URL", "http://u:MARKERPW2@127.0.0.1:9")
        .args([
            "restore",
            "--json",
            "--yes",
            "--datahub",
            &spec.datahub.to_string(),
        ])
        .args([
            "--connector",
            &spec.connector.to_string(),
            "--hub-root",
            p(hub.path()),
        ])
        .args(["--then", &hook]));
    json_of(&out, 0);
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(!env.contains("MARKER"), "{env}");
    assert!(env.contains("HUBVAULT_NEW_CONNECTOR="), "{env}");
    assert!(
        env.contains("AWS_ACCESS_KEY_ID=AKIAHOOKTEST"),
        "the key id is not a secret"
    );
}

// ------------------------------------------------------------- 13. credentials in URLs

#[test]
fn credentials_in_bucket_and_endpoint_urls_never_appear_in_output_logs_or_json() {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 5);
    let dead = format!(
        "http://hv:MARKERPW1@127.0.0.1:{}",
        crate::common::free_port()
    );
    let s3 = "s3://MARKERID:MARKERPW2@no-such-bucket";
    let local_dir = tempfile::tempdir().unwrap();
    let local = format!(
        "file://hv:MARKERPW3@localhost{}",
        local_dir.path().display()
    );
    let out_file = hub.path().join("restored.db");
    let (d, c) = (spec.datahub.to_string(), spec.connector.to_string());
    let commands: Vec<(&str, Vec<&str>)> = vec![
        (s3, vec!["status"]),
        (s3, vec!["verify"]),
        (s3, vec!["versions", "--datahub", &d, "--connector", &c]),
        (s3, vec!["backup", "--db", p(&db)]),
        (s3, vec!["inspect", "--datahub", &d, "--connector", &c]),
        (
            s3,
            vec![
                "restore",
                "--yes",
                "--datahub",
                &d,
                "--connector",
                &c,
                "--output",
                p(&out_file),
            ],
        ),
        (s3, vec!["agent", "--once", "--hub-root", p(hub.path())]),
        (&local, vec!["agent", "--once", "--hub-root", p(hub.path())]),
        (&local, vec!["backup", "--db", p(&db)]),
        (&local, vec!["status"]),
    ];
    let mut runs = 0;
    for (bucket, args) in &commands {
        for flags in [
            vec!["-vv"],
            vec!["--json"],
            vec!["--log-format", "json", "-vv"],
        ] {
            let out = run(hubvault()
                .env("HUBVAULT_BUCKET", bucket)
                .env("AWS_ENDPOINT_URL", &dead)
                .env("AWS_ACCESS_KEY_ID", "x")
                .env("AWS_SECRET_ACCESS_KEY", "y")
                .env("AWS_REGION", "us-east-1")
                .env("HUBVAULT_S3_RETRIES", "0")
                .env("HUBVAULT_S3_TIMEOUT", "2")
                .env("HUBVAULT_S3_CONNECT_TIMEOUT", "1")
                .env("RUST_LOG", "trace")
                .env("TMPDIR", crate::common::private_tmp())
                .args(args)
                .args(&flags));
            runs += 1;
            for (stream, text) in [("stdout", stdout(&out)), ("stderr", stderr(&out))] {
                assert!(
                    !text.contains("MARKER"),
                    "{bucket} {args:?} {flags:?}: {stream} shows a password:\n{text}"
                );
            }
            assert_no_panic(&format!("{args:?}"), &out);
        }
    }
    assert_eq!(runs, 30);
    let _ = Kind::Local;
}

#[test]
fn a_user_restores_to_an_output_in_a_directory_root_owns_and_keeps_the_file() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 5);
    backup(&tb, &db);
    give_to_user(tb.dir.as_ref().unwrap().path());
    // A root-owned directory anyone may write to, like /tmp.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let out_file = shared.path().join("restored.db");
    let mut c = tb.cmd();
    c.args(["restore", "--json", "--yes"])
        .args(["--datahub", &spec.datahub.to_string()])
        .args(["--connector", &spec.connector.to_string()])
        .args(["--output", p(&out_file)]);
    json_of(&run(&mut as_user(&c)), 0);
    assert_eq!(std::fs::metadata(&out_file).unwrap().uid(), USER);
    assert_eq!(count(&out_file, "SELECT count(*) FROM Events"), 5);
}

// ------------------------------------------------------------- 12. the agent's capture loop

/// A connector directory of [`USER`] (a new connector id) beside the others in `hub`.
fn user_connector_dir(hub: &Path) -> std::path::PathBuf {
    let dir = hub.join(hubvault::model::ids::ConnectorId::random().to_string());
    std::fs::create_dir(&dir).unwrap();
    give_to_user(&dir);
    dir
}

/// Waits (at most `limit`) for a segment of `hub`'s stream beyond the `before` ones.
fn new_segment(tb: &TestBucket, prefix: &str, before: usize, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if tb.keys(prefix).len() > before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// `db` put in journal mode `mode` (`WAL`, `DELETE`).
fn set_journal_mode(db: &Path, mode: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.pragma_update(None, "journal_mode", mode).unwrap();
}

/// A FIFO made at `path` by [`USER`].
fn mkfifo_as_user(path: &Path) {
    let mut mk = Command::new("mkfifo");
    mk.arg(path);
    assert!(as_user(&mk).status().unwrap().success());
}

/// The agent on `hub`, past its first bases (at most 20 s), killed if the test ends
/// before it is stopped; and its log lines.
fn agent_past_its_base(
    tb: &TestBucket,
    hub: &Path,
) -> (crate::continuous::Reaped, std::sync::mpsc::Receiver<String>) {
    use crate::continuous::{Reaped, start_agent, wait_for};
    let (agent, rx) = start_agent(tb, hub);
    let agent = Reaped(agent); // killed if the wait fails
    wait_for(&rx, "capture: base uploaded", Duration::from_secs(20));
    (agent, rx)
}

/// The test's writer on `db` (WAL), with a table of its own to commit to.
fn cdc_writer(db: &Path) -> rusqlite::Connection {
    let w = rusqlite::Connection::open(db).unwrap();
    w.execute_batch("PRAGMA journal_mode=wal; CREATE TABLE cdc_rows(id INTEGER PRIMARY KEY);")
        .unwrap();
    w
}

/// A commit by `w` on the connector of `spec` reaches the bucket (a new segment of its
/// hub's stream) within 15 s.
fn assert_a_commit_reaches_the_bucket(
    tb: &TestBucket,
    w: &rusqlite::Connection,
    spec: &crate::fixture::Spec,
) {
    let prefix = format!("acme/stream/{}/L0", spec.datahub);
    let before = tb.keys(&prefix).len();
    w.execute("INSERT INTO cdc_rows VALUES (1)", []).unwrap();
    assert!(
        new_segment(tb, &prefix, before, Duration::from_secs(15)),
        "the other connector's commit never reached the bucket"
    );
}

/// The user makes its `sqlite.db` a FIFO: capture opens the connector's files itself, and
/// an `open` of a FIFO with no writer never returns. The other connectors' commits must
/// still reach the bucket, and the agent must still stop at SIGTERM.
#[test]
fn a_fifo_at_one_connectors_database_never_stops_the_capture_of_the_others() {
    use crate::continuous::sigterm_and_wait;
    let tb = TestBucket::local();
    let hub = open_tempdir();
    let (db, spec) = connector_db(hub.path(), "sdc", 10);
    let w = cdc_writer(&db);
    let (mut agent, _rx) = agent_past_its_base(&tb, hub.path());
    // The user's connector appears with a FIFO for a database (discovery: every tick, 1 s).
    let dir = user_connector_dir(hub.path());
    mkfifo_as_user(&dir.join("sqlite.db"));
    std::thread::sleep(Duration::from_secs(3));
    assert_a_commit_reaches_the_bucket(&tb, &w, &spec);
    sigterm_and_wait(&mut agent.0);
}

/// The user replaces its `sqlite.db` by a link to a root-only WAL database (one naming
/// its own connector, so no id check stops it): root's backup (the agent's pass) and
/// `doctor` must refuse the link, never open the database behind it (SQLite opening it
/// creates its `-wal` and `-shm` in root's directory) and upload nothing.
#[test]
fn root_never_opens_a_database_through_a_link_planted_at_sqlite_db() {
    let tb = TestBucket::local();
    let hub = open_tempdir();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    let dir = db.parent().unwrap().to_path_buf();
    give_to_user(&dir);
    // Root's own copy of the database, in a directory only root may enter (tempdir: 0700).
    let secret = tempfile::tempdir().unwrap();
    let copy = secret.path().join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    set_journal_mode(&copy, "WAL");
    assert_eq!(names(secret.path()), ["copy.db"]);
    let mut ln = Command::new("ln");
    ln.arg("-sf").arg(&copy).arg(&db);
    assert!(as_user(&ln).status().unwrap().success());
    assert!(db.is_symlink());
    let out = run(crate::common::cmd_private_tmp(&tb)
        .args(["backup", "--json", "--force", "--db"])
        .arg(&db));
    let doc = json_of(&out, 1);
    assert!(
        doc["error"].as_str().unwrap().contains("symbolic link"),
        "{doc}"
    );
    assert_eq!(
        names(secret.path()),
        ["copy.db"],
        "root's backup opened the database behind the link"
    );
    assert!(tb.keys("").is_empty(), "nothing uploaded");
    let out = run(crate::common::cmd_private_tmp(&tb)
        .args(["doctor", "--json", "--hub-root"])
        .arg(hub.path()));
    assert_no_panic("doctor", &out);
    assert_eq!(
        names(secret.path()),
        ["copy.db"],
        "root's doctor opened the database behind the link"
    );
}

/// The user of a rollback-journal connector puts a FIFO at its `sqlite.db-journal`: any
/// SQLite connection that takes a lock on the database opens that name to see whether it
/// is a hot journal, and an `open` of a FIFO with no writer never returns. Root's
/// capture (its SHARED locks) and root's backup of that connector must not hang on it:
/// the other connectors' commits still reach the bucket, the backup ends within a bound
/// and says what is wrong, and the agent stops at SIGTERM.
#[test]
fn a_fifo_at_a_connectors_journal_never_hangs_roots_capture_or_backup() {
    use crate::continuous::sigterm_and_wait;
    let tb = TestBucket::local();
    let hub = open_tempdir();
    let (db, spec) = connector_db(hub.path(), "sdc", 10);
    let w = cdc_writer(&db);
    let (mut agent, _rx) = agent_past_its_base(&tb, hub.path());
    // The user's rollback-journal connector, built aside and moved in whole.
    let aside = open_tempdir();
    let (db_a, _) = connector_db(aside.path(), "solace", 10);
    set_journal_mode(&db_a, "DELETE");
    let dir_a = db_a.parent().unwrap();
    give_to_user(dir_a);
    mkfifo_as_user(&side(&db_a, "-journal"));
    let moved = hub.path().join(dir_a.file_name().unwrap());
    std::fs::rename(dir_a, &moved).unwrap();
    let db_a = moved.join("sqlite.db");
    std::thread::sleep(Duration::from_secs(3));
    assert_a_commit_reaches_the_bucket(&tb, &w, &spec);
    let child = crate::common::cmd_private_tmp(&tb)
        .args(["backup", "--json", "--force", "--db"])
        .arg(&db_a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish_within(child, Duration::from_secs(30), "root's backup");
    let doc = json_of(&out, 1);
    // Named for what it is: no hot journal to keep ("do not delete" would be false).
    let err = doc["error"].as_str().unwrap();
    assert!(
        err.contains("not a regular file") && !err.contains("hot journal"),
        "{doc}"
    );
    sigterm_and_wait(&mut agent.0);
}

/// The user hard-links a root-owned file it may write (mode 0666, the hub's file system)
/// at its WAL database's `-shm` and `-wal`: SQLite, run as root, gives every `-wal` and
/// `-shm` it opens to the database's owner (`fchown`) and resets the `-shm`. Root's
/// backup must never do either to a file with another name (row 18's rule, for the side
/// files SQLite opens).
#[test]
fn root_never_gives_away_or_resets_a_root_file_hard_linked_at_a_side_file() {
    let tb = TestBucket::local();
    let hub = open_tempdir();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    set_journal_mode(&db, "WAL");
    give_to_user(db.parent().unwrap());
    for s in ["-shm", "-wal"] {
        let _ = std::fs::remove_file(side(&db, s));
        let precious = hub.path().join(format!("root-only{s}"));
        std::fs::write(&precious, b"root's").unwrap();
        std::fs::set_permissions(
            &precious,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        let mut ln = Command::new("ln");
        ln.arg(&precious).arg(side(&db, s));
        assert!(as_user(&ln).status().unwrap().success(), "{s}");
        let out = run(crate::common::cmd_private_tmp(&tb)
            .args(["backup", "--json", "--force", "--db"])
            .arg(&db));
        assert_no_panic("backup", &out);
        let m = std::fs::metadata(&precious).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (0, 0),
            "{s}: the linked root file was given away"
        );
        assert_eq!(std::fs::read(&precious).unwrap(), b"root's", "{s}: written");
        std::fs::remove_file(side(&db, s)).unwrap();
    }
}

/// A connector whose database capture cannot open (here the user's FIFO) is retried at
/// every discovery, once a tick: the reason is logged once, not 86,400 times a day.
#[test]
fn a_connector_capture_cannot_open_is_logged_once_not_every_tick() {
    use crate::continuous::sigterm_and_wait;
    let tb = TestBucket::local();
    let hub = open_tempdir();
    connector_db(hub.path(), "sdc", 10);
    let (mut agent, rx) = agent_past_its_base(&tb, hub.path());
    let dir = user_connector_dir(hub.path());
    mkfifo_as_user(&dir.join("sqlite.db"));
    // Five ticks (1 s each): five discoveries that cannot open it.
    let until = Instant::now() + Duration::from_secs(5);
    let mut said = Vec::new();
    while let Ok(msg) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        if msg.contains("cannot open the database for capture") {
            said.push(msg);
        }
    }
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(said[0].contains("not a regular file"), "{said:#?}");
    sigterm_and_wait(&mut agent.0);
}

/// The user of a WAL connector swaps new files in at its `-wal`, again and again, each
/// kept alive under another name: root's capture opens each one it sees. Its open
/// descriptors must stay bounded (a service's limit is 1,024), or it stops protecting
/// every connector.
#[test]
fn files_swapped_in_at_a_connectors_wal_never_pile_up_roots_open_descriptors() {
    use crate::continuous::sigterm_and_wait;
    let tb = TestBucket::local();
    let hub = open_tempdir();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    set_journal_mode(&db, "WAL");
    let dir = db.parent().unwrap().to_path_buf();
    give_to_user(&dir);
    let (mut agent, _rx) = agent_past_its_base(&tb, hub.path());
    let fds = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds(agent.0.id());
    // 600 swaps, 20 ms apart (12 s): each file keeps a second name in the directory.
    let script = format!(
        "cd {} && for i in $(seq 1 600); do printf x > k$i; ln k$i t$i; mv t$i sqlite.db-wal; sleep 0.02; done",
        dir.display()
    );
    let mut sh = Command::new("sh");
    sh.args(["-c", &script]);
    assert!(as_user(&sh).status().unwrap().success());
    std::thread::sleep(Duration::from_secs(2));
    let after = fds(agent.0.id());
    assert!(
        after < before + 50,
        "descriptors: {before} before, {after} after 600 swaps"
    );
    sigterm_and_wait(&mut agent.0);
}

//! A full disk and a read-only hub root.
//!
//! Mechanism: a small tmpfs mounted by the test (`mount -t tmpfs -o size=…`; the suite
//! runs as root here), remounted read-only for the read-only cases. Without the right to
//! mount, the snapshot case falls back to RLIMIT_FSIZE on the child (`prlimit`-style,
//! SIGXFSZ ignored, so writes fail with EFBIG).
//!
//! Claim: a clear error (exit 1, names the path, a hint), nothing partial left behind
//! (no temp file, no short download), and the bucket untouched.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hubvault::progress::NoProgress;
use hubvault::store::Encoding;
use object_store::path::Path as Key;

use super::{figures, files_in};
use crate::common::{TestBucket, connector_db, json_of, rt, run};

/// A tmpfs of `size` bytes, unmounted when dropped.
pub(crate) struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    pub(crate) fn mount(size: u64) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(SmallFs { dir })
    }
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
    fn read_only(&self) {
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "remount ro: {out:?}");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

fn fill(dir: &Path) {
    // Leave a few KiB, so the snapshot starts and fails midway, not at creation.
    let f = dir.join("ballast");
    let _ = Command::new("fallocate")
        .args(["-l", "1900k"])
        .arg(&f)
        .output();
}

fn canonical(spec: &crate::fixture::Spec) -> String {
    format!(
        "acme/datahub/{}/connector/{}/sqlite.db",
        spec.datahub, spec.connector
    )
}

#[test]
fn backup_with_a_full_tmp_dir_fails_clearly_leaving_no_temp_file_and_the_bucket_untouched() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "idbs-eworkbook", 4_000);
    json_of(
        &run(tb.cmd().args(["backup", "--json", "--db"]).arg(&db)),
        0,
    );
    let before = tb.keys("acme");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();

    // HUBVAULT_TEST_NO_MOUNT=1 exercises the fallback where mounting is allowed.
    let small = if std::env::var_os("HUBVAULT_TEST_NO_MOUNT").is_some() {
        None
    } else {
        SmallFs::mount(2 * 1024 * 1024)
    };
    let mechanism = if small.is_some() {
        "tmpfs size=2M"
    } else {
        "RLIMIT_FSIZE=256K"
    };
    let fallback = tempfile::tempdir().unwrap();
    let tmp: PathBuf = match &small {
        Some(fs) => {
            fill(fs.path());
            fs.path().to_path_buf()
        }
        None => fallback.path().to_path_buf(),
    };
    let mut cmd = tb.cmd();
    cmd.args(["backup", "--force", "--json", "--db"])
        .arg(&db)
        .arg("--tmp-dir")
        .arg(&tmp);
    if small.is_none() {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let lim = libc::rlimit {
                    rlim_cur: 256 * 1024,
                    rlim_max: 256 * 1024,
                };
                libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
                Ok(())
            });
        }
    }
    let out = run(&mut cmd);
    let err = json_of(&out, 1);
    let text = err["error"].as_str().unwrap();
    assert!(
        text.contains(&tmp.display().to_string()),
        "names the temp dir: {text}"
    );
    let hint = err["hint"].as_str().unwrap();
    assert!(
        hint.contains("space") || hint.contains("--tmp-dir"),
        "{hint}"
    );
    let left: Vec<String> = files_in(&tmp)
        .into_iter()
        .filter(|f| f != "ballast")
        .collect();
    assert_eq!(left, Vec::<String>::new(), "temp files left behind");
    assert_eq!(tb.keys("acme"), before, "the bucket changed");
    assert!(before.iter().any(|(k, _)| *k == canonical(&spec)));
    figures(
        "disk_full_snapshot",
        serde_json::json!({"mechanism": mechanism, "exit": 1, "error": text, "hint": hint}),
    );
}

#[test]
fn a_download_onto_a_full_disk_fails_naming_the_file_and_leaves_no_short_file() {
    let small = SmallFs::mount(1024 * 1024).expect(
        "this test mounts a 1 MiB tmpfs and needs root (CAP_SYS_ADMIN); the suite runs as root",
    );
    let tb = TestBucket::s3();
    let b = tb.bucket();
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), vec![7u8; 3 * 1024 * 1024]).unwrap();
    for (key, enc) in [
        ("acme/full/plain.db", Encoding::Plain),
        ("acme/full/v.db.zst", Encoding::Zstd(3)),
    ] {
        let key = Key::from(key);
        rt().block_on(b.put_file(&key, src.path(), enc, &NoProgress))
            .unwrap();
        let dest = small.path().join("download.db");
        let err = rt()
            .block_on(b.get_to_file(&key, &dest, enc, &NoProgress))
            .unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(
            err.to_string().contains(&dest.display().to_string()),
            "{err}"
        );
        assert!(err.hint().unwrap().contains("space"), "{:?}", err.hint());
        assert_eq!(
            files_in(small.path()),
            Vec::<String>::new(),
            "a short file was left"
        );
    }
}

#[test]
fn a_read_only_hub_root_gives_a_clear_error_and_writes_nothing() {
    let fs = SmallFs::mount(16 * 1024 * 1024)
        .expect("this test mounts a tmpfs and needs root (CAP_SYS_ADMIN); the suite runs as root");
    // A rollback-journal database, as many connectors run them: it opens read-only on a
    // read-only mount (a WAL database may or may not, depending on its -shm), so what
    // fails is certain: the connector's lock file cannot be created beside it.
    let dir = fs
        .path()
        .join(hubvault::model::ids::ConnectorId::random().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("sqlite.db");
    let mut spec = crate::fixture::Spec::new("sdc", "read-only test", 200);
    spec.wal = false;
    crate::fixture::create(&db, &spec).unwrap();
    fs.read_only();
    let tb = TestBucket::local();
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tb
        .cmd()
        .args(["backup", "--json", "--db"])
        .arg(&db)
        .arg("--tmp-dir")
        .arg(tmp.path()));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    figures("read_only_hub_root", doc.clone());
    assert_eq!(out.status.code(), Some(1), "{doc}");
    let text = doc["error"].as_str().unwrap();
    assert!(
        text.contains(&dir.display().to_string()),
        "names the path: {text}"
    );
    assert!(text.contains("mounted read-only"), "says why: {text}");
    assert!(
        doc["hint"]
            .as_str()
            .is_some_and(|h| h.contains("remount it read-write")),
        "{doc}"
    );
    assert_eq!(tb.keys(""), Vec::new(), "the bucket changed");
    assert_eq!(files_in(tmp.path()), Vec::<String>::new());
}

//! `hubvault doctor` (issue 16): every check against a working setup, and each kind of
//! failure with its exit code; the round trip leaves nothing in the bucket.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::both;
use crate::common::{
    TestBucket, cmd_private_tmp, connector_db, free_port, hubvault, json_of, run, stderr, stdout,
};

/// The check named `name` in a doctor report.
fn check<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no check {name}: {doc:#}"))
}

/// An empty config file, so the machine's /etc/hubvault/hubvault.toml plays no part.
fn empty_config(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("hubvault.toml");
    std::fs::write(&p, "").unwrap();
    p
}

fn passes(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (_, spec) = connector_db(hub.path(), "sdc", 20);
    let conf = empty_config(hub.path());
    let out = run(cmd_private_tmp(tb)
        .args(["doctor", "--json", "--config"])
        .arg(&conf)
        .arg("--hub-root")
        .arg(hub.path()));
    let doc = json_of(&out, 0);
    assert_eq!(doc["ok"], true, "{doc:#}");
    for name in [
        "configuration",
        "bucket reachable",
        "write-read-delete",
        "clock skew",
        "hub root",
        "connector",
        "space for temp files",
    ] {
        assert_eq!(check(&doc, name)["state"], "ok", "{name}: {doc:#}");
    }
    let conn = check(&doc, "connector")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        conn.contains(&spec.connector.to_string()) && conn.contains(&spec.datahub.to_string()),
        "{conn}"
    );
    assert!(
        conn.contains("journal wal") && conn.contains("owner root"),
        "{conn}"
    );
    let config = check(&doc, "configuration")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        config.contains("from HUBVAULT_BUCKET") && config.contains("org acme"),
        "{config}"
    );
    if tb.kind == crate::common::Kind::Local {
        assert_eq!(check(&doc, "staging files")["state"], "ok", "{doc:#}");
    }
    if tb.kind == crate::common::Kind::S3 {
        assert_eq!(check(&doc, "credentials")["state"], "ok", "{doc:#}");
        assert!(!doc.to_string().contains("hubvault-test-secret"));
    }
    // The probe is gone, and nothing the doctor did shows up as a backup.
    assert!(tb.keys("acme").is_empty(), "{:?}", tb.keys(""));

    // Text: one line a check, and the verdict.
    let out = run(cmd_private_tmp(tb)
        .args(["doctor", "--config"])
        .arg(&conf)
        .arg("--hub-root")
        .arg(hub.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok       write-read-delete")),
        "{text}"
    );
    assert!(text.contains("backups will work"), "{text}");
}
both!(
    doctor_passes_on_a_working_setup_and_leaves_nothing_in_the_bucket,
    passes
);

#[test]
fn doctor_names_an_unreachable_store_and_exits_1() {
    let hub = tempfile::tempdir().unwrap();
    let conf = empty_config(hub.path());
    let out = run(hubvault()
        .args([
            "doctor",
            "--json",
            "--bucket",
            "s3://hv-unreachable",
            "--config",
        ])
        .arg(&conf)
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("AWS_REGION", "us-east-1")
        .env("HUBVAULT_S3_RETRIES", "0")
        .env("HUBVAULT_S3_CONNECT_TIMEOUT", "2"));
    let doc = json_of(&out, 1);
    let c = check(&doc, "bucket reachable");
    assert_eq!(c["state"], "problem");
    assert!(c["hint"].as_str().unwrap().contains("cannot reach"), "{c}");
    assert_eq!(check(&doc, "write-read-delete")["state"], "skipped");
    // No hub root given: a warning, not a problem.
    assert_eq!(check(&doc, "hub root")["state"], "warning");
}

#[test]
fn doctor_exits_2_when_the_configuration_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let conf = empty_config(dir.path());
    let bucket = format!("file://{}", dir.path().display());
    for (args, needle) in [
        (vec!["doctor", "--json"], "no bucket given"),
        (
            vec!["doctor", "--json", "--bucket", "file:relative/dir"],
            "relative",
        ),
        (
            vec!["doctor", "--json", "--bucket", "s3://My_Bucket"],
            "bucket name",
        ),
        (
            vec!["doctor", "--json", "--bucket", &bucket, "--sse", "AES256"],
            "local directory",
        ),
        (
            vec![
                "doctor",
                "--json",
                "--bucket",
                &bucket,
                "--org",
                "Not A Slug",
            ],
            "org",
        ),
    ] {
        let out = run(hubvault().args(&args).arg("--config").arg(&conf));
        let doc = json_of(&out, 2);
        assert_eq!(doc["ok"], false);
        assert!(doc.to_string().contains(needle), "{args:?}: {doc:#}");
    }
    // A bad command line is clap's exit 2.
    let out = run(hubvault().args(["doctor", "--no-such-flag"]));
    assert_eq!(out.status.code(), Some(2));
}

/// Run as the connector's neighbour would: a real second user (65534) who cannot read a
/// root-owned database; the doctor names the file and exits 1.
#[test]
fn doctor_as_another_user_names_the_database_it_cannot_read() {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "solace", 10);
    let open = |p: &std::path::Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(hub.path(), 0o755);
    open(db.parent().unwrap(), 0o755);
    open(&db, 0o600);
    let bucket = tempfile::tempdir().unwrap();
    open(bucket.path(), 0o777);
    let tmp = tempfile::tempdir().unwrap();
    open(tmp.path(), 0o777);
    let conf = empty_config(tmp.path());
    open(&conf, 0o644);
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_hubvault"))
        .args(["doctor", "--json", "--org", "acme", "--bucket"])
        .arg(format!("file://{}", bucket.path().display()))
        .arg("--config")
        .arg(&conf)
        .arg("--hub-root")
        .arg(hub.path())
        .env("TMPDIR", tmp.path())
        .env_remove("HUBVAULT_BUCKET")
        .env_remove("HUBVAULT_ORG"));
    let doc = json_of(&out, 1);
    let c = check(&doc, "connector");
    assert_eq!(c["state"], "problem", "{doc:#}");
    let detail = c["detail"].as_str().unwrap();
    assert!(detail.contains(&db.display().to_string()), "{detail}");
    assert!(c["hint"].as_str().is_some());
    assert_eq!(check(&doc, "write-read-delete")["state"], "ok", "{doc:#}");
    let _ = spec;
}

/// A day-old staging file that a killed upload left in a local-directory bucket is a
/// warning that names it and what removes it; the doctor still passes (exit 0), and a
/// fresh one (an upload under way) is not counted. Local only: S3 has no such files.
#[test]
fn doctor_warns_of_staging_files_killed_uploads_left_in_a_local_bucket() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    connector_db(hub.path(), "sdc", 5);
    let conf = empty_config(hub.path());
    let dir = tb
        .dir
        .as_ref()
        .unwrap()
        .path()
        .join("acme/datahub/x/connector/y");
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("sqlite.db#1");
    std::fs::write(&old, vec![0u8; 2048]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 3600))
        .unwrap();
    std::fs::write(dir.join("sqlite.db#2"), b"under way").unwrap();
    let out = run(cmd_private_tmp(&tb)
        .args(["doctor", "--json", "--config"])
        .arg(&conf)
        .arg("--hub-root")
        .arg(hub.path()));
    let doc = json_of(&out, 0);
    let c = check(&doc, "staging files");
    assert_eq!(c["state"], "warning", "{doc:#}");
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("1 left by killed uploads") && detail.contains("sqlite.db#1"),
        "{detail}"
    );
    assert!(
        c["hint"].as_str().unwrap().contains("hubvault prune"),
        "{c}"
    );
    assert!(old.exists(), "the doctor removes nothing");
}

/// Review of the operator's first day: the unit runs the agent with
/// `HUBVAULT_TMP_DIR=/var/tmp` (its `Environment=`), which `sudo hubvault doctor` in a
/// shell never sees: it checked TMPDIR or /tmp instead (a small tmpfs on many hubs: a
/// problem where the agent is fine, or ok where the agent's own directory has no room).
/// Without --tmp-dir, HUBVAULT_TMP_DIR or tmp_dir, it now checks the unit's.
#[test]
fn doctor_checks_the_temp_dir_the_agents_unit_sets() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    connector_db(hub.path(), "sdc", 5);
    let conf = empty_config(hub.path());
    let bin = tempfile::tempdir().unwrap();
    let units_tmp = hub.path().join("no-such-tmp");
    let fake = bin.path().join("systemctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n is-active) echo active;;\n show) echo 'HUBVAULT_TMP_DIR={} OTHER=x';;\nesac\n",
            units_tmp.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(cmd_private_tmp(&tb)
        .env_remove("HUBVAULT_TMP_DIR")
        .env("PATH", path)
        .args(["doctor", "--json", "--config"])
        .arg(&conf)
        .arg("--hub-root")
        .arg(hub.path()));
    let doc = json_of(&out, 1);
    let c = check(&doc, "space for temp files");
    assert_eq!(c["state"], "problem", "{doc:#}");
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.contains(&units_tmp.display().to_string()) && detail.contains("hubvault-agent"),
        "{detail}"
    );
}

/// Review of the operator's first day: a hub root on a read-only mount made the doctor,
/// run as root, say "this user cannot write the connector's directory: run as root, as
/// the agent does", advice root cannot follow. It now says the file system is mounted
/// read-only.
#[test]
fn doctor_on_a_read_only_hub_root_says_it_is_mounted_read_only() {
    let mnt = tempfile::tempdir().unwrap();
    let mount = |args: &[&str]| {
        let out = Command::new("mount")
            .args(args)
            .arg(mnt.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root (CAP_SYS_ADMIN); the suite runs as root: {out:?}"
        );
    };
    mount(&["-t", "tmpfs", "-o", "size=16m", "tmpfs"]);
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).output();
        }
    }
    let _unmount = Unmount(mnt.path());
    let mut spec = crate::fixture::Spec::new("sdc", "read-only test", 20);
    spec.wal = false;
    let dir = mnt.path().join(spec.connector.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    crate::fixture::create(&dir.join("sqlite.db"), &spec).unwrap();
    mount(&["-o", "remount,ro"]);
    let tb = TestBucket::local();
    let conf = empty_config(tb.dir.as_ref().unwrap().path());
    let out = run(cmd_private_tmp(&tb)
        .args(["doctor", "--json", "--config"])
        .arg(&conf)
        .arg("--hub-root")
        .arg(mnt.path()));
    let doc = json_of(&out, 1);
    let c = check(&doc, "connector");
    assert_eq!(c["state"], "problem", "{doc:#}");
    let hint = c["hint"].as_str().unwrap();
    assert!(
        hint.contains("mounted read-only") && !hint.contains("run as root"),
        "{hint}"
    );
}

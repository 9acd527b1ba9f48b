//! Credentials never appear in logs, errors or `--json` output.
//!
//! A marker credential goes through succeeding and failing runs (`-vv`, `--json`,
//! `--log-format json`): against moto, against a port where nothing listens, and
//! against a second moto that enforces auth (`INITIAL_NO_AUTH_ACTION_COUNT=0`: unknown
//! keys get 403 InvalidAccessKeyId). Neither the secret nor the key id may show.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Deadline;
use crate::common::{TestBucket, connector_db, run, venv};

const KEY_ID: &str = "MARKERKEYAKIA7Q2Z9";
const SECRET: &str = "MARKER-s3cr3t-9f8e7d6c5b4a";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A moto server that checks access keys, on a port of its own.
fn moto_with_auth() -> (Moto, String) {
    let port = free_port();
    let child = Command::new(venv().join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let moto = Moto(child);
    let url = format!("http://127.0.0.1:{port}");
    let ready = Deadline::after(Duration::from_secs(20));
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(!ready.passed(), "the auth-enforcing moto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (moto, url)
}

fn assert_no_marker(what: &str, out: &std::process::Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        for marker in [KEY_ID, SECRET, "MARKER"] {
            assert!(
                !text.contains(marker),
                "{what}: {stream} shows {marker}:\n{text}"
            );
        }
    }
}

#[test]
fn marker_credentials_never_appear_in_output_logs_or_errors() {
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 100);
    let tb = TestBucket::s3();
    let (_moto, auth_url) = moto_with_auth();
    // Created unsigned before auth counts: the bucket exists, our keys are unknown.
    let _ = Command::new("curl")
        .args(["-fsS", "-X", "PUT", &format!("{auth_url}/{}", tb.name)])
        .output();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut codes = Vec::new();
    for (what, endpoint) in [
        ("moto", crate::common::s3_endpoint()),
        ("moto enforcing auth", auth_url.clone()),
        ("nothing listening", dead),
    ] {
        for flags in [
            &["-vv"][..],
            &["--json", "-vv"],
            &["--log-format", "json", "-vv"],
            &["--json", "--log-format", "json", "-vv"],
        ] {
            let out = run(tb
                .cmd()
                .env("AWS_ACCESS_KEY_ID", KEY_ID)
                .env("AWS_SECRET_ACCESS_KEY", SECRET)
                .env("AWS_ENDPOINT_URL", &endpoint)
                .env("HUBVAULT_S3_RETRIES", "1")
                .env("HUBVAULT_S3_RETRY_TIMEOUT", "3")
                .env("HUBVAULT_S3_CONNECT_TIMEOUT", "2")
                .env("RUST_LOG", "trace")
                .args(flags)
                .args(["backup", "--force", "--db"])
                .arg(&db));
            assert_no_marker(&format!("{what} {flags:?}"), &out);
            codes.push((what, out.status.code()));
            if what == "moto enforcing auth" {
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(1), "{err}");
                assert!(
                    err.contains("InvalidAccessKeyId") || err.contains("403"),
                    "{err}"
                );
                assert!(
                    err.contains("credentials"),
                    "the hint names credentials: {err}"
                );
            }
        }
    }
    // Both outcomes were exercised: a success, and failures.
    assert!(codes.iter().any(|(_, c)| *c == Some(0)), "{codes:?}");
    assert!(
        codes.iter().filter(|(_, c)| *c == Some(1)).count() >= 8,
        "{codes:?}"
    );
}

//! Test support: buckets on both backends, connector databases, the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::fixture::{self, Spec};
use hubvault::store::Bucket;
use hubvault::store::s3::S3Settings;

/// Runs one test body against the local directory and against the S3 server.
/// `both!(name, body)` makes `name_local` and `name_s3`; `body: fn(&TestBucket)`.
/// `both!(name, |tb| expr)` does the same with `expr` as the body (`tb: &TestBucket`,
/// names resolved in the calling module): one claim run with arguments.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn local() {
                super::$body(&$crate::common::TestBucket::local());
            }
            #[test]
            fn s3() {
                super::$body(&$crate::common::TestBucket::s3());
            }
        }
    };
    ($name:ident, |$tb:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn local() {
                let $tb = &$crate::common::TestBucket::local();
                $body;
            }
            #[test]
            fn s3() {
                let $tb = &$crate::common::TestBucket::s3();
                $body;
            }
        }
    };
}

/// The moto endpoint scripts/test started. Absent means the suite was not started by
/// scripts/test: fail, never skip, so an S3 leg cannot silently go missing.
pub fn s3_endpoint() -> String {
    std::env::var("HUBVAULT_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("HUBVAULT_TEST_S3_ENDPOINT is not set: run the suite with scripts/test, which starts the S3 server")
    })
}

/// The virtualenv with moto, boto3 (a client we did not write).
pub fn venv() -> PathBuf {
    PathBuf::from(
        std::env::var("HUBVAULT_TEST_VENV").expect("HUBVAULT_TEST_VENV is set by scripts/test"),
    )
}

/// How the library talks to the S3 server: passed in whole, never through the process's
/// environment (setting variables while tests run in threads is unsound).
pub fn s3_settings() -> S3Settings {
    S3Settings {
        endpoint: Some(s3_endpoint()),
        credentials: Some(("hubvault-test".into(), "hubvault-test-secret".into())),
        region: Some("us-east-1".into()),
        retry_timeout: std::time::Duration::from_secs(20),
        ..S3Settings::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    S3,
}

/// A bucket of its own for one test.
pub struct TestBucket {
    pub kind: Kind,
    pub url: String,
    /// The local directory (Local) or the bucket name (S3).
    pub dir: Option<tempfile::TempDir>,
    pub name: String,
}

impl TestBucket {
    pub fn local() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        TestBucket {
            kind: Kind::Local,
            url,
            name: dir.path().display().to_string(),
            dir: Some(dir),
        }
    }

    pub fn s3() -> Self {
        let name = format!("hv-{}", uuid::Uuid::new_v4().simple());
        create_s3_bucket(&s3_endpoint(), &name);
        TestBucket {
            kind: Kind::S3,
            url: format!("s3://{name}"),
            dir: None,
            name,
        }
    }

    /// The library's handle on this bucket.
    pub fn bucket(&self) -> Bucket {
        match self.kind {
            Kind::Local => Bucket::open_with(&self.url, &S3Settings::default()).unwrap(),
            Kind::S3 => Bucket::open_with(&self.url, &s3_settings()).unwrap(),
        }
    }

    /// The binary, with this bucket's environment.
    pub fn cmd(&self) -> Command {
        let mut c = hubvault();
        c.env("HUBVAULT_BUCKET", &self.url);
        if self.kind == Kind::S3 {
            c.env("AWS_ENDPOINT_URL", s3_endpoint())
                .env("AWS_ACCESS_KEY_ID", "hubvault-test")
                .env("AWS_SECRET_ACCESS_KEY", "hubvault-test-secret")
                .env("AWS_REGION", "us-east-1")
                .env("HUBVAULT_S3_RETRY_TIMEOUT", "20");
        }
        c
    }

    /// Objects under `prefix` ("" for all), as (key, size), via the library.
    pub fn keys(&self, prefix: &str) -> Vec<(String, u64)> {
        let b = self.bucket();
        rt().block_on(async {
            let p = object_store::path::Path::from(prefix);
            b.list(&p)
                .await
                .unwrap()
                .into_iter()
                .map(|o| (o.key.to_string(), o.size))
                .collect()
        })
    }
}

/// `PUT /name` on the S3 server (moto takes unsigned bucket creation).
pub fn create_s3_bucket(endpoint: &str, name: &str) {
    let out = Command::new("curl")
        .args(["-fsS", "-X", "PUT", &format!("{endpoint}/{name}")])
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "cannot create bucket {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn hubvault() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hubvault"));
    c.env_remove("HUBVAULT_BUCKET")
        .env_remove("HUBVAULT_ORG")
        .env_remove("HUBVAULT_HUB_ROOT")
        .env_remove("RUST_LOG")
        .env_remove("AWS_ENDPOINT_URL")
        .env("HUBVAULT_ORG", "acme");
    c
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A connector database at `<hub_root>/<connectorId>/sqlite.db`.
pub fn connector_db(hub_root: &Path, source_type: &str, events: usize) -> (PathBuf, Spec) {
    let spec = Spec::new(source_type, &format!("{source_type} test source"), events);
    let dir = hub_root.join(spec.connector.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sqlite.db");
    fixture::create(&path, &spec).unwrap();
    (path, spec)
}

/// The ids of a fixture's connector.
pub fn spec_ids(spec: &Spec) -> hubvault::model::ids::Ids {
    hubvault::model::ids::Ids {
        datahub: spec.datahub,
        connector: spec.connector,
    }
}

/// Fresh random ids: a new hub and connector to restore onto.
pub fn random_ids() -> hubvault::model::ids::Ids {
    hubvault::model::ids::Ids {
        datahub: hubvault::model::ids::DatahubId::random(),
        connector: hubvault::model::ids::ConnectorId::random(),
    }
}

/// Runs a command, returning its output; prints it when `HUBVAULT_TEST_VERBOSE` is set.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the binary runs");
    if std::env::var("HUBVAULT_TEST_VERBOSE").is_ok() {
        eprintln!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and returns stdout parsed as JSON (when `--json` was passed).
pub fn json_of(o: &Output, code: i32) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// Rows of a table as JSON values, ordered by rowid (for comparing databases).
pub fn rows(db: &Path, table: &str) -> Vec<serde_json::Value> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid"))
        .unwrap();
    let names: Vec<String> = stmt.column_names().map(String::from).collect();
    stmt.query_map([], |r| {
        let mut obj = serde_json::Map::new();
        for (i, n) in names.iter().enumerate() {
            let v: rusqlite::types::Value = r.get(i)?;
            let j = match v {
                rusqlite::types::Value::Null => serde_json::Value::Null,
                rusqlite::types::Value::Integer(i) => i.into(),
                rusqlite::types::Value::Real(f) => f.into(),
                rusqlite::types::Value::Text(t) => t.into(),
                rusqlite::types::Value::Blob(b) => hex::encode(b).into(),
            };
            obj.insert(n.clone(), j);
        }
        Ok(serde_json::Value::Object(obj))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// A second moto server that enforces authentication (INITIAL_NO_AUTH_ACTION_COUNT=0):
/// any access key it does not know gets 403 InvalidAccessKeyId. Killed on drop.
pub struct AuthMoto {
    child: std::process::Child,
    pub endpoint: String,
}

impl AuthMoto {
    pub fn start() -> AuthMoto {
        let port = free_port();
        let child = Command::new(venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut m = AuthMoto { child, endpoint };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return m;
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("the auth-enforcing moto server exited: {status}");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = m.child.kill();
        panic!(
            "the auth-enforcing moto server did not start on {}",
            m.endpoint
        );
    }
}

impl Drop for AuthMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// sha256 of a file, hex.
pub fn sha256_of(path: &Path) -> String {
    hubvault::sqlite::fsio::sha256_file(path).unwrap().0
}

/// Downloads `key` of the test bucket with a client we did not write: boto3 for S3, a
/// plain file copy for a local directory.
pub fn download_with_foreign_client(tb: &TestBucket, key: &str, dest: &Path) {
    match tb.kind {
        Kind::Local => {
            std::fs::copy(tb.dir.as_ref().unwrap().path().join(key), dest).unwrap();
        }
        Kind::S3 => {
            let script = r#"
import sys, boto3
endpoint, bucket, key, dest = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
assert key in keys, (key, keys)
s3.download_file(bucket, key, dest)
"#;
            let out = Command::new(venv().join("bin/python"))
                .args(["-c", script, &s3_endpoint(), &tb.name, key])
                .arg(dest)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "boto3: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A temp dir private to this test process, for snapshots and downloads: another
/// process's sweeper of TMPDIR (another checkout's suite running at the same time) can
/// then never remove a file under a running test.
pub fn private_tmp() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// `tb.cmd()` with TMPDIR set to [`private_tmp`].
pub fn cmd_private_tmp(tb: &TestBucket) -> Command {
    let mut c = tb.cmd();
    c.env("TMPDIR", private_tmp());
    c
}

/// `c` (a `hubvault` command) with `restore --json --yes --datahub D --connector C
/// --output OUT` for `spec`'s connector; the caller adds the rest (`--at`).
pub fn restore_output(mut c: Command, spec: &Spec, out: &Path) -> Command {
    c.args(["restore", "--json", "--yes", "--datahub"])
        .arg(spec.datahub.to_string())
        .arg("--connector")
        .arg(spec.connector.to_string())
        .arg("--output")
        .arg(out);
    c
}

/// `sql` run by the `sqlite3` shell on `db` (a process of its own, `-bail`, a 5 s busy
/// timeout), which must succeed with nothing on stderr; its output.
pub fn sqlite3(db: &Path, sql: &str) -> String {
    let o = Command::new("sqlite3")
        .args(["-bail", "-cmd", ".timeout 5000"])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "sqlite3: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A `Write` that keeps what the log subscriber writes, for reading back.
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the library logs at INFO and above while `f` runs on this thread, one JSON
/// document a line (tracing's `fmt().json()`).
pub fn json_log_of(f: impl FnOnce()) -> String {
    let buf = LogBuf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
}

/// SQLite's chunk-size preallocation on `conn`'s database (`SQLITE_FCNTL_CHUNK_SIZE`, as
/// some applications set it): the file then grows `bytes` at a time, and is longer than
/// the database.
pub fn set_chunk_size(conn: &rusqlite::Connection, bytes: i32) {
    let mut chunk: std::ffi::c_int = bytes;
    // SAFETY: a live connection's handle, the documented file control and its int.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_CHUNK_SIZE,
            (&mut chunk as *mut std::ffi::c_int).cast(),
        )
    };
    assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
}

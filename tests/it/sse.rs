//! S3 server-side encryption (issue 16): `--sse`, `HUBVAULT_SSE*` and the config file ask
//! for it on every object written; a bucket policy that refuses unencrypted writes gets
//! an error naming the option. moto does not evaluate bucket policies, so the policy is
//! played by the test proxy (`Fault::DenyUnencrypted`), which also records the headers.

use crate::common::{
    TestBucket, cmd_private_tmp, connector_db, json_of, run, s3_endpoint, stderr, venv,
};
use crate::proxy::{Fault, Proxy};

/// Every request that starts an object (a PUT that is not a part, a multipart start).
fn writes(proxy: &Proxy) -> Vec<crate::proxy::Seen> {
    proxy
        .log()
        .into_iter()
        .filter(|s| {
            (s.method == "PUT" && !s.path_and_query.contains("partNumber="))
                || (s.method == "POST" && s.path_and_query.contains("uploads"))
        })
        .collect()
}

/// What moto stored as the object's encryption (boto3's head_object).
fn stored_sse(tb: &TestBucket, key: &str) -> String {
    let script = r#"
import sys, boto3
endpoint, bucket, key = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1")
print(s3.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption", "none"))
"#;
    let out = std::process::Command::new(venv().join("bin/python"))
        .args(["-c", script, &s3_endpoint(), &tb.name, key])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_bucket_policy_refusing_unencrypted_writes_names_sse_and_with_it_every_write_is_encrypted() {
    let tb = TestBucket::s3();
    let hub = tempfile::tempdir().unwrap();
    // Over one 8 MiB part, so the canonical object goes up as a multipart upload.
    let (db, _) = connector_db(hub.path(), "sdc", 12_000);
    assert!(std::fs::metadata(&db).unwrap().len() > 8 * 1024 * 1024);
    let proxy = Proxy::s3();
    proxy.inject("", "", Fault::DenyUnencrypted, usize::MAX);

    let out = run(proxy
        .cmd(&tb)
        .env("TMPDIR", crate::common::private_tmp())
        .args(["backup", "--db"])
        .arg(&db));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("403") || err.contains("denied") || err.contains("Access"),
        "{err}"
    );
    assert!(err.contains("--sse AES256"), "{err}");
    assert!(tb.keys("").is_empty(), "{:?}", tb.keys(""));

    proxy.reset();
    proxy.inject("", "", Fault::DenyUnencrypted, usize::MAX);
    let doc = json_of(
        &run(proxy
            .cmd(&tb)
            .env("TMPDIR", crate::common::private_tmp())
            .args(["backup", "--json", "--sse", "AES256", "--db"])
            .arg(&db)),
        0,
    );
    let w = writes(&proxy);
    assert!(
        w.iter().any(|s| s.method == "POST"),
        "a multipart upload: {w:#?}"
    );
    assert!(w.len() >= 4, "{w:#?}");
    assert!(
        w.iter()
            .all(|s| s.sse.as_deref() == Some("AES256") && s.status == Some(200)),
        "{w:#?}"
    );
    assert_eq!(stored_sse(&tb, doc["key"].as_str().unwrap()), "AES256");
}

#[test]
fn sse_kms_from_the_environment_or_the_config_file_sends_the_key_id() {
    let tb = TestBucket::s3();
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "solace", 20);
    let proxy = Proxy::s3();
    json_of(
        &run(proxy
            .cmd(&tb)
            .env("HUBVAULT_SSE", "aws:kms")
            .env("HUBVAULT_SSE_KMS_KEY_ID", "alias/hubvault-env")
            .env("TMPDIR", crate::common::private_tmp())
            .args(["backup", "--json", "--db"])
            .arg(&db)),
        0,
    );
    let w = writes(&proxy);
    assert!(!w.is_empty());
    assert!(
        w.iter().all(|s| s.sse.as_deref() == Some("aws:kms")
            && s.sse_kms_key_id.as_deref() == Some("alias/hubvault-env")),
        "{w:#?}"
    );

    proxy.reset();
    let conf = hub.path().join("hubvault.toml");
    std::fs::write(
        &conf,
        "sse = \"aws:kms\"\nsse_kms_key_id = \"alias/hubvault-file\"\n",
    )
    .unwrap();
    json_of(
        &run(proxy
            .cmd(&tb)
            .env("TMPDIR", crate::common::private_tmp())
            .args(["backup", "--json", "--force", "--config"])
            .arg(&conf)
            .arg("--db")
            .arg(&db)),
        0,
    );
    let w = writes(&proxy);
    assert!(!w.is_empty());
    assert!(
        w.iter()
            .all(|s| s.sse_kms_key_id.as_deref() == Some("alias/hubvault-file")),
        "{w:#?}"
    );
    // Without any SSE setting, no header: the bucket's default applies.
    proxy.reset();
    json_of(
        &run(proxy
            .cmd(&tb)
            .env("TMPDIR", crate::common::private_tmp())
            .args(["backup", "--json", "--force", "--db"])
            .arg(&db)),
        0,
    );
    assert!(writes(&proxy).iter().all(|s| s.sse.is_none()));
}

#[test]
fn sse_on_a_local_directory_bucket_is_refused_with_exit_2() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    for args in [["--sse", "AES256"], ["--sse", "aws:kms"]] {
        let out = run(cmd_private_tmp(&tb)
            .args(["backup", "--db"])
            .arg(&db)
            .args(args));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("local directory"), "{}", stderr(&out));
    }
    let out = run(cmd_private_tmp(&tb)
        .args(["backup", "--sse", "aes", "--db"])
        .arg(&db));
    assert_eq!(out.status.code(), Some(2));
    assert!(tb.keys("").is_empty());
}

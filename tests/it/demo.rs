//! `hubvault demo` (issue 16): honours --org, and runs the same story on a bucket named
//! with --bucket, S3 included; never on HUBVAULT_BUCKET by accident.

use crate::both;
use crate::common::{TestBucket, hubvault, json_of, run};

fn on_named_bucket(tb: &TestBucket) {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tb
        .cmd()
        .env("TMPDIR", crate::common::private_tmp())
        .args([
            "demo", "--json", "--events", "30", "--org", "lab-two", "--bucket", &tb.url, "--dir",
        ])
        .arg(dir.path().join("demo")));
    let doc = json_of(&out, 0);
    assert_eq!(doc["ok"], true, "{doc:#}");
    assert_eq!(doc["org"], "lab-two");
    assert_eq!(doc["bucket"], tb.url.as_str());
    assert_eq!(doc["restored"].as_array().unwrap().len(), 4);
    let keys = tb.keys("");
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|(k, _)| k.starts_with("lab-two/datahub/")),
        "{keys:?}"
    );
    // The bucket holds the backups, not a directory of the demo's own.
    assert!(!dir.path().join("demo/bucket").exists());
}
both!(
    demo_runs_the_whole_story_on_the_named_bucket_under_the_named_org,
    on_named_bucket
);

#[test]
fn demo_never_writes_into_hubvault_bucket_from_the_environment() {
    let tb = TestBucket::local();
    let dir = tempfile::tempdir().unwrap();
    let out = run(hubvault()
        .env("HUBVAULT_BUCKET", &tb.url)
        .args(["demo", "--json", "--events", "20", "--dir"])
        .arg(dir.path().join("demo")));
    let doc = json_of(&out, 0);
    assert_eq!(doc["ok"], true);
    assert!(tb.keys("").is_empty(), "{:?}", tb.keys(""));
    assert!(
        doc["bucket"]
            .as_str()
            .unwrap()
            .starts_with(&format!("file://{}", dir.path().display())),
        "{doc}"
    );
}

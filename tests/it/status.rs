//! `hubvault status`: every backup's state from one LIST; exit 3 when any is stale or
//! broken; cheap at fleet scale (the request count is asserted).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use hubvault::model::ids::{ConnectorId, DatahubId, OrgSlug};
use hubvault::model::layout::{ConnectorKey, VersionId};
use hubvault::store::{Bucket, WriteMode};

use crate::both;
use crate::common::{TestBucket, cmd_private_tmp, connector_db, json_of, rt, run, stderr, stdout};
use crate::proxy::Proxy;

/// Writes the keys a hubvault backup leaves (canonical, label, one version and its
/// manifest) with small placeholder bodies; status never reads bodies. Connectors with
/// index < `broken` get no canonical object. Bounded parallelism.
pub fn seed(bucket: &Bucket, org: &str, n: usize, broken: usize) -> Vec<ConnectorKey> {
    let org = OrgSlug::parse(org).unwrap();
    let hubs: Vec<DatahubId> = (0..(n / 50).max(1)).map(|_| DatahubId::random()).collect();
    let cks: Vec<ConnectorKey> = (0..n)
        .map(|i| ConnectorKey::new(org.clone(), hubs[i % hubs.len()], ConnectorId::random()))
        .collect();
    let sha = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56abcd";
    let v = VersionId::new(chrono::Utc::now(), sha);
    let mut puts = Vec::new();
    for (i, ck) in cks.iter().enumerate() {
        if i >= broken {
            puts.push((
                ck.canonical(&Default::default()),
                Bytes::from_static(b"SQLite format 3\0placeholder"),
            ));
        }
        puts.push((ck.label("sdc", &format!("source {i}")), Bytes::new()));
        puts.push((ck.version_data(&v), Bytes::from_static(b"zstd")));
        puts.push((ck.version_manifest(&v), Bytes::from_static(b"{}")));
    }
    let b = Arc::new(bucket.clone());
    rt().block_on(async {
        futures::stream::iter(puts)
            .map(|(k, body)| {
                let b = b.clone();
                async move { b.put_bytes(&k, body, WriteMode::Overwrite).await.unwrap() }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
    });
    cks
}

fn broken_first_and_exit_3(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, fresh) = connector_db(hub.path(), "hrb-cellario", 40);
    json_of(
        &run(cmd_private_tmp(tb)
            .args(["backup", "--json", "--db"])
            .arg(&db)),
        0,
    );
    let out = run(cmd_private_tmp(tb).args(["status", "--json"]));
    let doc = json_of(&out, 0);
    assert_eq!(doc["summary"]["fresh"], 1);
    let c = &doc["connectors"][0];
    assert_eq!(c["connector"], fresh.connector.to_string());
    assert_eq!(c["name"], "hrb-cellario test source");
    assert_eq!(c["source_type"], "hrb-cellario");
    assert_eq!(c["state"], "fresh");
    assert_eq!(c["versions"], 1);
    assert!(c["size"].as_u64().unwrap() > 4096);

    // A connector whose history is there but whose canonical object is not: broken.
    let broken = seed(&tb.bucket(), "acme", 1, 1).remove(0);
    let out = run(cmd_private_tmp(tb).args(["status", "--json"]));
    let doc = json_of(&out, 3);
    assert_eq!(doc["summary"]["broken"], 1);
    assert_eq!(
        doc["connectors"][0]["connector"],
        broken.connector.to_string()
    );
    assert_eq!(doc["connectors"][0]["state"], "broken");
    assert!(
        doc["connectors"][0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("no object at the canonical key")
    );
    assert_eq!(doc["connectors"][1]["state"], "fresh");

    // Every backup at least --max-age old is stale, listed after the broken one.
    let doc = json_of(
        &run(cmd_private_tmp(tb).args(["status", "--json", "--max-age", "0s"])),
        3,
    );
    let states: Vec<&str> = doc["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["broken", "stale"]);

    // Human text: stale and broken first, problems under them, a summary line.
    let out = run(cmd_private_tmp(tb).args(["status", "--max-age", "0s"]));
    assert_eq!(out.status.code(), Some(3));
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows[1].starts_with("BROKEN") && rows[3].starts_with("STALE"),
        "{text}"
    );
    assert!(
        text.contains("2 backups in acme/: 0 fresh, 1 stale, 1 broken"),
        "{text}"
    );

    // --datahub narrows to one hub.
    let doc = json_of(
        &run(cmd_private_tmp(tb).args([
            "status",
            "--json",
            "--datahub",
            &fresh.datahub.to_string(),
        ])),
        0,
    );
    assert_eq!(doc["summary"]["total"], 1);
}
both!(
    status_lists_broken_and_stale_first_and_exits_3,
    broken_first_and_exit_3
);

fn bad_flags(tb: &TestBucket) {
    for args in [
        vec!["status", "--datahub", "not-a-uuid"],
        vec!["status", "--org", "ACME"],
        vec!["status", "--max-age", "soon"],
    ] {
        let out = run(cmd_private_tmp(tb).args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert!(tb.keys("").is_empty());
}
both!(status_refuses_malformed_flags_with_exit_2, bad_flags);

fn drill_shows_in_status(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 20);
    json_of(
        &run(cmd_private_tmp(tb)
            .args(["backup", "--json", "--db"])
            .arg(&db)),
        0,
    );
    json_of(&run(cmd_private_tmp(tb).args(["verify", "--json"])), 0);
    let doc = json_of(&run(cmd_private_tmp(tb).args(["status", "--json"])), 0);
    assert_eq!(doc["connectors"][0]["last_drill"]["ok"], true);
}
both!(status_shows_the_last_drill_result, drill_shows_in_status);

/// Issue 5: status over 2,000 connectors makes one paged LIST and nothing else. Issue
/// 12: connectors under continuous capture (a marker each, and segments in the org's
/// `stream/`) cost only their marker's share of a page: segments are never listed.
#[test]
fn status_over_2000_connectors_on_s3_is_one_paged_list() {
    let tb = TestBucket::s3();
    let (n, broken) = (2000, 10);
    let cks = seed(&tb.bucket(), "acme", n, broken);
    // Half the connectors are captured: a marker each, and 1,500 segments of the hubs.
    let b = Arc::new(tb.bucket());
    let mut puts: Vec<object_store::path::Path> =
        cks.iter().step_by(2).map(|ck| ck.stream_marker()).collect();
    let streamed = puts.len();
    for i in 0..1500u64 {
        let sk = hubvault::model::layout::StreamKeys::new(
            cks[0].org.clone(),
            cks[i as usize % 40].datahub,
        );
        puts.push(sk.segment(chrono::Utc::now(), "0a0b0c0d", i));
    }
    rt().block_on(async {
        futures::stream::iter(puts)
            .map(|k| {
                let b = b.clone();
                async move {
                    b.put_bytes(&k, Bytes::new(), WriteMode::Overwrite)
                        .await
                        .unwrap()
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
    });
    let keys = 4 * n - broken + streamed;
    let proxy = Proxy::s3();
    let out = run(cmd_private_tmp(&tb)
        .env("AWS_ENDPOINT_URL", proxy.url())
        .args(["status", "--json"]));
    let doc = json_of(&out, 3);
    assert_eq!(doc["summary"]["total"], n);
    assert_eq!(doc["summary"]["broken"], broken);
    assert_eq!(doc["summary"]["fresh"], n - broken);
    let captured = doc["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["captured_at"].is_string() && c["capture_lag_seconds"].is_number())
        .count();
    assert_eq!(captured, streamed);
    let requests = proxy.requests();
    // ListObjectsV2 pages of 1,000 keys: 7,990 keys -> 8 requests, no GET or HEAD of
    // any object.
    assert_eq!(requests.len(), keys.div_ceil(1000), "{requests:#?}");
    assert!(
        requests.iter().all(|(method, path)| method == "GET"
            && path.starts_with(&format!("/{}?", tb.name))
            && path.contains("list-type=2")),
        "{requests:#?}"
    );
}

/// Issue 16: a listing over several orgs names the org on every row; a filter that finds
/// nothing is not healthy (exit 3) and names the orgs that do exist.
fn orgs_named_and_empty_filters_fail(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db_a, a) = connector_db(hub.path(), "sdc", 20);
    let (db_b, b) = connector_db(hub.path(), "solace", 20);
    for (db, org) in [(&db_a, "acme"), (&db_b, "beta-lab")] {
        json_of(
            &run(cmd_private_tmp(tb)
                .args(["backup", "--json", "--org", org, "--db"])
                .arg(db)),
            0,
        );
    }
    let doc = json_of(
        &run(cmd_private_tmp(tb).args(["status", "--json", "--all-orgs"])),
        0,
    );
    assert_eq!(doc["summary"]["total"], 2);
    assert_eq!(doc["summary"]["never_verified"], 2);
    let mut orgs: Vec<&str> = doc["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["org"].as_str().unwrap())
        .collect();
    orgs.sort();
    assert_eq!(orgs, ["acme", "beta-lab"]);
    let out = run(cmd_private_tmp(tb).args(["status", "--all-orgs"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.lines().next().unwrap().contains("ORG"), "{text}");
    for (org, spec) in [("acme", &a), ("beta-lab", &b)] {
        let row = text
            .lines()
            .find(|l| l.contains(&spec.connector.to_string()))
            .unwrap();
        assert!(row.contains(org), "{row}");
    }
    assert!(
        text.contains(
            "2 backups in the whole bucket: 2 fresh, 0 stale, 0 broken, 2 never verified"
        ),
        "{text}"
    );

    // A typo in the org: exit 3, and the hint names the orgs that exist.
    let out = run(cmd_private_tmp(tb).args(["status", "--org", "acne"]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Try:") && err.contains("acme") && err.contains("beta-lab"),
        "{err}"
    );
    let doc = json_of(
        &run(cmd_private_tmp(tb).args(["status", "--json", "--org", "acne"])),
        3,
    );
    assert_eq!(doc["summary"]["total"], 0);
    assert_eq!(
        doc["empty"]["orgs_in_bucket"],
        serde_json::json!(["acme", "beta-lab"])
    );
    // A hub or connector filter that matches nothing: exit 3 too.
    for filter in ["--datahub", "--connector"] {
        let doc = json_of(
            &run(cmd_private_tmp(tb).args([
                "status",
                "--json",
                filter,
                &uuid::Uuid::new_v4().to_string(),
            ])),
            3,
        );
        assert!(
            doc["empty"]["hint"].as_str().unwrap().contains("acme"),
            "{doc}"
        );
    }
    // The right connector filter finds its backup.
    let doc = json_of(
        &run(cmd_private_tmp(tb).args([
            "status",
            "--json",
            "--connector",
            &a.connector.to_string(),
        ])),
        0,
    );
    assert_eq!(doc["summary"]["total"], 1);
}
both!(
    status_names_orgs_and_an_empty_filter_exits_3_naming_the_orgs_there,
    orgs_named_and_empty_filters_fail
);

/// Issue 16: --stale-only lists only what needs attention (the summary still counts
/// all); --sort age puts the oldest first whatever the state.
fn stale_only_and_sort_by_age(tb: &TestBucket) {
    seed(&tb.bucket(), "acme", 4, 1);
    let doc = json_of(
        &run(cmd_private_tmp(tb).args(["status", "--json", "--stale-only"])),
        3,
    );
    assert_eq!(doc["summary"]["total"], 4);
    let rows = doc["connectors"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{doc}");
    assert_eq!(rows[0]["state"], "broken");

    let doc = json_of(
        &run(cmd_private_tmp(tb).args(["status", "--json", "--sort", "age"])),
        3,
    );
    let ages: Vec<f64> = doc["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["age_seconds"].as_f64().unwrap_or(f64::INFINITY))
        .collect();
    assert_eq!(ages.len(), 4);
    assert!(ages.windows(2).all(|w| w[0] >= w[1]), "{ages:?}");
    let out = run(cmd_private_tmp(tb).args(["status", "--sort", "oldest"]));
    assert_eq!(out.status.code(), Some(2));
}
both!(
    status_stale_only_lists_what_needs_attention_and_sort_age_puts_the_oldest_first,
    stale_only_and_sort_by_age
);

//! `hubvault backup`: the seed's rule, on both backends.

use crate::both;
use crate::common::{TestBucket, connector_db, json_of, run};

fn uploads_then_skips(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "hrb-cellario", 200);
    let key = format!(
        "acme/datahub/{}/connector/{}/sqlite.db",
        spec.datahub, spec.connector
    );
    let first = json_of(
        &run(tb.cmd().args(["backup", "--json", "--db"]).arg(&db)),
        0,
    );
    assert_eq!(first["decision"], "uploaded");
    assert_eq!(first["reason"], "no backup at the key");
    assert_eq!(first["key"], key.as_str());
    let second = json_of(
        &run(tb.cmd().args(["backup", "--json", "--db"]).arg(&db)),
        0,
    );
    assert_eq!(second["decision"], "skipped");
    let keys = tb.keys("acme");
    assert!(keys.iter().any(|(k, _)| k == &key), "{keys:?}");
}
both!(
    backup_uploads_to_the_exact_key_then_skips_while_fresh,
    uploads_then_skips
);

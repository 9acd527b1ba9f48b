//! The id rewrite on generated databases. The input picks the values of an extra table
//! of a realistic connector database: text fragments, the old ids in lower and upper
//! case (bare, as JSON keys, in paths), the new ids, numbers, NULLs, blobs. After the
//! rewrite every old id is the new one, every other byte is as it was, the checks pass,
//! and a second rewrite changes nothing. (`tests/it/props.rs` is the same property under
//! proptest, in CI.)
#![no_main]

#[path = "../../src/cli/fixture.rs"]
#[allow(dead_code)]
mod fixture;

use hubvault::model::ids::{ConnectorId, DatahubId};
use hubvault::model::ids::Ids;
use hubvault::sqlite::rewrite;
use libfuzzer_sys::fuzz_target;
use rusqlite::types::Value;

fn values(bytes: &[u8], hub: &str, conn: &str, new_hub: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < bytes.len() && out.len() < 60 {
        let b = bytes[i];
        i += 1;
        match b % 11 {
            0 => text.push_str(hub),
            1 => text.push_str(&hub.to_uppercase()),
            2 => text.push_str(conn),
            3 => text.push_str(&conn.to_uppercase()),
            4 => text.push_str(new_hub),
            5 => text.push_str(&format!("{{\"{conn}\":{{\"cursor\":{b}}}}}")),
            6 => text.push_str(&format!("/var/datahub/{conn}/x")),
            7 => out.push(Value::Text(std::mem::take(&mut text))),
            8 => out.push(Value::Integer(b as i64 * 1_000_003)),
            9 => out.push(Value::Null),
            _ => {
                let n = (b as usize / 11).min(bytes.len() - i);
                out.push(Value::Blob(bytes[i..i + n].to_vec()));
                i += n;
            }
        }
        // Plain printable text between fragments.
        if b.is_ascii_graphic() && b % 3 == 0 {
            text.push(b as char);
        }
    }
    out.push(Value::Text(text));
    out
}

fuzz_target!(|bytes: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let spec = crate::fixture::Spec::new("sdc", "fuzz", 2);
    crate::fixture::create(&path, &spec).unwrap();
    let (hub, conn) = (spec.datahub.to_string(), spec.connector.to_string());
    let to = Ids { datahub: DatahubId::random(), connector: ConnectorId::random() };
    let (nh, nc) = (to.datahub.to_string(), to.connector.to_string());
    let vals = values(bytes, &hub, &conn, &nh);
    let mut db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("CREATE TABLE Extra(k INTEGER PRIMARY KEY, v)").unwrap();
    for v in &vals {
        db.execute("INSERT INTO Extra(v) VALUES (?1)", [v]).unwrap();
    }
    let from = Ids { datahub: spec.datahub, connector: spec.connector };
    rewrite::apply(&mut db, &path, from, to, false).unwrap();
    let got: Vec<Value> = db
        .prepare("SELECT v FROM Extra ORDER BY k")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want: Vec<Value> = vals
        .into_iter()
        .map(|v| match v {
            Value::Text(t) => Value::Text(
                t.replace(&hub, &nh)
                    .replace(&hub.to_uppercase(), &nh.to_uppercase())
                    .replace(&conn, &nc)
                    .replace(&conn.to_uppercase(), &nc.to_uppercase()),
            ),
            other => other,
        })
        .collect();
    assert_eq!(got, want);
    assert!(rewrite::scan(&db, &path, &[hub, conn]).unwrap().is_empty());
    assert!(rewrite::apply(&mut db, &path, from, to, false).unwrap().is_noop());
});

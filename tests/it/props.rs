//! Property tests over the parsers that meet hostile input: ids, the key layout and
//! the manifest reader (the same functions the cargo-fuzz targets in fuzz/ drive).
//! Bounded for CI: `PROPTEST_CASES` (default 2048 here, 20,000 in the long mode) sets the cases per property.

use hubvault::model::ids::{ConnectorId, DatahubId, OrgSlug};
use hubvault::model::layout::DbFileName;
use hubvault::model::layout::{ConnectorKey, KeyKind, VersionId, parse_key};
use hubvault::model::manifest::Manifest;
use object_store::path::Path;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(if crate::reliability::long() {
            20_000
        } else {
            2048
        });
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn uuid() -> impl Strategy<Value = uuid::Uuid> {
    any::<u128>().prop_map(uuid::Uuid::from_u128)
}

fn org() -> impl Strategy<Value = OrgSlug> {
    "[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?".prop_map(|s| OrgSlug::parse(&s).unwrap())
}

fn connector_key() -> impl Strategy<Value = ConnectorKey> {
    (org(), uuid(), uuid()).prop_map(|(o, d, c)| {
        ConnectorKey::new(
            o,
            DatahubId::parse(&d.hyphenated().to_string()).unwrap(),
            ConnectorId::parse(&c.hyphenated().to_string()).unwrap(),
        )
    })
}

fn version() -> impl Strategy<Value = VersionId> {
    (0i64..4_102_444_800_000, "[0-9a-f]{64}").prop_map(|(ms, sha)| {
        VersionId::new(chrono::DateTime::from_timestamp_millis(ms).unwrap(), &sha)
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn id_parsers_never_panic_and_accept_only_what_they_print(s in any::<String>()) {
        if let Ok(id) = DatahubId::parse(&s) {
            prop_assert_eq!(id.to_string(), s.clone());
        }
        if let Ok(id) = ConnectorId::parse(&s) {
            prop_assert_eq!(id.to_string(), s.clone());
        }
        if let Ok(o) = OrgSlug::parse(&s) {
            prop_assert_eq!(o.as_str(), s.as_str());
            prop_assert!(!s.contains('/') && !s.contains(".."));
        }
        if let Ok(f) = DbFileName::parse(&s) {
            prop_assert!(!s.contains('/') && s != ".." && s != ".");
            prop_assert_eq!(f.as_str(), s.as_str());
        }
        if let Ok(v) = VersionId::parse(&s) {
            prop_assert_eq!(v.as_str(), s.as_str());
        }
    }

    #[test]
    fn every_uuid_round_trips_and_other_spellings_are_refused(u in uuid()) {
        let canonical = u.hyphenated().to_string();
        prop_assert_eq!(ConnectorId::parse(&canonical).unwrap().to_string(), canonical.clone());
        let upper = canonical.to_uppercase();
        if upper != canonical {
            prop_assert!(ConnectorId::parse(&upper).is_err());
        }
        prop_assert!(ConnectorId::parse(&u.simple().to_string()).is_err());
        prop_assert!(ConnectorId::parse(&u.braced().to_string()).is_err());
    }

    #[test]
    fn every_key_we_build_parses_back_to_what_built_it(
        ck in connector_key(),
        v in version(),
        source_type in any::<String>(),
        name in any::<String>(),
        ok in any::<bool>(),
    ) {
        let label = ck.label(&source_type, &name);
        let (_, label_kind) = parse_key(&Path::parse(label.as_ref()).unwrap()).unwrap();
        let is_label = matches!(label_kind, KeyKind::Label { .. });
        prop_assert!(is_label, "a label key parsed as {:?}", label_kind);
        for (key, kind) in [
            (ck.canonical(&DbFileName::default()), KeyKind::Canonical(DbFileName::default())),
            (ck.latest_manifest(), KeyKind::LatestManifest),
            (ck.version_data(&v), KeyKind::VersionData(v.clone())),
            (ck.version_manifest(&v), KeyKind::VersionManifest(v.clone())),
            (ck.drill(&hubvault::model::layout::stamp(v.time()), ok), KeyKind::Drill { stamp: hubvault::model::layout::stamp(v.time()), ok }),
        ] {
            // Through a string, as a LIST returns it.
            let listed = Path::parse(key.as_ref()).unwrap();
            prop_assert_eq!(parse_key(&listed), Some((ck.clone(), kind)));
        }
        prop_assert_eq!(VersionId::parse(v.as_str()).unwrap(), v);
    }

    #[test]
    fn parse_key_never_panics_on_arbitrary_keys(parts in prop::collection::vec(any::<String>(), 0..9)) {
        let key = Path::from_iter(parts.iter().map(|p| p.as_str()).filter(|p| !p.is_empty()));
        if let Some((ck, _)) = parse_key(&key) {
            // Whatever it accepts lies under a valid connector prefix.
            prop_assert!(key.as_ref().starts_with(ck.prefix().as_ref()));
        }
    }

    #[test]
    fn manifest_reader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Manifest::from_json(&bytes, "k");
    }

    #[test]
    fn manifest_reader_refuses_every_truncation_and_single_byte_change(cut in 0usize..10_000, at in 0usize..10_000, byte in any::<u8>()) {
        let m = sample();
        let json = m.to_json();
        let cut = cut % json.len();
        // Cutting inside the document refuses it (the trailing newline is whitespace).
        if cut < json.len() - 1 {
            prop_assert!(Manifest::from_json(&json[..cut], "k").is_err());
        }
        let mut changed = json.clone();
        let at = at % json.len();
        changed[at] = byte;
        // A changed byte either is refused or reads back as a valid manifest.
        if let Ok(back) = Manifest::from_json(&changed, "k") {
            prop_assert_eq!(Manifest::from_json(&back.to_json(), "k").unwrap(), back);
        }
    }

    #[test]
    fn valid_manifests_round_trip(ck in connector_key(), v in version(), size_pages in 1u64..1_000_000, name in any::<String>(), rows in prop::collection::btree_map("[A-Za-z_]{1,12}", any::<u64>(), 0..6)) {
        let mut m = sample();
        m.org = ck.org.clone();
        m.datahub = ck.datahub;
        m.connector = ck.connector;
        m.sha256 = format!("{}{}", v.sha_prefix(), "0".repeat(52));
        m.version = v;
        m.page_count = size_pages;
        m.size = m.page_size * size_pages;
        m.name = name;
        m.rows = rows;
        prop_assert_eq!(Manifest::from_json(&m.to_json(), "k").unwrap(), m);
    }
}

fn sample() -> Manifest {
    let sha = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56abcd".to_string();
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T07:01:02.123Z")
        .unwrap()
        .to_utc();
    Manifest {
        format: hubvault::model::manifest::FORMAT,
        org: OrgSlug::parse("acme").unwrap(),
        datahub: DatahubId::parse("6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01").unwrap(),
        connector: ConnectorId::parse("0b5e7d1a-93c2-4f6b-8a1e-7c4d2f9e3a10").unwrap(),
        db_file: "sqlite.db".into(),
        name: "Cellario".into(),
        source_type: "hrb-cellario".into(),
        version: VersionId::new(at, &sha),
        sha256: sha,
        size: 8192,
        stored_size: 900,
        page_size: 4096,
        page_count: 2,
        journal_mode: "wal".into(),
        rows: Default::default(),
        check: "integrity_check".into(),
        snapshot_at: at,
        uploaded_at: at,
        tool: hubvault::model::manifest::tool(),
        host: "hub-1".into(),
        canonical: None,
    }
}

// ---------------------------------------------------------------- the id rewrite

/// One generated value of the extra table, built from fragments: plain text, the old ids
/// in lower and upper case (in JSON values, JSON keys and paths), the new ids, numbers,
/// NULL and blobs.
#[derive(Clone, Debug)]
enum Frag {
    Text(String),
    OldHub { upper: bool },
    OldConn { upper: bool },
    NewHub,
    JsonKeyedByConn,
    PathOfConn,
}

fn frag() -> impl Strategy<Value = Frag> {
    prop_oneof![
        "[ -~]{0,24}".prop_map(Frag::Text),
        any::<bool>().prop_map(|upper| Frag::OldHub { upper }),
        any::<bool>().prop_map(|upper| Frag::OldConn { upper }),
        Just(Frag::NewHub),
        Just(Frag::JsonKeyedByConn),
        Just(Frag::PathOfConn),
    ]
}

#[derive(Clone, Debug)]
enum Cell {
    Text(Vec<Frag>),
    Int(i64),
    Null,
    Blob(Vec<u8>),
}

fn cell() -> impl Strategy<Value = Cell> {
    prop_oneof![
        4 => proptest::collection::vec(frag(), 0..6).prop_map(Cell::Text),
        1 => any::<i64>().prop_map(Cell::Int),
        1 => Just(Cell::Null),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Cell::Blob),
    ]
}

fn render(frags: &[Frag], hub: &str, conn: &str, new_hub: &str) -> String {
    let case = |s: &str, upper: bool| {
        if upper {
            s.to_uppercase()
        } else {
            s.to_string()
        }
    };
    frags
        .iter()
        .map(|f| match f {
            Frag::Text(t) => t.clone(),
            Frag::OldHub { upper } => case(hub, *upper),
            Frag::OldConn { upper } => case(conn, *upper),
            Frag::NewHub => new_hub.to_string(),
            Frag::JsonKeyedByConn => format!("{{\"{conn}\":{{\"cursor\":7}}}}"),
            Frag::PathOfConn => format!("/var/datahub/{conn}/outbox/x.json"),
        })
        .collect()
}

fn rewrite_config() -> ProptestConfig {
    // Each case builds a database on disk: a sixteenth of the parser properties' cases.
    let c = config();
    ProptestConfig {
        cases: (c.cases / 16).max(32),
        ..c
    }
}

proptest! {
    #![proptest_config(rewrite_config())]

    /// The rewrite on generated databases: every old id (lower or upper case, in any
    /// column of a table it has never seen, in JSON keys and paths) becomes the new one,
    /// every other byte and value stays as it was, the checks pass, and a second run
    /// changes nothing.
    #[test]
    fn rewrite_replaces_exactly_the_old_ids_and_is_idempotent(rows in proptest::collection::vec(proptest::collection::vec(cell(), 3), 0..25)) {
        use hubvault::model::ids::Ids;
        use hubvault::sqlite::rewrite;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sqlite.db");
        let spec = crate::fixture::Spec::new("sdc", "gen", 3);
        crate::fixture::create(&path, &spec).unwrap();
        let (hub, conn) = (spec.datahub.to_string(), spec.connector.to_string());
        let to = Ids { datahub: DatahubId::random(), connector: ConnectorId::random() };
        let (nh, nc) = (to.datahub.to_string(), to.connector.to_string());
        let mut db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE Extra(k INTEGER PRIMARY KEY, a, b, c)").unwrap();
        let mut expected: Vec<Vec<rusqlite::types::Value>> = Vec::new();
        for row in &rows {
            let mut vals = Vec::new();
            let mut want = Vec::new();
            for c in row {
                let (v, w) = match c {
                    Cell::Text(f) => {
                        let t = render(f, &hub, &conn, &nh);
                        let w = t
                            .replace(&hub, &nh)
                            .replace(&hub.to_uppercase(), &nh.to_uppercase())
                            .replace(&conn, &nc)
                            .replace(&conn.to_uppercase(), &nc.to_uppercase());
                        (rusqlite::types::Value::Text(t), rusqlite::types::Value::Text(w))
                    }
                    Cell::Int(i) => (rusqlite::types::Value::Integer(*i), rusqlite::types::Value::Integer(*i)),
                    Cell::Null => (rusqlite::types::Value::Null, rusqlite::types::Value::Null),
                    Cell::Blob(b) => (rusqlite::types::Value::Blob(b.clone()), rusqlite::types::Value::Blob(b.clone())),
                };
                vals.push(v);
                want.push(w);
            }
            db.execute("INSERT INTO Extra(a, b, c) VALUES (?1, ?2, ?3)", rusqlite::params_from_iter(vals)).unwrap();
            expected.push(want);
        }
        let from = Ids { datahub: spec.datahub, connector: spec.connector };
        let events_before: i64 = db.query_row("SELECT count(*) FROM Events", [], |r| r.get(0)).unwrap();
        rewrite::apply(&mut db, &path, from, to, false).unwrap();

        let got: Vec<Vec<rusqlite::types::Value>> = db
            .prepare("SELECT a, b, c FROM Extra ORDER BY k").unwrap()
            .query_map([], |r| Ok(vec![r.get(0)?, r.get(1)?, r.get(2)?])).unwrap()
            .collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(got, expected);
        let events_after: i64 = db.query_row("SELECT count(*) FROM Events", [], |r| r.get(0)).unwrap();
        prop_assert_eq!(events_before, events_after);
        prop_assert!(rewrite::scan(&db, &path, &[hub.clone(), conn.clone()]).unwrap().is_empty());
        let info = hubvault::sqlite::db::read_info(&db, &path).unwrap();
        prop_assert_eq!((info.datahub, info.connector), (to.datahub, to.connector));
        hubvault::sqlite::db::check_integrity(&db, &path, 0).unwrap();
        let again = rewrite::apply(&mut db, &path, from, to, false).unwrap();
        prop_assert!(again.is_noop(), "{:?}", again);
    }
}

proptest! {
    #![proptest_config(rewrite_config())]

    /// The restore planner's input, a downloaded database of arbitrary schema, encoding
    /// and values (`hostile_db`; the cargo-fuzz target `restore_input` drives the same
    /// code): the rewrite never panics, and is either exact (every rewritable spelling
    /// replaced, every other byte kept, what it cannot rewrite refused unless accepted,
    /// then listed) or refused with the database unchanged: never a silent partial one.
    #[test]
    fn the_rewrite_of_a_hostile_database_is_exact_or_refused_never_partial(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let case = crate::hostile_db::build(&bytes);
        crate::hostile_db::check(&case);
    }
}

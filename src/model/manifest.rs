//! The manifest written beside every kept version and beside the canonical object
//! (`hubvault/latest.json`): what `restore`, `verify` and `versions` check against.
//!
//! The reader is strict: a manifest that does not parse, or whose fields are out of
//! range, is refused with the key it came from; it is never half-trusted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};
use crate::model::layout::{ConnectorKey, DbFileName, VersionId};

pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub org: OrgSlug,
    pub datahub: DatahubId,
    pub connector: ConnectorId,
    /// The database's file name (the canonical key's last part).
    pub db_file: String,
    pub name: String,
    pub source_type: String,
    pub version: VersionId,
    /// sha256 (hex) and size of the plain SQLite file.
    pub sha256: String,
    pub size: u64,
    /// Size of the zstd version object.
    pub stored_size: u64,
    pub page_size: u64,
    pub page_count: u64,
    /// The live database's journal mode when the snapshot was taken.
    pub journal_mode: String,
    pub rows: BTreeMap<String, u64>,
    /// Which check the snapshot passed: `integrity_check` or `quick_check`.
    pub check: String,
    /// When the database was read. In `latest.json` of an unchanged database this
    /// moves on with each refresh (the content was read again then); a version's own
    /// manifest keeps its first reading.
    pub snapshot_at: chrono::DateTime<chrono::Utc>,
    pub uploaded_at: chrono::DateTime<chrono::Utc>,
    pub tool: String,
    pub host: String,
    /// Only in `latest.json`, and only when the store answered the upload with an ETag:
    /// the canonical object THIS backup wrote. A HEAD that finds the same ETag and size
    /// at the canonical key proves the object there is still that upload, so the
    /// version with this manifest's sha256 holds the same bytes (restore then fetches the
    /// zstd version instead). Absent in a version's own manifest and in `latest.json`
    /// written by an older hubvault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical: Option<CanonicalRecord>,
}

/// The canonical object as the store answered our upload of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalRecord {
    /// The ETag, as the store gave it (quotes included).
    pub e_tag: String,
    /// Its size in bytes (the plain SQLite file).
    pub size: u64,
}

impl CanonicalRecord {
    /// True if and only if `e_tag` and `size` (a HEAD of the canonical key) are the
    /// upload this record names.
    pub fn is(&self, e_tag: Option<&str>, size: u64) -> bool {
        e_tag == Some(self.e_tag.as_str()) && size == self.size
    }
}

impl Manifest {
    pub fn connector_key(&self) -> ConnectorKey {
        ConnectorKey::new(self.org.clone(), self.datahub, self.connector)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        v.push(b'\n');
        v
    }

    /// Parses and checks a manifest read from `key`.
    pub fn from_json(bytes: &[u8], key: &str) -> Result<Manifest> {
        let bad = |why: String| {
            Error::check(
                format!("manifest {key} is not valid: {why}"),
                "it was damaged or written by something else; `hubvault verify` checks the backups, and a new backup rewrites it",
            )
        };
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.format != FORMAT {
            return Err(bad(format!(
                "format {} (this hubvault reads {FORMAT})",
                m.format
            )));
        }
        if m.sha256.len() != 64
            || !m
                .sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(bad("sha256 is not 64 lowercase hex digits".into()));
        }
        if !m.sha256.starts_with(m.version.sha_prefix()) {
            return Err(bad("sha256 does not match the version id".into()));
        }
        DbFileName::parse(&m.db_file).map_err(|e| bad(e.to_string()))?;
        if m.page_size == 0 || m.size != m.page_size.saturating_mul(m.page_count) {
            return Err(bad("size is not page_size × page_count".into()));
        }
        Ok(m)
    }
}

/// This machine's host name, for the record.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn tool() -> String {
    format!("hubvault {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let sha = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56abcd".to_string();
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T07:01:02.123Z")
            .unwrap()
            .to_utc();
        Manifest {
            format: FORMAT,
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
            rows: BTreeMap::from([("Events".to_string(), 3)]),
            check: "integrity_check".into(),
            snapshot_at: at,
            uploaded_at: at,
            tool: tool(),
            host: "hub-1".into(),
            canonical: None,
        }
    }

    #[test]
    fn manifest_round_trips_through_json() {
        let m = sample();
        assert_eq!(Manifest::from_json(&m.to_json(), "k").unwrap(), m);
        let with = Manifest {
            canonical: Some(CanonicalRecord {
                e_tag: "\"9b2cf535f27731c974343645a3985328\"".into(),
                size: 8192,
            }),
            ..m
        };
        assert_eq!(Manifest::from_json(&with.to_json(), "k").unwrap(), with);
    }

    #[test]
    fn a_manifest_without_the_canonical_record_reads_as_none() {
        // What an older hubvault wrote, and what a version's own manifest holds.
        let json = String::from_utf8(sample().to_json()).unwrap();
        assert!(!json.contains("canonical"), "{json}");
        assert_eq!(
            Manifest::from_json(json.as_bytes(), "k").unwrap().canonical,
            None
        );
    }

    #[test]
    fn the_canonical_record_matches_only_the_same_tag_and_size() {
        let r = CanonicalRecord {
            e_tag: "\"abc\"".into(),
            size: 10,
        };
        assert!(r.is(Some("\"abc\""), 10));
        assert!(!r.is(Some("\"abc\""), 11));
        assert!(!r.is(Some("\"abd\""), 10));
        assert!(!r.is(None, 10));
    }

    #[test]
    fn reader_refuses_damaged_or_inconsistent_manifests() {
        let good = String::from_utf8(sample().to_json()).unwrap();
        for (from, to) in [
            ("\"format\": 1", "\"format\": 2"),
            (
                "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56abcd",
                "ab12",
            ),
            (
                "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56abcd",
                "ffffffffffffab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56abcd",
            ),
            ("\"size\": 8192", "\"size\": 8193"),
            ("\"db_file\": \"sqlite.db\"", "\"db_file\": \"../x\""),
            ("\"org\": \"acme\"", "\"org\": \"ACME\""),
            ("{", "{\"extra\": 1,"),
        ] {
            let bad = good.replacen(from, to, 1);
            assert_ne!(bad, good, "{from}");
            let err = Manifest::from_json(bad.as_bytes(), "acme/x/latest.json").unwrap_err();
            assert!(err.to_string().contains("acme/x/latest.json"), "{err}");
        }
        assert!(Manifest::from_json(&good.as_bytes()[..good.len() / 2], "k").is_err());
    }
}

//! A connector's source object (`Integrations.sources[0]`: name, type, config, metadata,
//! tags), as the platform wrote it into the database, kept beside the backup at
//! `hubvault/source.json`.
//!
//! Why beside the backup and not in the manifest: the platform's own restore procedure
//! creates a new connector "with the same data (name, metadata and tags)" before
//! restoring, and `restore-hub` lists what to create for every connector of a lost hub
//! without downloading a database. The manifest reader refuses unknown fields, so a new
//! field there would make every older hubvault refuse every newer backup; a separate
//! object is ignored by older readers (`parse_key` returns `None` for it).
//!
//! The object is written as the database holds it. Readers take what they need and are
//! lenient: a missing `metadata` is `{}`, missing `tags` are `[]`.

use serde::Serialize;

use crate::error::{Error, Result};

/// What the platform needs to create a connector like the old one (the platform's
/// procedure: "create new connector with same data (name, metadata and tags)"). The
/// connection settings (`config`) are left out on purpose: the procedure creates the new
/// connector with wrong ones, so it does not load data before the restore.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub source_type: String,
    pub metadata: serde_json::Value,
    pub tags: serde_json::Value,
}

impl SourceRecord {
    /// From a source object (`Integrations.sources[0]`).
    pub fn from_source(v: &serde_json::Value) -> SourceRecord {
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
        SourceRecord {
            name: text(v.get("name")).unwrap_or_default(),
            source_type: text(v.get("type"))
                .or_else(|| text(v.get("config").and_then(|c| c.get("sourceType"))))
                .unwrap_or_default(),
            metadata: v
                .get("metadata")
                .filter(|m| !m.is_null())
                .cloned()
                .unwrap_or_else(|| serde_json::json!({})),
            tags: v
                .get("tags")
                .filter(|t| !t.is_null())
                .cloned()
                .unwrap_or_else(|| serde_json::json!([])),
        }
    }

    /// Reads `hubvault/source.json` (read from `key`): a JSON object.
    pub fn from_json(bytes: &[u8], key: &str) -> Result<SourceRecord> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            Error::check(
                format!("{key} is not valid JSON: {e}"),
                "it was damaged or written by something else; the next backup rewrites it",
            )
        })?;
        if !v.is_object() {
            return Err(Error::check(
                format!("{key} is not a JSON object (a connector's source object)"),
                "it was damaged or written by something else; the next backup rewrites it",
            ));
        }
        Ok(SourceRecord::from_source(&v))
    }
}

/// The bytes of `hubvault/source.json` for a source object.
pub fn to_json(source: &serde_json::Value) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(source).expect("a JSON value always serializes");
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_object_gives_name_type_metadata_and_tags() {
        let v = serde_json::json!({"id": "x", "name": "Cellario", "type": "hrb-cellario",
            "config": {"sourceType": "hrb-cellario"}, "metadata": {"site": "Boston"}, "tags": ["lab"]});
        let r = SourceRecord::from_json(&to_json(&v), "k").unwrap();
        assert_eq!(r.name, "Cellario");
        assert_eq!(r.source_type, "hrb-cellario");
        assert_eq!(r.metadata, serde_json::json!({"site": "Boston"}));
        assert_eq!(r.tags, serde_json::json!(["lab"]));
    }

    #[test]
    fn missing_fields_read_as_empty_and_the_type_falls_back_to_the_config() {
        let v = serde_json::json!({"name": "S", "config": {"sourceType": "sdc"}});
        let r = SourceRecord::from_source(&v);
        assert_eq!(r.source_type, "sdc");
        assert_eq!(r.metadata, serde_json::json!({}));
        assert_eq!(r.tags, serde_json::json!([]));
        assert!(SourceRecord::from_json(b"[1]", "k").is_err());
        assert!(SourceRecord::from_json(b"{", "k").is_err());
    }
}

//! Id, slug, file-name and version-id parsers: never panic, and accept only the exact
//! spelling they print back.
#![no_main]

use hubvault::model::ids::{ConnectorId, DatahubId, OrgSlug};
use hubvault::model::layout::DbFileName;
use hubvault::model::layout::VersionId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(id) = DatahubId::parse(s) {
        assert_eq!(id.to_string(), s);
    }
    if let Ok(id) = ConnectorId::parse(s) {
        assert_eq!(id.to_string(), s);
    }
    if let Ok(o) = OrgSlug::parse(s) {
        assert_eq!(o.as_str(), s);
        assert!(!s.contains('/'));
    }
    if let Ok(f) = DbFileName::parse(s) {
        assert_eq!(f.as_str(), s);
        assert!(!s.contains('/') && s != "..");
    }
    if let Ok(v) = VersionId::parse(s) {
        assert_eq!(v.as_str(), s);
        let _ = v.time();
    }
});

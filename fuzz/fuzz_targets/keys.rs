//! parse_key on arbitrary keys: never panics; what it accepts lies under the prefix of
//! the connector it names, and a key rebuilt from the result is the same key.
#![no_main]

use hubvault::model::layout::DbFileName;
use hubvault::model::layout::{KeyKind, parse_key};
use libfuzzer_sys::fuzz_target;
use object_store::path::Path;

fuzz_target!(|s: &str| {
    let Ok(key) = Path::parse(s) else { return };
    let Some((ck, kind)) = parse_key(&key) else { return };
    assert!(key.as_ref().starts_with(ck.prefix().as_ref()));
    let rebuilt = match &kind {
        KeyKind::Canonical(f) => ck.canonical(f),
        KeyKind::LatestManifest => ck.latest_manifest(),
        KeyKind::VersionData(v) => ck.version_data(v),
        KeyKind::VersionManifest(v) => ck.version_manifest(v),
        KeyKind::Drill { stamp, ok } => ck.drill(stamp, *ok),
        KeyKind::StreamMarker => ck.stream_marker(),
        KeyKind::Source => ck.source(),
        KeyKind::Label { .. } => return,
    };
    assert_eq!(rebuilt.as_ref(), key.as_ref());
    let _ = DbFileName::default();
});

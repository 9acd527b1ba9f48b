//! The manifest reader on arbitrary bytes: never panics; whatever it accepts writes
//! back and reads again to the same manifest.
#![no_main]

use hubvault::model::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(m) = Manifest::from_json(bytes, "fuzz") {
        assert_eq!(Manifest::from_json(&m.to_json(), "fuzz").unwrap(), m);
    }
});

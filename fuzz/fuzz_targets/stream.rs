//! Continuous capture's readers (base, segment header, sections): never panic on any
//! bytes, and whatever they accept re-encodes to a segment that reads back the same.
#![no_main]

use hubvault::model::stream::{decode_base, decode_section, decode_segment_header, encode_segment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = decode_base(bytes, "fuzz");
    if let Ok(h) = decode_segment_header(bytes, "fuzz") {
        let sections: Vec<_> = h
            .sections
            .iter()
            .filter_map(|e| decode_section(bytes, e, "fuzz").ok())
            .collect();
        let again = encode_segment(&h.org, h.datahub, &h.run, h.seq, h.time_ms, &sections).unwrap();
        let h2 = decode_segment_header(&again, "fuzz").unwrap();
        for (e, s) in h2.sections.iter().zip(&sections) {
            assert_eq!(&decode_section(&again, e, "fuzz").unwrap(), s);
        }
    }
});

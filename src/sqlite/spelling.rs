//! Every spelling of an id inside stored bytes, found (and replaced) in one scan.
//!
//! An id is a UUID. In a value it can be text in the canonical form
//! (`6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01`) or without hyphens (`6f1c2a9e4b7d…`), in
//! lowercase or uppercase, encoded as UTF-8 or as UTF-16 (either byte order); in a BLOB
//! it can also be its 16 raw bytes (RFC 4122 order or Microsoft's GUID order).
//! [`Matcher`] finds all of them in one ASCII-case-insensitive pass over the bytes, and
//! [`Matcher::rewrite`] replaces each text spelling with the new id in exactly the same
//! spelling (form, case, encoding); every other byte stays as it was.
//!
//! What it cannot rewrite, it counts instead of skipping silently:
//! - a mixed-case spelling (`6F1c…`): no case of the new id would be "the same";
//! - the raw bytes of an id in a BLOB: the byte order is a guess, and bytes inside a
//!   binary structure may be covered by a checksum or a length we cannot see.
//!
//! Which spellings are looked for depends on what the bytes are ([`Kind`]): a TEXT value
//! is text in the database's encoding, so only that encoding's spellings apply (an
//! ASCII spelling inside UTF-16 text would be other characters); a BLOB can hold
//! anything, so every spelling and the raw bytes are looked for.
//!
//! Pure: no I/O, no SQLite. The SQL functions that run this inside a statement are in
//! [`crate::sqlite::idfn`].

use aho_corasick::{AhoCorasick, MatchKind};

/// What a byte string is, which decides the spellings looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TEXT of a UTF-8 database.
    Utf8Text,
    /// TEXT of a UTF-16le database, its stored bytes.
    Utf16LeText,
    /// TEXT of a UTF-16be database, its stored bytes.
    Utf16BeText,
    /// A BLOB.
    Blob,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enc {
    Ascii,
    Utf16Le,
    Utf16Be,
}

impl Enc {
    fn encode(self, ascii: &[u8]) -> Vec<u8> {
        match self {
            Enc::Ascii => ascii.to_vec(),
            Enc::Utf16Le => ascii.iter().flat_map(|&b| [b, 0]).collect(),
            Enc::Utf16Be => ascii.iter().flat_map(|&b| [0, b]).collect(),
        }
    }
}

/// One text spelling of one old id, and what replaces it.
#[derive(Debug)]
struct Spelling {
    enc: Enc,
    lower: Vec<u8>,
    upper: Vec<u8>,
    /// The new id in the same spelling; `None` when only looking.
    new_lower: Option<Vec<u8>>,
    new_upper: Option<Vec<u8>>,
}

/// What one scan found, by occurrence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Text spellings in all-lowercase or all-uppercase: rewritten (or rewritable).
    pub rewritable: u32,
    /// Text spellings in mixed case: never rewritten.
    pub mixed_case: u32,
    /// Raw 16-byte ids in a BLOB: never rewritten.
    pub raw_bytes: u32,
}

impl Tally {
    /// True if and only if nothing was found.
    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }

    /// True if and only if something was found that is not rewritten.
    pub fn has_unrewritable(&self) -> bool {
        self.mixed_case > 0 || self.raw_bytes > 0
    }
}

/// One ASCII-case-insensitive automaton and the spelling behind each of its patterns.
#[derive(Debug)]
struct Automaton {
    ac: AhoCorasick,
    spelling: Vec<usize>,
}

impl Automaton {
    fn new(spellings: &[Spelling], pick: impl Fn(&Spelling) -> bool) -> Automaton {
        let mut patterns = Vec::new();
        let mut spelling = Vec::new();
        for (i, s) in spellings.iter().enumerate().filter(|(_, s)| pick(s)) {
            patterns.push(s.lower.clone());
            spelling.push(i);
        }
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(&patterns)
            .expect("a few fixed-length patterns always build");
        Automaton { ac, spelling }
    }
}

/// Finds (and replaces) the spellings of a set of old ids. Cheap to share: built once
/// per rewrite, then only read.
#[derive(Debug)]
pub struct Matcher {
    spellings: Vec<Spelling>,
    utf8: Automaton,
    utf16le: Automaton,
    utf16be: Automaton,
    blob: Automaton,
    /// Exact (not case-folded) raw 16-byte forms; `None` without ids.
    raw: Option<AhoCorasick>,
    /// The search of UTF-8 text by anchors: see [`anchors`]. `None` when an id has no
    /// run of digits long enough to be worth it (then the automaton runs).
    utf8_anchors: Option<Vec<Anchor>>,
}

/// One id's anchor (see [`anchors`]) and where it lies in each of the id's UTF-8
/// spellings.
#[derive(Debug)]
struct Anchor {
    finder: memchr::memmem::Finder<'static>,
    /// (index in `Matcher::spellings`, offset of the run in that spelling), for each
    /// occurrence of the run in each UTF-8 spelling of the id.
    at: Vec<(usize, usize)>,
}

/// Shortest run of digits worth a pass of its own before the full search.
const MIN_ANCHOR: usize = 3;

/// For each id, the longest run of decimal digits inside one of its hyphen-separated
/// groups (`1574` in `…-8c1574b71749`). Digits have no case and a group holds no hyphen,
/// so every text spelling of that id (hyphenated or not, lowercase, uppercase or mixed)
/// holds the run as it is: text holding none of the runs holds no spelling, and an
/// exact substring search per id (SIMD, far cheaper than the case-insensitive automaton,
/// which also runs over every value that does hold an id) says so. `None` if some id has no run of [`MIN_ANCHOR`] digits (then every value gets
/// the full search, as it would without this test).
fn anchors(old: &[uuid::Uuid], spellings: &[Spelling]) -> Option<Vec<Anchor>> {
    let mut out = Vec::new();
    for id in old {
        let text = id.hyphenated().to_string();
        let longest = text
            .split(|c: char| !c.is_ascii_digit())
            .max_by_key(|r| r.len())
            .unwrap_or("");
        if longest.len() < MIN_ANCHOR {
            return None;
        }
        let run = longest.as_bytes();
        let mut at = Vec::new();
        for (i, s) in spellings.iter().enumerate() {
            // The spellings of this id (its lowercase forms hold the run; digits have
            // no case, so every case of them holds it at the same offsets).
            let this_id = s.lower == id.hyphenated().to_string().into_bytes()
                || s.lower == id.simple().to_string().into_bytes();
            if s.enc != Enc::Ascii || !this_id {
                continue;
            }
            for o in 0..=s.lower.len() - run.len() {
                if &s.lower[o..o + run.len()] == run {
                    at.push((i, o));
                }
            }
        }
        out.push(Anchor {
            finder: memchr::memmem::Finder::new(run).into_owned(),
            at,
        });
    }
    if out.is_empty() {
        return None;
    }
    Some(out)
}

impl Matcher {
    /// Looks for `old` ids; [`Matcher::rewrite`] replaces `old[i]` with `new[i]`. With
    /// `new` = `None` the matcher only finds and counts.
    pub fn new(old: &[uuid::Uuid], new: Option<&[uuid::Uuid]>) -> Matcher {
        if let Some(n) = new {
            assert_eq!(old.len(), n.len(), "one new id per old id");
        }
        let mut spellings = Vec::new();
        let mut raw = Vec::new();
        for (i, id) in old.iter().enumerate() {
            let to = new.map(|n| n[i]);
            let forms = |u: &uuid::Uuid| {
                [
                    u.hyphenated().to_string().into_bytes(),
                    u.simple().to_string().into_bytes(),
                ]
            };
            let olds = forms(id);
            let news = to.as_ref().map(forms);
            for enc in [Enc::Ascii, Enc::Utf16Le, Enc::Utf16Be] {
                for f in 0..2 {
                    let lower = &olds[f];
                    spellings.push(Spelling {
                        enc,
                        lower: enc.encode(lower),
                        upper: enc.encode(&lower.to_ascii_uppercase()),
                        new_lower: news.as_ref().map(|n| enc.encode(&n[f])),
                        new_upper: news
                            .as_ref()
                            .map(|n| enc.encode(&n[f].to_ascii_uppercase())),
                    });
                }
            }
            raw.push(id.as_bytes().to_vec());
            let le = id.to_bytes_le().to_vec();
            if le != id.as_bytes() {
                raw.push(le);
            }
        }
        let raw = (!raw.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(&raw)
                .expect("a few 16-byte patterns always build")
        });
        Matcher {
            utf8_anchors: anchors(old, &spellings),
            utf8: Automaton::new(&spellings, |s| s.enc == Enc::Ascii),
            utf16le: Automaton::new(&spellings, |s| s.enc == Enc::Utf16Le),
            utf16be: Automaton::new(&spellings, |s| s.enc == Enc::Utf16Be),
            blob: Automaton::new(&spellings, |_| true),
            raw,
            spellings,
        }
    }

    fn automaton(&self, kind: Kind) -> &Automaton {
        match kind {
            Kind::Utf8Text => &self.utf8,
            Kind::Utf16LeText => &self.utf16le,
            Kind::Utf16BeText => &self.utf16be,
            Kind::Blob => &self.blob,
        }
    }

    /// True if `bytes` certainly hold no spelling of an old id (a quick test; false
    /// says nothing).
    fn surely_none(&self, kind: Kind, bytes: &[u8]) -> bool {
        self.spellings.is_empty()
            || (kind == Kind::Utf8Text
                && self
                    .utf8_anchors
                    .as_ref()
                    .is_some_and(|a| a.iter().all(|f| f.finder.find(bytes).is_none())))
    }

    /// The spellings in UTF-8 text `bytes`, as (start, spelling) in the automaton's
    /// order (leftmost first; at one start, the first spelling; no overlap), found from
    /// the anchors: every spelling of an id holds its anchor at a known offset, so each
    /// hit of an anchor (overlapping hits included) names the windows to compare, a few
    /// dozen bytes each, instead of a case-insensitive automaton over the whole value.
    fn by_anchors(&self, anchors: &[Anchor], bytes: &[u8]) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        for a in anchors {
            let mut from = 0;
            while let Some(p) = a.finder.find(&bytes[from..]) {
                let p = from + p;
                for &(i, o) in &a.at {
                    let want = &self.spellings[i].lower;
                    if let Some(start) = p.checked_sub(o)
                        && let Some(window) = bytes.get(start..start + want.len())
                        && window.eq_ignore_ascii_case(want)
                    {
                        found.push((start, i));
                    }
                }
                from = p + 1;
            }
        }
        found.sort_unstable();
        found.dedup();
        let mut end = 0;
        found.retain(|&(start, i)| {
            if start < end {
                return false;
            }
            end = start + self.spellings[i].lower.len();
            true
        });
        found
    }

    /// The spellings in `bytes` as (start, spelling), leftmost first, no overlap.
    ///
    /// In UTF-16 text a spelling counts only at an even byte offset: at an odd one its
    /// bytes are halves of other characters (`㄀愀…` holds `1\0a\0…` one byte in), and
    /// rewriting them would change those characters. Dropping such a match hides no
    /// other: an odd and an even match of these patterns (an ASCII byte and a zero byte,
    /// alternating) cannot overlap, as each byte they share would have to be zero in one
    /// and not in the other.
    fn matches(&self, kind: Kind, bytes: &[u8]) -> Vec<(usize, usize)> {
        if kind == Kind::Utf8Text
            && let Some(anchors) = &self.utf8_anchors
        {
            return self.by_anchors(anchors, bytes);
        }
        let mut found = self.by_automaton(kind, bytes);
        if matches!(kind, Kind::Utf16LeText | Kind::Utf16BeText) {
            found.retain(|(start, _)| start % 2 == 0);
        }
        found
    }

    fn by_automaton(&self, kind: Kind, bytes: &[u8]) -> Vec<(usize, usize)> {
        let a = self.automaton(kind);
        a.ac.find_iter(bytes)
            .map(|m| (m.start(), a.spelling[m.pattern().as_usize()]))
            .collect()
    }

    /// True if and only if `bytes` hold any spelling of an old id, rewritable or not.
    pub fn is_match(&self, kind: Kind, bytes: &[u8]) -> bool {
        if kind == Kind::Utf8Text
            && let Some(anchors) = &self.utf8_anchors
        {
            return !self.by_anchors(anchors, bytes).is_empty();
        }
        if self.surely_none(kind, bytes) {
            return false;
        }
        if matches!(kind, Kind::Utf16LeText | Kind::Utf16BeText) {
            return !self.matches(kind, bytes).is_empty();
        }
        self.automaton(kind).ac.is_match(bytes)
            || (kind == Kind::Blob && self.raw.as_ref().is_some_and(|r| r.is_match(bytes)))
    }

    /// Counts what `bytes` hold; changes nothing.
    pub fn tally(&self, kind: Kind, bytes: &[u8]) -> Tally {
        self.scan(kind, bytes, false).1
    }

    /// `bytes` with every lowercase or uppercase text spelling of an old id replaced by
    /// the new id in the same spelling, or `None` when there is nothing to replace (or
    /// the matcher was built without new ids). The tally counts what was found,
    /// replaced or not.
    pub fn rewrite(&self, kind: Kind, bytes: &[u8]) -> (Option<Vec<u8>>, Tally) {
        self.scan(kind, bytes, true)
    }

    fn scan(&self, kind: Kind, bytes: &[u8], write: bool) -> (Option<Vec<u8>>, Tally) {
        let mut tally = Tally::default();
        // (With anchors, UTF-8 text is searched by them: the quick test would be a
        // second search for the same runs.)
        let anchored = kind == Kind::Utf8Text && self.utf8_anchors.is_some();
        if !anchored && self.surely_none(kind, bytes) {
            return (None, tally);
        }
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        for (start, i) in self.matches(kind, bytes) {
            let s = &self.spellings[i];
            let end = start + s.lower.len();
            let got = &bytes[start..end];
            let new = if got == s.lower.as_slice() {
                &s.new_lower
            } else if got == s.upper.as_slice() {
                &s.new_upper
            } else {
                tally.mixed_case += 1;
                continue;
            };
            tally.rewritable += 1;
            if let (true, Some(new)) = (write, new) {
                let o = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                o.extend_from_slice(&bytes[copied..start]);
                o.extend_from_slice(new);
                copied = end;
            }
        }
        if let Some(o) = out.as_mut() {
            o.extend_from_slice(&bytes[copied..]);
        }
        if kind == Kind::Blob
            && let Some(raw) = &self.raw
        {
            tally.raw_bytes = raw.find_iter(bytes).count() as u32;
        }
        (out, tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (uuid::Uuid, uuid::Uuid) {
        (
            uuid::Uuid::parse_str("6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01").unwrap(),
            uuid::Uuid::parse_str("11111111-2222-4333-8444-55555555aaaa").unwrap(),
        )
    }

    fn m() -> Matcher {
        let (old, new) = ids();
        Matcher::new(&[old], Some(&[new]))
    }

    #[test]
    fn each_text_spelling_is_replaced_by_the_same_spelling_of_the_new_id() {
        let m = m();
        let cases = [
            (
                "a 6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01 b",
                "a 11111111-2222-4333-8444-55555555aaaa b",
            ),
            (
                "6F1C2A9E-4B7D-4E1A-9C3F-2D8E5B7A1C01",
                "11111111-2222-4333-8444-55555555AAAA",
            ),
            (
                "x6f1c2a9e4b7d4e1a9c3f2d8e5b7a1c01y",
                "x1111111122224333844455555555aaaay",
            ),
            (
                "6F1C2A9E4B7D4E1A9C3F2D8E5B7A1C01",
                "1111111122224333844455555555AAAA",
            ),
        ];
        for (from, to) in cases {
            let (out, t) = m.rewrite(Kind::Utf8Text, from.as_bytes());
            assert_eq!(String::from_utf8(out.unwrap()).unwrap(), to, "{from}");
            assert_eq!(t.rewritable, 1);
            assert!(!t.has_unrewritable());
        }
    }

    #[test]
    fn utf16_text_is_rewritten_in_its_own_byte_order_and_nothing_else_moves() {
        let m = m();
        let utf16 = |s: &str, le: bool| -> Vec<u8> {
            s.encode_utf16()
                .flat_map(|u| if le { u.to_le_bytes() } else { u.to_be_bytes() })
                .collect()
        };
        for (le, kind) in [(true, Kind::Utf16LeText), (false, Kind::Utf16BeText)] {
            // A lone surrogate before the id: bytes SQLite's UTF-16 -> UTF-8 conversion
            // would mangle; here they are only copied.
            let mut from = vec![0x00, 0xD8];
            if !le {
                from = vec![0xD8, 0x00];
            }
            from.extend(utf16("é 6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01 €", le));
            let mut want = from[..2].to_vec();
            want.extend(utf16("é 11111111-2222-4333-8444-55555555aaaa €", le));
            let (out, t) = m.rewrite(kind, &from);
            assert_eq!(out.unwrap(), want);
            assert_eq!(t.rewritable, 1);
            // The UTF-8 spelling is not text of this encoding.
            assert!(
                m.rewrite(kind, b"6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01")
                    .0
                    .is_none()
            );
        }
    }

    #[test]
    fn utf16_text_spelling_an_id_one_byte_off_is_neither_found_nor_rewritten() {
        let m = m();
        let id = "6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01";
        for (le, kind) in [(true, Kind::Utf16LeText), (false, Kind::Utf16BeText)] {
            let spelled: Vec<u8> = id
                .bytes()
                .flat_map(|b| if le { [b, 0] } else { [0, b] })
                .collect();
            // One byte off: other characters (CJK, U+3620 U+6600 ...), no id.
            let odd = [&[0x20][..], &spelled, &[0x4E]].concat();
            assert_eq!(m.rewrite(kind, &odd), (None, Tally::default()), "le {le}");
            assert!(!m.is_match(kind, &odd), "le {le}");
            // The same bytes on an even offset, after it, are still the id.
            let both = [&odd[..], &spelled].concat();
            let (out, t) = m.rewrite(kind, &both);
            assert_eq!(t.rewritable, 1, "le {le}");
            let out = out.unwrap();
            assert_eq!(out[..odd.len()], odd[..], "le {le}");
            assert_ne!(out[odd.len()..], spelled[..], "le {le}");
            assert!(m.is_match(kind, &both), "le {le}");
        }
    }

    #[test]
    fn mixed_case_and_raw_bytes_are_counted_and_left_alone() {
        let (old, _) = ids();
        let m = m();
        let (out, t) = m.rewrite(Kind::Utf8Text, b"6F1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01");
        assert!(out.is_none());
        assert_eq!((t.rewritable, t.mixed_case), (0, 1));
        let mut blob = vec![1, 2, 3];
        blob.extend_from_slice(old.as_bytes());
        blob.extend_from_slice(&old.to_bytes_le());
        let (out, t) = m.rewrite(Kind::Blob, &blob);
        assert!(out.is_none());
        assert_eq!(t.raw_bytes, 2);
        // Raw bytes inside TEXT are not an id spelling.
        assert_eq!(m.tally(Kind::Utf8Text, &blob).raw_bytes, 0);
    }

    #[test]
    fn a_blob_is_searched_for_every_text_spelling_and_keeps_its_other_bytes() {
        let m = m();
        let mut blob = vec![0u8, 255, 0];
        blob.extend(b"6f1c2a9e4b7d4e1a9c3f2d8e5b7a1c01");
        blob.extend([0u8, 0, 7]);
        blob.extend(
            "6F1C2A9E-4B7D-4E1A-9C3F-2D8E5B7A1C01"
                .bytes()
                .flat_map(|b| [0, b]),
        );
        let (out, t) = m.rewrite(Kind::Blob, &blob);
        let mut want = vec![0u8, 255, 0];
        want.extend(b"1111111122224333844455555555aaaa");
        want.extend([0u8, 0, 7]);
        want.extend(
            "11111111-2222-4333-8444-55555555AAAA"
                .bytes()
                .flat_map(|b| [0, b]),
        );
        assert_eq!(out.unwrap(), want);
        assert_eq!(t.rewritable, 2);
    }

    #[test]
    fn the_quick_test_never_hides_a_spelling_of_a_random_id() {
        // Seeded: the same ids every run.
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for _ in 0..2000 {
            let id = uuid::Uuid::from_bytes(rng.random());
            let m = Matcher::new(&[id], Some(&[uuid::Uuid::from_bytes(rng.random())]));
            for form in [id.hyphenated().to_string(), id.simple().to_string()] {
                let mixed: String = form
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i % 2 == 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect();
                for text in [form.clone(), form.to_ascii_uppercase(), mixed] {
                    let v = format!("{{\"a\":\"x{text}y\"}}");
                    assert!(m.is_match(Kind::Utf8Text, v.as_bytes()), "{v}");
                    assert!(!m.tally(Kind::Utf8Text, v.as_bytes()).is_empty(), "{v}");
                }
            }
            assert!(!m.is_match(Kind::Utf8Text, b"2026-11-30T00:52:00.123Z 0123456789"));
        }
    }

    /// The search by anchors gives exactly the automaton's matches (start and spelling,
    /// leftmost first, no overlap) on text built to be hard: spellings of two ids side
    /// by side and overlapping, in every case and mixed, cut short, ids whose anchor
    /// occurs twice in them, noise of hex digits. Seeded (13): the same inputs each run.
    #[test]
    fn the_search_by_anchors_finds_what_the_automaton_finds() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let hex = b"0123456789abcdefABCDEF-";
        let (mut compared, mut with_matches) = (0, 0);
        for round in 0..600 {
            let mut ids: Vec<uuid::Uuid> = (0..rng.random_range(1..3usize))
                .map(|_| uuid::Uuid::from_bytes(rng.random()))
                .collect();
            if round % 3 == 0 {
                // An id whose anchor (its longest digit run) occurs twice in it.
                ids[0] = uuid::Uuid::parse_str("1234abcd-1234-4abc-8abc-abcdabcdabcd").unwrap();
            }
            let m = Matcher::new(&ids, None);
            if m.utf8_anchors.is_none() {
                continue;
            }
            for _ in 0..20 {
                let mut v: Vec<u8> = Vec::new();
                for _ in 0..rng.random_range(0..6usize) {
                    let id = ids[rng.random_range(0..ids.len())];
                    let mut form = if rng.random_bool(0.5) {
                        id.hyphenated().to_string().into_bytes()
                    } else {
                        id.simple().to_string().into_bytes()
                    };
                    match rng.random_range(0..4u8) {
                        0 => form.make_ascii_uppercase(),
                        1 => {
                            for b in form.iter_mut() {
                                if rng.random_bool(0.3) {
                                    b.make_ascii_uppercase();
                                }
                            }
                        }
                        _ => {}
                    }
                    if rng.random_bool(0.2) {
                        // Cut short, or started late: a near miss.
                        let cut = rng.random_range(1..form.len());
                        form = if rng.random_bool(0.5) {
                            form[..cut].to_vec()
                        } else {
                            form[cut..].to_vec()
                        };
                    }
                    if rng.random_bool(0.3) && !v.is_empty() {
                        // Overlap the end of what came before.
                        let back = rng.random_range(0..v.len().min(20));
                        v.truncate(v.len() - back);
                    }
                    v.extend(form);
                    for _ in 0..rng.random_range(0..4usize) {
                        v.push(hex[rng.random_range(0..hex.len())]);
                    }
                }
                let auto = m.by_automaton(Kind::Utf8Text, &v);
                assert_eq!(
                    m.matches(Kind::Utf8Text, &v),
                    auto,
                    "{}",
                    String::from_utf8_lossy(&v)
                );
                compared += 1;
                with_matches += usize::from(!auto.is_empty());
            }
        }
        assert!(
            compared > 5000 && with_matches > 2000,
            "{compared} {with_matches}"
        );
    }

    #[test]
    fn a_matcher_without_new_ids_only_counts() {
        let (old, _) = ids();
        let m = Matcher::new(&[old], None);
        let (out, t) = m.rewrite(Kind::Utf8Text, b"6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01");
        assert!(out.is_none());
        assert_eq!(t.rewritable, 1);
        assert!(Matcher::new(&[], None).tally(Kind::Blob, b"x").is_empty());
    }
}

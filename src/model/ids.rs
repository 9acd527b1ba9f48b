//! Datahub ids, connector ids and org slugs: parsed once at the edge, never raw strings.
//!
//! Anything that reaches a file path or an object key has passed through one of these
//! types, so a malformed id (or one that tries to climb out of its prefix with `..` or
//! `/`) is refused before any file or key is touched.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

macro_rules! uuid_id {
    ($name:ident, $what:literal, $flag:literal) => {
        #[doc = concat!("A ", $what, ": a UUID in lowercase canonical form.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(uuid::Uuid);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, Error> {
                parse_uuid(s, $what, $flag).map($name)
            }

            /// A fresh random id (v4), for new hubs and connectors.
            pub fn random() -> Self {
                $name(uuid::Uuid::new_v4())
            }

            pub fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

uuid_id!(DatahubId, "datahub id", "--datahub");
uuid_id!(ConnectorId, "connector id", "--connector");

fn parse_uuid(s: &str, what: &str, flag: &str) -> Result<uuid::Uuid, Error> {
    // Only the lowercase hyphenated form is accepted: it is what the platform writes,
    // and accepting `{...}`, upper case or the simple form would give one connector
    // several spellings, hence several object keys.
    let shown = printable(s);
    let parsed = uuid::Uuid::try_parse(s)
        .ok()
        .filter(|u| u.hyphenated().to_string() == s);
    parsed.ok_or_else(|| {
        Error::usage(
            format!("{what} {shown:?} is not a UUID in lowercase canonical form (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
            format!("pass the {what} exactly as the platform shows it, e.g. {flag} 6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01"),
        )
    })
}

/// An organisation slug: 1 to 64 of `a-z`, `0-9` and `-`, not starting or ending with `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct OrgSlug(String);

impl OrgSlug {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(OrgSlug(s.to_string()))
        } else {
            Err(Error::usage(
                format!(
                    "org slug {:?} is not valid: it must be 1 to {} lowercase letters, digits and dashes, not starting or ending with a dash",
                    printable(s),
                    Self::MAX_LEN
                ),
                "pass the organisation slug as the platform shows it, e.g. --org acme-labs (or set HUBVAULT_ORG)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for OrgSlug {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl fmt::Display for OrgSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for OrgSlug {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for OrgSlug {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A connector's pair of ids: the hub it belongs to and its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Ids {
    pub datahub: DatahubId,
    pub connector: ConnectorId,
}

/// Shortens and escapes user input before it is echoed in an error.
pub(crate) fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lowercase_canonical_uuids() {
        let id = DatahubId::parse("6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01").unwrap();
        assert_eq!(id.to_string(), "6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01");
    }

    #[test]
    fn refuses_other_spellings_and_traversal() {
        for bad in [
            "",
            "6F1C2A9E-4B7D-4E1A-9C3F-2D8E5B7A1C01",
            "6f1c2a9e4b7d4e1a9c3f2d8e5b7a1c01",
            "{6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01}",
            "../../etc/passwd",
            "6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/..",
            "6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c0/",
            " 6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01",
        ] {
            let err = ConnectorId::parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            assert!(err.to_string().contains("connector id"), "{err}");
            assert!(err.hint().unwrap().contains("--connector"));
        }
    }

    #[test]
    fn org_slugs_are_lowercase_letters_digits_and_dashes() {
        assert!(OrgSlug::parse("acme-labs-2").is_ok());
        for bad in [
            "",
            "Acme",
            "acme/..",
            "..",
            "-acme",
            "acme-",
            "acme labs",
            "a_b",
            &"a".repeat(65),
        ] {
            let err = OrgSlug::parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            assert!(err.to_string().contains("org slug"));
        }
    }
}

//! Bucket and endpoint URLs: what `--bucket` may say, and how a URL may be shown (never
//! with credentials).
//!
//! The rules for `--bucket` (both refusals are usage errors, exit 2, before any request):
//! - `file:///abs/dir` (or `file://localhost/abs/dir`): an absolute directory, and not `/`
//!   itself (a bucket's keys start with the org, so `/` would scatter backups over the
//!   root file system). A relative form (`file:dir`, `file:./dir`, `file://dir/sub`,
//!   where `dir` is read as a host) is refused with the absolute URL to use, made from
//!   the current directory: a silent `file:dir` -> `/dir` is how backups end up where
//!   nobody looks.
//! - `s3://bucket[/prefix]`: the bucket name must follow S3's naming rules for general
//!   purpose buckets: 3 to 63 characters; lowercase letters, digits, dots and hyphens;
//!   starts and ends with a letter or digit; no two adjacent dots; not an IP address;
//!   none of the prefixes `xn--`, `sthree-`, `amzn-s3-demo-`; none of the suffixes
//!   `-s3alias`, `--ol-s3`, `.mrap`, `--x-s3`, `--table-s3`. S3 itself would answer a bad
//!   name with an opaque error (or a request to another host); we say which rule.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A `--bucket` URL, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketUrl {
    /// An absolute directory other than `/` (not checked for existence here).
    Local(PathBuf),
    /// A bucket name that follows S3's rules, and a key prefix (no leading or trailing
    /// `/`; empty for none).
    S3 { bucket: String, prefix: String },
}

const URL_HINT: &str = "pass file:///absolute/dir for a local directory or s3://bucket-name for S3 (or set HUBVAULT_BUCKET)";

/// Parses and checks a `--bucket` URL. `cwd` makes the absolute URL suggested for a
/// relative one.
pub fn parse_bucket_url(url: &str, cwd: &Path) -> Result<BucketUrl> {
    let shown = redact_url(url);
    let bad = |why: String, hint: String| Error::usage(format!("--bucket {shown:?}: {why}"), hint);
    let scheme_end = url.find(':').filter(|i| {
        url[..*i]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && *i > 0
    });
    let Some(colon) = scheme_end else {
        return Err(bad("not a URL".into(), URL_HINT.into()));
    };
    let scheme = url[..colon].to_ascii_lowercase();
    let rest = &url[colon + 1..];
    match scheme.as_str() {
        "file" => parse_file(rest, cwd).map_err(|(why, hint)| bad(why, hint)),
        "s3" => {
            let Some(rest) = rest.strip_prefix("//") else {
                return Err(bad(
                    "write s3://bucket-name (two slashes)".into(),
                    URL_HINT.into(),
                ));
            };
            let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // Credentials in the URL are ignored (they come from AWS_* or the role);
            // the name is what follows them.
            let name = authority.rsplit_once('@').map_or(authority, |(_, n)| n);
            if name.is_empty() {
                return Err(bad("no bucket name".into(), URL_HINT.into()));
            }
            check_s3_bucket_name(name).map_err(|why| {
                bad(
                    format!("{name:?} is not a valid S3 bucket name: {why}"),
                    "check the bucket's name in the S3 console (names are 3-63 lowercase letters, digits, dots or hyphens), e.g. s3://ts-platform-prod-backup".into(),
                )
            })?;
            let prefix = prefix
                .split(['?', '#'])
                .next()
                .unwrap_or("")
                .trim_matches('/')
                .to_string();
            Ok(BucketUrl::S3 {
                bucket: name.to_string(),
                prefix,
            })
        }
        other => Err(bad(
            format!("scheme {other:?} is not supported"),
            URL_HINT.into(),
        )),
    }
}

/// The part of a `file:` URL after the colon.
fn parse_file(rest: &str, cwd: &Path) -> std::result::Result<BucketUrl, (String, String)> {
    let absolute_hint = |rel: &str| {
        let abs = cwd.join(rel.trim_start_matches("./"));
        format!("write the absolute path: --bucket file://{}", abs.display())
    };
    let path_text = if let Some(after) = rest.strip_prefix("//") {
        // file://HOST/path: only an empty host or localhost names this machine.
        let (authority, path) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        // A user name or password has no meaning for a file URL, and must never be echoed.
        if let Some((_, host)) = authority.rsplit_once('@') {
            return Err((
                "a file URL takes no user name or password".to_string(),
                format!(
                    "write file:///abs/dir; for {host:?}: --bucket file://{}",
                    if path.is_empty() { "/" } else { path }
                ),
            ));
        }
        let host = authority;
        if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
            return Err((
                format!(
                    "a file URL names no host, and {host:?} is read as one: write file:///abs/dir (three slashes)"
                ),
                absolute_hint(after),
            ));
        }
        path.to_string()
    } else if rest.starts_with('/') {
        // file:/abs/dir: unusual but absolute.
        rest.to_string()
    } else {
        return Err((
            format!("{rest:?} is a relative path; a file URL must be absolute"),
            absolute_hint(rest),
        ));
    };
    let path_text = path_text.split(['?', '#']).next().unwrap_or("");
    // `file://` alone names the root, as `file:///` does.
    let path_text = if path_text.is_empty() { "/" } else { path_text };
    let decoded = percent_encoding::percent_decode_str(path_text)
        .decode_utf8()
        .map_err(|_| {
            (
                "the path is not valid UTF-8".to_string(),
                URL_HINT.to_string(),
            )
        })?;
    let path = normalize(Path::new(decoded.as_ref()));
    if !path.is_absolute() {
        return Err((
            "not an absolute local path".into(),
            absolute_hint(decoded.as_ref()),
        ));
    }
    if path == Path::new("/") {
        return Err((
            "the root directory / cannot be a bucket".into(),
            "name a directory of its own, e.g. --bucket file:///var/backups/hubvault (create it first)".into(),
        ));
    }
    Ok(BucketUrl::Local(path))
}

/// `a/./b/../c` -> `a/c`, without touching the file system (`..` above `/` stays at `/`).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// S3's naming rules for general purpose buckets; the error says which rule is broken.
pub fn check_s3_bucket_name(name: &str) -> std::result::Result<(), String> {
    let n = name.len();
    if !(3..=63).contains(&n) {
        return Err(format!("it has {n} characters; a name has 3 to 63"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Err(if c.is_ascii_uppercase() {
            format!("{c:?} is uppercase; names are lowercase")
        } else {
            format!("{c:?} is not allowed (only lowercase letters, digits, dots and hyphens)")
        });
    }
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !name.starts_with(edge) || !name.ends_with(edge) {
        return Err("it must start and end with a letter or a digit".into());
    }
    if name.contains("..") {
        return Err("it has two adjacent dots".into());
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("it is formatted as an IP address".into());
    }
    for p in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(p) {
            return Err(format!("the prefix {p:?} is reserved"));
        }
    }
    for s in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(s) {
            return Err(format!("the suffix {s:?} is reserved"));
        }
    }
    Ok(())
}

/// `url` without a user name or password, for messages and logs. Text that is not a URL
/// comes back with anything before an `@` removed.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => match url.rsplit_once('@') {
            Some((_, rest)) => rest.to_string(),
            None => url.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cwd() -> &'static Path {
        Path::new("/srv/work")
    }

    fn refused(url: &str) -> Error {
        let e = parse_bucket_url(url, cwd()).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{url}: {e}");
        e
    }

    #[test]
    fn absolute_file_urls_are_accepted() {
        for (url, dir) in [
            ("file:///var/backups/hv", "/var/backups/hv"),
            ("file://localhost/var/b", "/var/b"),
            ("file:/var/b/", "/var/b"),
            ("FILE:///var/a/../b", "/var/b"),
            ("file:///var/with%20space", "/var/with space"),
        ] {
            assert_eq!(
                parse_bucket_url(url, cwd()).unwrap(),
                BucketUrl::Local(PathBuf::from(dir)),
                "{url}"
            );
        }
    }

    #[test]
    fn relative_file_urls_are_refused_with_the_absolute_url_to_use() {
        for (url, want) in [
            ("file:relative/dir", "file:///srv/work/relative/dir"),
            ("file:./rel", "file:///srv/work/rel"),
            ("file://relative/dir", "file:///srv/work/relative/dir"),
        ] {
            let e = refused(url);
            assert!(e.hint().unwrap().contains(want), "{url}: {:?}", e.hint());
        }
        assert!(
            refused("file://relative/dir")
                .to_string()
                .contains("three slashes")
        );
    }

    #[test]
    fn the_root_directory_is_not_a_bucket() {
        for url in [
            "file:///",
            "file://",
            "file:///..",
            "file:///tmp/..",
            "file://localhost/",
        ] {
            let e = refused(url);
            assert!(e.to_string().contains("root directory"), "{url}: {e}");
        }
    }

    #[test]
    fn s3_urls_give_the_bucket_and_the_prefix() {
        assert_eq!(
            parse_bucket_url("s3://ts-platform-prod-backup/hubs/eu/", cwd()).unwrap(),
            BucketUrl::S3 {
                bucket: "ts-platform-prod-backup".into(),
                prefix: "hubs/eu".into()
            }
        );
        assert_eq!(
            parse_bucket_url("s3://AKIA:secret@my.bucket.1", cwd()).unwrap(),
            BucketUrl::S3 {
                bucket: "my.bucket.1".into(),
                prefix: String::new()
            }
        );
    }

    #[test]
    fn s3_bucket_names_follow_s3_naming_rules() {
        for ok in [
            "abc",
            "ts-platform-prod-backup",
            "a.b-c.1",
            &"a".repeat(63),
            "1bucket",
        ] {
            assert_eq!(check_s3_bucket_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("ab", "3 to 63"),
            (&"a".repeat(64), "3 to 63"),
            ("MyBucket", "uppercase"),
            ("my_bucket", "not allowed"),
            ("-bucket", "start and end"),
            ("bucket-", "start and end"),
            ("bucket.", "start and end"),
            ("my..bucket", "adjacent dots"),
            ("192.168.5.4", "IP address"),
            ("xn--bucket", "prefix"),
            ("sthree-bucket", "prefix"),
            ("amzn-s3-demo-bucket", "prefix"),
            ("bucket-s3alias", "suffix"),
            ("bucket--ol-s3", "suffix"),
            ("bucket.mrap", "suffix"),
            ("bucket--x-s3", "suffix"),
            ("bucket--table-s3", "suffix"),
        ] {
            let e = check_s3_bucket_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            let e = refused(&format!("s3://{bad}/x"));
            assert!(e.to_string().contains("not a valid S3 bucket name"), "{e}");
        }
    }

    #[test]
    fn other_schemes_and_non_urls_are_refused() {
        assert!(
            refused("ftp://host/x")
                .to_string()
                .contains("\"ftp\" is not supported")
        );
        refused("not a url");
        refused("/var/backups");
        refused("s3:bucket");
        refused("s3://");
    }

    #[test]
    fn urls_lose_their_credentials_before_they_are_shown() {
        assert_eq!(
            redact_url("s3://AKIA:secret@bucket/prefix"),
            "s3://bucket/prefix"
        );
        assert_eq!(
            redact_url("http://user:pw@127.0.0.1:9000"),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(redact_url("file:///var/b"), "file:///var/b");
        assert_eq!(redact_url("not a url user:pw@host"), "host");
    }
}

//! Bucket and endpoint URLs as they may be shown: never with credentials.

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

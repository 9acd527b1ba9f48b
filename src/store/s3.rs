//! How hubvault talks to S3: endpoint, credentials, timeouts, retries.
//!
//! Read once from the environment by [`S3Settings::from_env`] (the binary) or built
//! whole by a caller (the tests, which talk to several endpoints from one process and
//! must not change the process's environment to do so).

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{ClientOptions, RetryConfig};

use crate::error::{Error, Result};

/// How hubvault talks to S3.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// An S3-compatible endpoint (`AWS_ENDPOINT_URL`); `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Access key id and secret; `None` leaves them to the usual `AWS_*` variables or the
    /// instance role.
    pub credentials: Option<(String, String)>,
    /// `None` leaves it to `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    pub connect_timeout: Duration,
    /// For one request, body included.
    pub timeout: Duration,
    pub retries: usize,
    /// Bounds all retries of one request, backoff included.
    pub retry_timeout: Duration,
    /// Server-side encryption asked for on every object written; `None`: the bucket's
    /// default.
    pub sse: Option<Sse>,
}

/// Server-side encryption of the objects hubvault writes, as the aws CLI's `--sse` and
/// `--sse-kms-key-id` say it. Sent on every PUT and every multipart upload's start (S3
/// takes it there, not on the parts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sse {
    /// `AES256`: SSE-S3, keys managed by S3.
    S3,
    /// `aws:kms`: SSE-KMS, with this key (id, ARN or alias) or the account's default key.
    Kms { key_id: Option<String> },
}

impl Sse {
    /// From `--sse` and `--sse-kms-key-id` (or their variables, or the config file's
    /// `sse` / `sse_kms_key_id`); `from` names where they came from in errors.
    pub fn parse(mode: Option<&str>, key_id: Option<&str>, from: &str) -> Result<Option<Sse>> {
        let key_id = key_id.map(str::trim).filter(|k| !k.is_empty());
        match mode.map(str::trim).filter(|m| !m.is_empty()) {
            None if key_id.is_some() => Err(Error::usage(
                format!("{from}: a KMS key id is given without --sse aws:kms"),
                "pass --sse aws:kms with --sse-kms-key-id (or HUBVAULT_SSE=aws:kms)",
            )),
            None => Ok(None),
            Some("AES256") if key_id.is_some() => Err(Error::usage(
                format!("{from}: --sse AES256 takes no KMS key id"),
                "pass --sse aws:kms to encrypt with a KMS key, or leave --sse-kms-key-id out",
            )),
            Some("AES256") => Ok(Some(Sse::S3)),
            Some("aws:kms") => Ok(Some(Sse::Kms {
                key_id: key_id.map(str::to_string),
            })),
            Some(other) => Err(Error::usage(
                format!("{from}: --sse {other:?} is not a server-side encryption"),
                "write --sse AES256 (SSE-S3) or --sse aws:kms (SSE-KMS, with --sse-kms-key-id KEY for a key of your own)",
            )),
        }
    }

    /// As the `x-amz-server-side-encryption` header says it.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Sse::S3 => "AES256",
            Sse::Kms { .. } => "aws:kms",
        }
    }
}

impl std::fmt::Display for Sse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sse::S3 => f.write_str("AES256 (SSE-S3)"),
            Sse::Kms { key_id: Some(k) } => write!(f, "aws:kms (SSE-KMS, key {k})"),
            Sse::Kms { key_id: None } => {
                f.write_str("aws:kms (SSE-KMS, the account's default key)")
            }
        }
    }
}

// Never print the secret, not even in a debug log.
impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint_shown())
            .field("credentials", &self.credentials.as_ref().map(|_| "<set>"))
            .field("region", &self.region)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("retry_timeout", &self.retry_timeout)
            .field("sse", &self.sse)
            .finish()
    }
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            credentials: None,
            region: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(120),
            retries: 6,
            retry_timeout: Duration::from_secs(120),
            sse: None,
        }
    }
}

impl S3Settings {
    /// `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`), `HUBVAULT_S3_CONNECT_TIMEOUT` (10 s),
    /// `HUBVAULT_S3_TIMEOUT` (120 s), `HUBVAULT_S3_RETRIES` (6),
    /// `HUBVAULT_S3_RETRY_TIMEOUT` (120 s), `HUBVAULT_SSE` and `HUBVAULT_SSE_KMS_KEY_ID`
    /// (none). A value that does not parse is an error that
    /// names the variable, never silently the default.
    pub fn from_env() -> Result<S3Settings> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`S3Settings::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<S3Settings> {
        let d = S3Settings::default();
        let endpoint = var("AWS_ENDPOINT_URL")
            .map(|v| ("AWS_ENDPOINT_URL", v))
            .or_else(|| var("AWS_ENDPOINT").map(|v| ("AWS_ENDPOINT", v)))
            .filter(|(_, v)| !v.is_empty());
        if let Some((name, ep)) = &endpoint {
            check_endpoint(name, ep)?;
        }
        let secs = |name: &str, default: Duration| -> Result<Duration> {
            match var(name).filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(v) => parse_seconds(&v).ok_or_else(|| {
                    Error::usage(
                        format!("{name}={v:?} is not a duration"),
                        format!("write a number of seconds or a duration such as 30s or 2m, e.g. {name}=120"),
                    )
                }),
            }
        };
        let retries = match var("HUBVAULT_S3_RETRIES").filter(|v| !v.is_empty()) {
            None => d.retries,
            Some(v) => v.parse().map_err(|_| {
                Error::usage(
                    format!("HUBVAULT_S3_RETRIES={v:?} is not a whole number"),
                    "write e.g. HUBVAULT_S3_RETRIES=6",
                )
            })?,
        };
        Ok(S3Settings {
            endpoint: endpoint.map(|(name, v)| without_userinfo(name, &v)),
            credentials: None,
            region: None,
            connect_timeout: secs("HUBVAULT_S3_CONNECT_TIMEOUT", d.connect_timeout)?,
            timeout: secs("HUBVAULT_S3_TIMEOUT", d.timeout)?,
            retries,
            retry_timeout: secs("HUBVAULT_S3_RETRY_TIMEOUT", d.retry_timeout)?,
            sse: Sse::parse(
                var("HUBVAULT_SSE").as_deref(),
                var("HUBVAULT_SSE_KMS_KEY_ID").as_deref(),
                "HUBVAULT_SSE",
            )?,
        })
    }

    /// The endpoint as it may be shown: without user name or password.
    pub fn endpoint_shown(&self) -> Option<String> {
        self.endpoint.as_deref().map(crate::store::url::redact_url)
    }
}

/// `120` (seconds) or a humantime duration (`2m`).
fn parse_seconds(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
        .or_else(|| humantime::parse_duration(v.trim()).ok())
}

/// The endpoint without a user name or password: S3 signs requests with the access key,
/// never with URL userinfo, and a URL that carries one would show it in the HTTP
/// client's own logs.
fn without_userinfo(name: &str, ep: &str) -> String {
    match url::Url::parse(ep) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            tracing::warn!(
                "{name} carries a user name or password, which S3 does not use; it is ignored (credentials go in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
            );
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let s = u.to_string();
            if ep.ends_with('/') {
                s
            } else {
                s.trim_end_matches('/').to_string()
            }
        }
        _ => ep.to_string(),
    }
}

fn check_endpoint(name: &str, ep: &str) -> Result<()> {
    let shown = crate::store::url::redact_url(ep);
    let parsed = url::Url::parse(ep).ok();
    let ok = parsed.as_ref().is_some_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(Error::usage(
            format!("{name}={shown:?} is not an http:// or https:// URL"),
            format!(
                "write the scheme too, e.g. {name}=https://s3.example.com or http://127.0.0.1:9000"
            ),
        ))
    }
}

/// `AmazonS3ConfigKey::Encryption(ServerSideEncryption)`: object_store 0.14 does not
/// export the inner key type, so it is named by its config string.
fn sse_key() -> AmazonS3ConfigKey {
    "aws_server_side_encryption"
        .parse()
        .expect("object_store knows aws_server_side_encryption")
}

pub(crate) fn store(bucket: &str, s3: &S3Settings) -> object_store::Result<AmazonS3> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some((id, secret)) = &s3.credentials {
        b = b
            .with_access_key_id(id.clone())
            .with_secret_access_key(secret.clone());
    }
    if let Some(region) = &s3.region {
        b = b.with_region(region.clone());
    }
    match &s3.sse {
        None => {}
        Some(Sse::S3) => b = b.with_config(sse_key(), "AES256"),
        Some(Sse::Kms { key_id: Some(k) }) => b = b.with_sse_kms_encryption(k.clone()),
        Some(Sse::Kms { key_id: None }) => b = b.with_config(sse_key(), "aws:kms"),
    }
    let mut client = ClientOptions::new()
        .with_connect_timeout(s3.connect_timeout)
        .with_timeout(s3.timeout);
    if let Some(ep) = &s3.endpoint {
        // Plain http only for an endpoint the operator named explicitly.
        client = client.with_allow_http(ep.starts_with("http://"));
        b = b
            .with_endpoint(ep.clone())
            .with_virtual_hosted_style_request(false);
    }
    let retry = RetryConfig {
        max_retries: s3.retries,
        retry_timeout: s3.retry_timeout,
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
    };
    b.with_client_options(client).with_retry(retry).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move |n| owned.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
    }

    #[test]
    fn an_endpoint_without_a_scheme_is_a_usage_error_naming_the_variable() {
        for bad in ["127.0.0.1:9000", "s3.example.com", "ftp://x", "http://"] {
            let err = S3Settings::from_vars(vars(&[("AWS_ENDPOINT_URL", bad)])).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("AWS_ENDPOINT_URL"), "{err}");
        }
        let ok =
            S3Settings::from_vars(vars(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")])).unwrap();
        assert_eq!(ok.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        let ok = S3Settings::from_vars(vars(&[("AWS_ENDPOINT_URL", "http://u:pw@127.0.0.1:9")]))
            .unwrap();
        assert_eq!(ok.endpoint.as_deref(), Some("http://127.0.0.1:9"));
    }

    #[test]
    fn malformed_timeouts_and_retries_are_refused_not_ignored() {
        for (name, bad) in [
            ("HUBVAULT_S3_TIMEOUT", "soon"),
            ("HUBVAULT_S3_CONNECT_TIMEOUT", "-1"),
            ("HUBVAULT_S3_RETRY_TIMEOUT", "1x"),
            ("HUBVAULT_S3_RETRIES", "many"),
        ] {
            let err = S3Settings::from_vars(vars(&[(name, bad)])).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(name), "{err}");
        }
        let s = S3Settings::from_vars(vars(&[
            ("HUBVAULT_S3_TIMEOUT", "2m"),
            ("HUBVAULT_S3_RETRY_TIMEOUT", "20"),
        ]))
        .unwrap();
        assert_eq!(s.timeout, Duration::from_secs(120));
        assert_eq!(s.retry_timeout, Duration::from_secs(20));
    }

    #[test]
    fn sse_takes_the_aws_cli_words_and_refuses_the_rest() {
        let p = |m: Option<&str>, k: Option<&str>| Sse::parse(m, k, "--sse");
        assert_eq!(p(None, None).unwrap(), None);
        assert_eq!(p(Some("AES256"), None).unwrap(), Some(Sse::S3));
        assert_eq!(
            p(Some("aws:kms"), Some("alias/backups")).unwrap(),
            Some(Sse::Kms {
                key_id: Some("alias/backups".into())
            })
        );
        assert_eq!(
            p(Some("aws:kms"), None).unwrap(),
            Some(Sse::Kms { key_id: None })
        );
        for (m, k) in [
            (Some("aes256"), None),
            (Some("kms"), None),
            (Some("AES256"), Some("k")),
            (None, Some("k")),
        ] {
            let e = p(m, k).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{m:?} {k:?}");
            assert!(e.to_string().contains("--sse"), "{e}");
        }
        for sse in [
            Sse::S3,
            Sse::Kms { key_id: None },
            Sse::Kms {
                key_id: Some("k".into()),
            },
        ] {
            let settings = S3Settings {
                sse: Some(sse),
                region: Some("us-east-1".into()),
                ..Default::default()
            };
            store("hubvault-sse-test", &settings).expect("a store with SSE builds");
        }
        let s = S3Settings::from_vars(vars(&[
            ("HUBVAULT_SSE", "aws:kms"),
            ("HUBVAULT_SSE_KMS_KEY_ID", "k1"),
        ]))
        .unwrap();
        assert_eq!(
            s.sse,
            Some(Sse::Kms {
                key_id: Some("k1".into())
            })
        );
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let s = S3Settings {
            credentials: Some(("AKIA".into(), "very-secret".into())),
            endpoint: Some("https://user:pw@s3.example.com".into()),
            ..Default::default()
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert_eq!(
            s.endpoint_shown().as_deref(),
            Some("https://s3.example.com/")
        );
    }
}

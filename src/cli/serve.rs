//! `hubvault serve`: the fleet on a web page (and `/api/`), read-only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hubvault::agent::config;
use hubvault::model::ids::OrgSlug;
use hubvault::ops::status::Scope;
use hubvault::serve::access::{Access, Token};
use hubvault::serve::{self, App};
use hubvault::store::bucket::Bucket;
use hubvault::{Error, Result};

use super::Global;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (IP:PORT; `localhost:PORT` means 127.0.0.1). Anything but
    /// loopback needs an access token (--token-file). Default 127.0.0.1:8080.
    #[arg(long, env = "HUBVAULT_SERVE_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// The bucket is listed at most once per this interval, however many pages are open.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration, value_name = "DURATION")]
    refresh: Duration,
    /// A backup at least this old is stale.
    #[arg(long, default_value = "24h", value_parser = super::parse_duration, value_name = "AGE")]
    max_age: Duration,
    /// File holding the access token (at least 16 letters, digits, - . _ ~). With it,
    /// every request needs the token; without it, only loopback is served.
    #[arg(long, env = "HUBVAULT_SERVE_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// TOML config file (the agent's): bucket, org, serve_listen, serve_token_file are
    /// read from it when not given here. A missing default file is fine.
    #[arg(long, env = "HUBVAULT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

fn parse_listen(s: &str) -> Result<SocketAddr> {
    let bad = || {
        Error::usage(
            format!("--listen {s:?} is not an address and port"),
            "write e.g. --listen 127.0.0.1:8080, --listen [::1]:8080 or --listen 0.0.0.0:8080 (with --token-file)",
        )
    };
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Err(bad())
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    // Everything is checked before the bucket is touched or a port is opened.
    let (file_path, explicit) = match &a.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(config::DEFAULT_CONFIG_PATH), false),
    };
    let file = config::load_file(&file_path, explicit)?;
    let listen = a
        .listen
        .or(file.serve_listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen = parse_listen(&listen)?;
    let token = a
        .token_file
        .or(file.serve_token_file)
        .map(|p| Token::from_file(&p))
        .transpose()?;
    let access = Access { token };
    hubvault::serve::access::check_listen(listen, access.token.as_ref())?;
    let org = g
        .org
        .clone()
        .or(file.org)
        .map(|o| OrgSlug::parse(&o))
        .transpose()?;
    let bucket_url = g.bucket.clone().or(file.bucket).ok_or_else(|| {
        Error::usage(
            "no bucket given",
            "pass --bucket s3://bucket-name or --bucket file:///abs/dir (or set HUBVAULT_BUCKET, or bucket in the config file)",
        )
    })?;
    let bucket = Bucket::open(&bucket_url)?;
    let scope = Scope {
        org,
        datahub: None,
        connector: None,
    };
    let listener = serve::bind(listen, &access).await?;
    let bound = listener.local_addr().unwrap_or(listen);
    let protected = access.token.is_some();
    let app = Arc::new(App::new(bucket, scope, a.max_age, a.refresh, access));
    let url = format!("http://{bound}/");
    if g.json {
        // One line: a supervisor or a test reads the address from the first line.
        outln!(
            "{}",
            serde_json::json!({
                "ok": true,
                "listening": bound.to_string(),
                "url": url,
                "bucket": app.bucket_shown,
                "scope": app.scope.describe(),
                "refresh_seconds": a.refresh.as_secs(),
                "token_required": protected,
            })
        );
    } else {
        outln!(
            "serving {url} (bucket {}, {}; read at most every {}; {})",
            app.bucket_shown,
            app.scope.describe(),
            hubvault::model::time::fmt_age(a.refresh),
            if protected {
                "access token required"
            } else {
                "loopback only"
            }
        );
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    serve::serve(listener, app, stopped()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or SIGINT.
async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_ip_and_port_or_localhost() {
        assert_eq!(parse_listen("127.0.0.1:80").unwrap().port(), 80);
        assert!(parse_listen("[::1]:8080").unwrap().ip().is_loopback());
        assert!(parse_listen("localhost:9").unwrap().ip().is_loopback());
        for bad in ["8080", "hub.example:80", "127.0.0.1", "localhost:x"] {
            assert_eq!(parse_listen(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }
}

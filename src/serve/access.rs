//! Who may read the page: loopback by default; anything else only with the access token.
//!
//! Rules (docs/SERVE.md, "Access"):
//! - A listen address that is not loopback needs a token, or `serve` refuses to start
//!   (exit 2): the page names every hub and connector of the fleet.
//! - With a token, every request must carry it: `Authorization: Bearer TOKEN` (scripts,
//!   the API) or the `hubvault_token` cookie. A browser gets the cookie by opening any
//!   page once with `?token=TOKEN`; the answer is a redirect to the same address without
//!   the token, so it does not stay in the address bar or the history.
//! - The token is compared in constant time: both sides are hashed (SHA-256) and the
//!   digests compared with `subtle`, so neither the content nor the length of the token
//!   shows in the time an answer takes.
//! - Without a token (loopback), the `Host` header must name a loopback host, so a web
//!   page elsewhere cannot read this one through DNS rebinding.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

pub const COOKIE: &str = "hubvault_token";
/// Shorter tokens are refused: the token is the only lock on a non-loopback page.
pub const MIN_TOKEN_LEN: usize = 16;

/// The access token, kept only as its digest.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// The token in `text` (surrounding white space ignored). `source` names where it
    /// came from in errors.
    pub fn parse(text: &str, source: &str) -> Result<Token> {
        let t = text.trim();
        let hint = "put a long random token in the file, e.g. `openssl rand -hex 32 > FILE` (letters, digits and - . _ ~ only), and chmod 600 it";
        if t.len() < MIN_TOKEN_LEN {
            return Err(Error::usage(
                format!(
                    "{source}: the access token is {} characters long; at least {MIN_TOKEN_LEN} are needed",
                    t.len()
                ),
                hint,
            ));
        }
        // Characters that survive a URL query, a cookie and a header unchanged.
        if !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return Err(Error::usage(
                format!(
                    "{source}: the access token has characters other than letters, digits and - . _ ~"
                ),
                hint,
            ));
        }
        Ok(Token {
            digest: Sha256::digest(t.as_bytes()).into(),
        })
    }

    /// Reads the token file (`--token-file` or `serve_token_file`).
    pub fn from_file(path: &Path) -> Result<Token> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::usage(
                format!("token file {}: cannot read: {e}", path.display()),
                "check the path given with --token-file (or serve_token_file in the config file)",
            )
        })?;
        Token::parse(&text, &format!("token file {}", path.display()))
    }

    /// True if and only if `given` is the token; constant time in both.
    pub fn matches(&self, given: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        d.ct_eq(&self.digest).into()
    }
}

/// True if and only if `ip` is a loopback address (IPv4-mapped IPv6 included).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Refuses a listen address that is not loopback when there is no token.
pub fn check_listen(addr: SocketAddr, token: Option<&Token>) -> Result<()> {
    if token.is_none() && !is_loopback(addr.ip()) {
        return Err(Error::usage(
            format!(
                "--listen {addr} is not a loopback address, and no access token is configured: the page would show the fleet to anyone who can reach it"
            ),
            "pass --token-file FILE (a file holding a long random token: `openssl rand -hex 32 > FILE`), or set serve_token_file in the config file; or listen on 127.0.0.1",
        ));
    }
    Ok(())
}

/// What a request may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The right `?token=`: set the cookie (`Set-Cookie: {cookie}`) and send the browser
    /// to `location`.
    SetCookie {
        location: String,
        cookie: String,
    },
    /// No or a wrong token.
    Refuse,
    /// No token configured, and the `Host` header is not a loopback name.
    ForeignHost,
}

/// The access rule for one server.
#[derive(Clone, Debug)]
pub struct Access {
    pub token: Option<Token>,
}

impl Access {
    /// Judges a request from its `Authorization`, `Cookie` and `Host` headers and its
    /// path and query.
    pub fn judge(
        &self,
        authorization: Option<&str>,
        cookie: Option<&str>,
        host: Option<&str>,
        path: &str,
        query: Option<&str>,
    ) -> Verdict {
        let Some(token) = &self.token else {
            return if host.is_some_and(loopback_host) {
                Verdict::Allow
            } else {
                Verdict::ForeignHost
            };
        };
        if let Some(q) = query {
            let mut given = None;
            let mut rest = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                if k == "token" {
                    given = Some(v.into_owned());
                } else {
                    rest.append_pair(&k, &v);
                }
            }
            if let Some(given) = given {
                if !token.matches(&given) {
                    return Verdict::Refuse;
                }
                let rest = rest.finish();
                // One leading slash: a browser goes to another server for `//host` or
                // `/\host` (tabs and newlines in between are dropped first).
                let path = format!(
                    "/{}",
                    path.trim_start_matches(|c: char| c == '/'
                        || c == '\\'
                        || c.is_ascii_control())
                );
                let location = if rest.is_empty() {
                    path
                } else {
                    format!("{path}?{rest}")
                };
                return Verdict::SetCookie {
                    location,
                    cookie: cookie_header(&given),
                };
            }
        }
        let bearer = authorization.and_then(|a| {
            let (scheme, value) = a.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
        });
        let from_cookie = cookie.and_then(|c| {
            c.split(';').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == COOKIE).then_some(v)
            })
        });
        // Either one that matches lets the request in; both are checked so the time
        // does not tell which one was there.
        let a = bearer.is_some_and(|b| token.matches(b));
        let c = from_cookie.is_some_and(|v| token.matches(v));
        if a | c {
            Verdict::Allow
        } else {
            Verdict::Refuse
        }
    }
}

/// `Set-Cookie` value for the token: not readable by scripts, sent only to this server,
/// and only on same-site requests and top-level navigation.
pub fn cookie_header(token_text: &str) -> String {
    format!("{COOKIE}={token_text}; Path=/; HttpOnly; SameSite=Lax")
}

/// True if and only if a `Host` header names this machine's loopback: `localhost`, a
/// `127.x.y.z` address or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, _)) => inside,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef0123456789abcdef";

    fn access() -> Access {
        Access {
            token: Some(Token::parse(T, "test").unwrap()),
        }
    }

    #[test]
    fn token_comparison_accepts_only_the_exact_token() {
        let t = Token::parse(&format!("  {T}\n"), "test").unwrap();
        assert!(t.matches(T));
        for wrong in [
            "",
            &T[..T.len() - 1],
            &format!("{T}0"),
            "1123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdeF",
        ] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert!(format!("{t:?}").contains('…') && !format!("{t:?}").contains("0123"));
    }

    #[test]
    fn short_or_odd_tokens_are_refused_with_exit_2() {
        for bad in ["", "short", "0123456789abcdef 0123", "0123456789abcdef;x"] {
            let e = Token::parse(bad, "token file /t").unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert!(e.to_string().contains("token file /t"), "{e}");
        }
    }

    #[test]
    fn a_non_loopback_listen_needs_a_token() {
        let tok = Token::parse(T, "t").unwrap();
        for ok in ["127.0.0.1:8080", "[::1]:80", "127.9.9.9:1"] {
            check_listen(ok.parse().unwrap(), None).unwrap();
        }
        for open in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:80"] {
            let e = check_listen(open.parse().unwrap(), None).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.hint().unwrap().contains("--token-file"));
            check_listen(open.parse().unwrap(), Some(&tok)).unwrap();
        }
    }

    #[test]
    fn requests_need_the_token_as_bearer_cookie_or_query() {
        let a = access();
        let j = |auth: Option<&str>, cookie: Option<&str>, q: Option<&str>| {
            a.judge(auth, cookie, Some("hub.example:8080"), "/hubs/x", q)
        };
        assert_eq!(j(None, None, None), Verdict::Refuse);
        assert_eq!(j(Some(&format!("Bearer {T}")), None, None), Verdict::Allow);
        assert_eq!(j(Some(&format!("bearer  {T}")), None, None), Verdict::Allow);
        assert_eq!(j(Some("Bearer nope"), None, None), Verdict::Refuse);
        assert_eq!(j(Some(T), None, None), Verdict::Refuse);
        assert_eq!(
            j(None, Some(&format!("a=b; {COOKIE}={T}")), None),
            Verdict::Allow
        );
        assert_eq!(j(None, Some(&format!("{COOKIE}=x")), None), Verdict::Refuse);
        assert_eq!(
            j(None, None, Some(&format!("state=stale&token={T}&page=2"))),
            Verdict::SetCookie {
                location: "/hubs/x?state=stale&page=2".into(),
                cookie: format!("{COOKIE}={T}; Path=/; HttpOnly; SameSite=Lax"),
            }
        );
        assert!(matches!(
            j(None, None, Some(&format!("token={T}"))),
            Verdict::SetCookie { location, .. } if location == "/hubs/x"
        ));
        assert_eq!(j(None, None, Some("token=wrong")), Verdict::Refuse);
    }

    #[test]
    fn the_redirect_after_token_never_leaves_this_server() {
        let a = access();
        // A browser reads `//host` and `/\host` (any mix of slashes and backslashes)
        // as another server.
        for path in [
            "//evil.example",
            "/\\evil.example",
            "///evil.example/x",
            "/\\/evil.example",
            "/\t/evil.example",
        ] {
            let Verdict::SetCookie { location, .. } = a.judge(
                None,
                None,
                Some("hub.example"),
                path,
                Some(&format!("token={T}&state=stale")),
            ) else {
                panic!("{path}: the right token sets the cookie");
            };
            let rest = location.strip_prefix('/').expect("a path on this server");
            assert!(
                rest.starts_with("evil.example"),
                "{path} -> {location}: the browser would leave for another server"
            );
            assert!(location.ends_with("?state=stale"), "{location}");
        }
        assert!(matches!(
            a.judge(None, None, None, "/hubs/x/", Some(&format!("token={T}"))),
            Verdict::SetCookie { location, .. } if location == "/hubs/x/"
        ));
    }

    #[test]
    fn without_a_token_only_loopback_host_names_are_served() {
        let a = Access { token: None };
        for host in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8080",
            "127.0.0.2",
        ] {
            assert_eq!(
                a.judge(None, None, Some(host), "/", None),
                Verdict::Allow,
                "{host}"
            );
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "[::2]:1",
        ] {
            assert_eq!(
                a.judge(None, None, Some(host), "/", None),
                Verdict::ForeignHost,
                "{host}"
            );
        }
        assert_eq!(a.judge(None, None, None, "/", None), Verdict::ForeignHost);
    }
}

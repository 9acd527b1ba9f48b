//! The HTTP side: routes, the access check on every request, and the caches that keep
//! the bucket's cost to one refresh per interval however many pages are open.
//!
//! Only GET (and HEAD) routes exist; every handler reads, none writes. Handlers that
//! read the bucket do it in a task of their own, so a browser that goes away mid-refresh
//! does not abandon the refresh that other pages are waiting for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde_json::json;

use crate::catalog::inventory::{self, Scope};
use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};
use crate::model::layout::ConnectorKey;
use crate::serve::access::{Access, Verdict};
use crate::serve::cache::{Cache, Failure, Got};
use crate::serve::detail::{self, Detail, Manifests};
use crate::serve::fleet::{Fleet, Query, select};
use crate::serve::html::{self, Frame};
use crate::store::Bucket;

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
/// Connector pages whose cache is kept; past this, caches not in use are dropped.
const CONNECTOR_CACHES: usize = 1024;

/// What the server reads and how.
pub struct App {
    pub bucket: Bucket,
    /// The bucket URL as pages show it: never with credentials.
    pub bucket_shown: String,
    pub scope: Scope,
    pub max_age: Duration,
    pub refresh: Duration,
    pub access: Access,
    pub fleet: Cache<Fleet>,
    connectors: Mutex<HashMap<ConnectorKey, Arc<Cache<Option<Detail>>>>>,
    manifests: Manifests,
}

impl App {
    pub fn new(
        bucket: Bucket,
        scope: Scope,
        max_age: Duration,
        refresh: Duration,
        access: Access,
    ) -> App {
        App {
            bucket_shown: crate::store::url::redact_url(bucket.url()),
            bucket,
            scope,
            max_age,
            refresh,
            access,
            fleet: Cache::new(refresh),
            connectors: Mutex::new(HashMap::new()),
            manifests: Manifests::default(),
        }
    }

    /// The fleet, read from the bucket at most once per refresh interval.
    pub async fn fleet(self: &Arc<Self>) -> Got<Fleet> {
        let app = self.clone();
        tokio::spawn(async move {
            let a = app.clone();
            app.fleet
                .get(|| async move {
                    let listed = inventory::scan(&a.bucket, &a.scope).await?;
                    Ok(Fleet::build(
                        listed,
                        a.max_age,
                        Utc::now(),
                        a.bucket_shown.clone(),
                        a.scope.describe(),
                    ))
                })
                .await
        })
        .await
        .expect("a fleet refresh task never panics")
    }

    fn connector_cache(&self, ck: &ConnectorKey) -> Arc<Cache<Option<Detail>>> {
        let mut map = self
            .connectors
            .lock()
            .expect("connector cache lock is never poisoned");
        if !map.contains_key(ck) && map.len() >= CONNECTOR_CACHES {
            map.retain(|_, c| Arc::strong_count(c) > 1);
        }
        map.entry(ck.clone())
            .or_insert_with(|| Arc::new(Cache::new(self.refresh)))
            .clone()
    }

    /// One connector's page, read at most once per refresh interval.
    async fn detail(self: &Arc<Self>, ck: ConnectorKey) -> Got<Option<Detail>> {
        let cache = self.connector_cache(&ck);
        let app = self.clone();
        tokio::spawn(async move {
            cache
                .get(|| async { detail::load(&app.bucket, &ck, app.max_age, &app.manifests).await })
                .await
        })
        .await
        .expect("a connector refresh task never panics")
    }

    fn frame<'a>(&'a self, fleet: Option<&'a Fleet>, failure: Option<&'a Failure>) -> Frame<'a> {
        Frame {
            bucket: &self.bucket_shown,
            scope: fleet.map_or("", |f| f.scope.as_str()),
            checked_at: fleet.map(|f| f.checked_at),
            refresh: self.refresh,
            failure,
        }
    }
}

/// The router: pages, the JSON API, the embedded assets, all behind the access check.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(fleet_page))
        .route("/hubs/{id}", get(hub_page))
        .route("/connectors/{id}", get(connector_page))
        .route("/api/status", get(api_status))
        .route("/api/hubs/{id}", get(api_hub))
        .route("/api/connectors/{id}", get(api_connector))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Pages name assets with the version (`?v=`), so a new binary busts this.
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The access check on every request, and the headers every answer carries.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let h = req.headers();
    let verdict = app.access.judge(
        header_str(h, header::AUTHORIZATION),
        header_str(h, header::COOKIE),
        header_str(h, header::HOST),
        req.uri().path(),
        req.uri().query(),
    );
    let api = req.uri().path().starts_with("/api/");
    let mut resp = match verdict {
        Verdict::Allow => next.run(req).await,
        Verdict::SetCookie { location, cookie } => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, location), (header::SET_COOKIE, cookie)],
        )
            .into_response(),
        Verdict::Refuse => {
            let text = "this server needs its access token";
            let hint = "open any page once with ?token=TOKEN (a cookie keeps it), or send the header Authorization: Bearer TOKEN; the token is in the server's --token-file";
            let mut r = refusal(
                api,
                StatusCode::UNAUTHORIZED,
                "Access token needed",
                text,
                hint,
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hubvault\""),
            );
            r
        }
        Verdict::ForeignHost => refusal(
            api,
            StatusCode::MISDIRECTED_REQUEST,
            "Loopback only",
            "without an access token this server answers only requests addressed to localhost, 127.0.0.1 or [::1]",
            "open http://127.0.0.1:PORT/ on this machine, or start the server with --token-file to serve other addresses",
        ),
    };
    let hs = resp.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        hs.insert(k, HeaderValue::from_static(v));
    }
    if !hs.contains_key(header::CACHE_CONTROL) {
        hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

fn refusal(api: bool, status: StatusCode, title: &str, text: &str, hint: &str) -> Response {
    if api {
        api_error(status, text, Some(hint))
    } else {
        let body = format!(
            r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} · hubvault</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/assets/style.css"></head><body><main>{}</main></body></html>"#,
            html::message_body(title, text, Some(hint))
        );
        (status, Html(body)).into_response()
    }
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response {
    // Compact: the fleet's document is megabytes at 10,000 connectors (`jq` pretty-prints).
    let mut body = serde_json::to_vec(&v).expect("JSON values serialize");
    body.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn api_error(status: StatusCode, error: &str, hint: Option<&str>) -> Response {
    json_response(status, json!({"ok": false, "error": error, "hint": hint}))
}

fn page_error(
    app: &App,
    status: StatusCode,
    title: &str,
    text: &str,
    hint: Option<&str>,
) -> Response {
    let body = html::message_body(title, text, hint);
    (
        status,
        Html(html::page(title, &app.frame(None, None), &body)),
    )
        .into_response()
}

async fn not_found(State(app): State<Arc<App>>, req: Request) -> Response {
    if req.uri().path().starts_with("/api/") {
        api_error(
            StatusCode::NOT_FOUND,
            "no such API address",
            Some("the API has /api/status, /api/hubs/{id} and /api/connectors/{id}"),
        )
    } else {
        page_error(
            &app,
            StatusCode::NOT_FOUND,
            "Not found",
            "there is no page at this address",
            Some("start from the fleet page, /"),
        )
    }
}

/// The fleet, or the answer to give when it could never be read.
fn need_fleet(app: &App, got: &Got<Fleet>, api: bool) -> Result<Arc<Fleet>, Response> {
    match (&got.value, &got.failure) {
        (Some(f), _) => Ok(f.clone()),
        (None, Some(e)) => Err(if api {
            api_error(StatusCode::BAD_GATEWAY, &e.error, e.hint.as_deref())
        } else {
            let body =
                html::message_body("The bucket could not be read", &e.error, e.hint.as_deref());
            (
                StatusCode::BAD_GATEWAY,
                Html(html::page(
                    "Bucket unreachable",
                    &app.frame(None, None),
                    &body,
                )),
            )
                .into_response()
        }),
        (None, None) => unreachable!("a cache read gives a value or a failure"),
    }
}

async fn fleet_page(State(app): State<Arc<App>>, req: Request) -> Response {
    let q = Query::parse(req.uri().query().unwrap_or(""));
    let got = app.fleet().await;
    let fleet = match need_fleet(&app, &got, false) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let sel = select(&fleet.connectors, &q);
    let body = html::fleet_body(&fleet, fleet.choices(), &q, &sel);
    let frame = app.frame(Some(&fleet), got.failure.as_deref());
    Html(html::page("Fleet", &frame, &body)).into_response()
}

async fn api_status(State(app): State<Arc<App>>, req: Request) -> Response {
    let qs = req.uri().query().unwrap_or("");
    let got = app.fleet().await;
    let fleet = match need_fleet(&app, &got, true) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut q = Query::parse(qs);
    // The API gives every matching row unless a page size is asked for.
    if !url::form_urlencoded::parse(qs.as_bytes()).any(|(k, _)| k == "per") {
        q.per = fleet.connectors.len().max(1);
    }
    let sel = select(&fleet.connectors, &q);
    json_response(
        StatusCode::OK,
        json!({
            "ok": true,
            "bucket": fleet.bucket,
            "scope": fleet.scope,
            "checked_at": fleet.checked_at,
            "refresh_seconds": app.refresh.as_secs(),
            "max_age_seconds": fleet.max_age_seconds,
            "summary": fleet.summary,
            "matched": sel.matched,
            "page": sel.page,
            "pages": sel.pages,
            "connectors": sel.rows,
            "failure": got.failure.as_deref(),
        }),
    )
}

/// `{id}` and an optional `?org=` of a hub address.
fn hub_of(id: &str, req: &Request) -> Option<(DatahubId, Option<OrgSlug>)> {
    let hub = DatahubId::parse(id).ok()?;
    let org = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "org")
        .and_then(|(_, v)| OrgSlug::parse(&v).ok());
    Some((hub, org))
}

const HUB_UNKNOWN: &str = "no connector of this hub is in the bucket (as of the last read)";
const HUB_HINT: &str = "check the id, or wait for the next refresh if its first backup is new";

async fn hub_page(State(app): State<Arc<App>>, Path(id): Path<String>, req: Request) -> Response {
    let got = app.fleet().await;
    let fleet = match need_fleet(&app, &got, false) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(h) = hub_of(&id, &req).and_then(|(hub, org)| fleet.hub(&hub, org.as_ref())) else {
        return page_error(
            &app,
            StatusCode::NOT_FOUND,
            "Unknown hub",
            HUB_UNKNOWN,
            Some(HUB_HINT),
        );
    };
    let body = html::hub_body(&h, &app.bucket_shown, fleet.checked_at);
    let frame = app.frame(Some(&fleet), got.failure.as_deref());
    Html(html::page(&format!("Hub {id}"), &frame, &body)).into_response()
}

async fn api_hub(State(app): State<Arc<App>>, Path(id): Path<String>, req: Request) -> Response {
    let got = app.fleet().await;
    let fleet = match need_fleet(&app, &got, true) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(h) = hub_of(&id, &req).and_then(|(hub, org)| fleet.hub(&hub, org.as_ref())) else {
        return api_error(StatusCode::NOT_FOUND, HUB_UNKNOWN, Some(HUB_HINT));
    };
    let cmd = h.restore_hub_command(&app.bucket_shown);
    let mut v = serde_json::to_value(&h).expect("a hub view serializes");
    v["ok"] = json!(true);
    v["checked_at"] = json!(fleet.checked_at);
    v["restore_hub_command"] = json!(cmd);
    json_response(StatusCode::OK, v)
}

const CONNECTOR_UNKNOWN: &str = "this connector is not in the bucket (as of the last read)";
const CONNECTOR_HINT: &str = "check the id (from the fleet page or `hubvault status`), or wait for the next refresh if its first backup is new";

/// The fleet, the connector's detail and its hub, or the answer to give instead.
async fn connector_of(
    app: &Arc<App>,
    id: &str,
    api: bool,
) -> Result<(Arc<Fleet>, Arc<Option<Detail>>, Option<Arc<Failure>>), Response> {
    let got = app.fleet().await;
    let fleet = need_fleet(app, &got, api)?;
    let unknown = || {
        if api {
            api_error(
                StatusCode::NOT_FOUND,
                CONNECTOR_UNKNOWN,
                Some(CONNECTOR_HINT),
            )
        } else {
            page_error(
                app,
                StatusCode::NOT_FOUND,
                "Unknown connector",
                CONNECTOR_UNKNOWN,
                Some(CONNECTOR_HINT),
            )
        }
    };
    let Some(row) = ConnectorId::parse(id)
        .ok()
        .and_then(|_| fleet.connector(id))
    else {
        return Err(unknown());
    };
    let ck = ConnectorKey::new(
        row.status.org.clone(),
        row.status.datahub,
        row.status.connector,
    );
    let d = app.detail(ck).await;
    match (d.value, d.failure) {
        (Some(v), failure) if v.is_some() => Ok((fleet, v, failure.or(got.failure))),
        (Some(_), _) => Err(unknown()),
        (None, Some(e)) => Err(if api {
            api_error(StatusCode::BAD_GATEWAY, &e.error, e.hint.as_deref())
        } else {
            page_error(
                app,
                StatusCode::BAD_GATEWAY,
                "The bucket could not be read",
                &e.error,
                e.hint.as_deref(),
            )
        }),
        (None, None) => unreachable!("a cache read gives a value or a failure"),
    }
}

async fn connector_page(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let (fleet, detail, failure) = match connector_of(&app, &id, false).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let d = detail.as_ref().as_ref().expect("checked by connector_of");
    let s = &d.row.status;
    let hub = fleet.hub(&s.datahub, Some(&s.org));
    let body = html::connector_body(d, hub.as_ref(), &app.bucket_shown, app.max_age);
    let mut frame = app.frame(Some(&fleet), failure.as_deref());
    frame.checked_at = Some(d.checked_at);
    let title = s.name.clone().unwrap_or_else(|| s.connector.to_string());
    Html(html::page(&title, &frame, &body)).into_response()
}

async fn api_connector(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let (fleet, detail, failure) = match connector_of(&app, &id, true).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let d = detail.as_ref().as_ref().expect("checked by connector_of");
    let s = &d.row.status;
    let hub = fleet.hub(&s.datahub, Some(&s.org));
    let mut v = serde_json::to_value(d).expect("a connector view serializes");
    v["ok"] = json!(true);
    v["hub_common_instant"] = json!(hub.as_ref().and_then(|h| h.common_instant));
    v["commands"] = json!({
        "restore": d.row.restore_command(&app.bucket_shown),
        "restore_hub": hub.as_ref().and_then(|h| h.restore_hub_command(&app.bucket_shown)),
    });
    v["failure"] = json!(failure.as_deref());
    json_response(StatusCode::OK, v)
}

//! Issue 17, `hubvault serve`: the fleet on a web page and its JSON API, read-only, one
//! bucket refresh per interval however many pages load, loopback unless a token is
//! configured; and the page in a real browser (headless Chromium through WebDriver).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::both;
use crate::common::{Kind, TestBucket, cmd_private_tmp, hubvault, json_of, private_tmp, rt, run};
use crate::fixture::{self, Spec};
use crate::proxy::Proxy;
use crate::webdriver::Browser;
use hubvault::model::ids::{DatahubId, OrgSlug};
use hubvault::model::layout::ConnectorKey;

/// A running `hubvault serve`, stopped (SIGTERM) on drop.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    stderr: PathBuf,
}

impl Served {
    /// Starts `cmd` (the binary with its environment) as `serve --json --listen
    /// 127.0.0.1:0 ARGS…` and reads the address it printed.
    pub fn start(mut cmd: Command, args: &[&str]) -> Served {
        let stderr = private_tmp().join(format!("serve-{}.log", uuid::Uuid::new_v4().simple()));
        let mut child = cmd
            .args(["serve", "--json", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("hubvault serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let doc: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "serve did not start: {line:?}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        let url = doc["url"]
            .as_str()
            .unwrap()
            .trim_end_matches('/')
            .to_string();
        Served { child, url, stderr }
    }

    /// SIGTERM, then the exit code.
    pub fn stop(mut self) -> Option<i32> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap().code()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
        if std::env::var("HUBVAULT_TEST_VERBOSE").is_ok() {
            eprintln!(
                "{}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }
}

/// One answer: status, headers (lowercase names), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn fetch(c: &reqwest::Client, method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = c.request(method.parse().unwrap(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp.text().await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

/// One request, on a runtime of its own.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    rt().block_on(fetch(&client(), "GET", url, headers))
}

/// Three connectors of one hub, backed up and drilled: `fresh` stays so; `broken` loses
/// its canonical object; on a local directory, `stale` gets a canonical object three
/// days old (S3 servers set Last-Modified themselves, so there it stays fresh).
pub struct Three {
    pub hub: DatahubId,
    pub fresh: Spec,
    pub stale: Spec,
    pub broken: Spec,
    _dir: tempfile::TempDir,
}

fn ck(s: &Spec) -> ConnectorKey {
    ConnectorKey::new(OrgSlug::parse("acme").unwrap(), s.datahub, s.connector)
}

pub fn three(tb: &TestBucket) -> Three {
    let dir = tempfile::tempdir().unwrap();
    let hub = DatahubId::random();
    let make = |ty: &str, name: &str| {
        let mut spec = Spec::new(ty, name, 30);
        spec.datahub = hub;
        let d = dir.path().join(spec.connector.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let db = d.join("sqlite.db");
        fixture::create(&db, &spec).unwrap();
        json_of(
            &run(cmd_private_tmp(tb)
                .args(["backup", "--json", "--db"])
                .arg(&db)),
            0,
        );
        spec
    };
    let fresh = make("hrb-cellario", "Cellario Screening Cell 2");
    let stale = make("sdc", "SDC Upstream");
    let broken = make("idbs-eworkbook", "E-WorkBook Bioassay");
    json_of(&run(cmd_private_tmp(tb).args(["verify", "--json"])), 0);
    let bucket = tb.bucket();
    rt().block_on(bucket.delete(&ck(&broken).canonical(&Default::default())))
        .unwrap();
    if tb.kind == Kind::Local {
        let key = ck(&stale).canonical(&Default::default());
        let path = tb.dir.as_ref().unwrap().path().join(key.as_ref());
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3 * 86400))
            .unwrap();
    }
    Three {
        hub,
        fresh,
        stale,
        broken,
        _dir: dir,
    }
}

/// Every (key, size) in the bucket, for "nothing was written".
fn snapshot(tb: &TestBucket) -> Vec<(String, u64)> {
    let mut k = tb.keys("");
    k.sort();
    k
}

fn rows_in(html: &str) -> usize {
    html.matches("<tr class=\"row-").count()
}

fn pages_and_api(tb: &TestBucket) {
    let t = three(tb);
    // A name from the bucket that would be markup if written as is.
    let evil = ConnectorKey::new(
        OrgSlug::parse("acme").unwrap(),
        t.hub,
        hubvault::model::ids::ConnectorId::random(),
    );
    rt().block_on(tb.bucket().put_bytes(
        &evil.label("sdc", "<script>alert(1)</script>"),
        bytes::Bytes::new(),
        hubvault::store::WriteMode::Create,
    ))
    .unwrap();
    let before = snapshot(tb);
    let s = Served::start(tb.cmd(), &["--refresh", "1h"]);

    // The API: every connector, its state, what can be restored, continuous fields null.
    let doc = get(&format!("{}/api/status", s.url), &[]).json();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["summary"]["total"], 4);
    let stale = tb.kind == Kind::Local;
    let state_of = |spec: &Spec| -> Value {
        doc["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["connector"] == spec.connector.to_string())
            .unwrap()
            .clone()
    };
    assert_eq!(state_of(&t.fresh)["state"], "fresh");
    assert_eq!(
        state_of(&t.stale)["state"],
        if stale { "stale" } else { "fresh" }
    );
    let broken = state_of(&t.broken);
    assert_eq!(broken["state"], "broken");
    assert!(broken["newest_restorable"].is_string(), "{broken}");
    assert!(broken["continuous_lag_seconds"].is_null());
    assert_eq!(state_of(&t.fresh)["never_verified"], false);
    assert_eq!(doc["summary"]["never_verified"], 1, "{doc:#}");
    assert!(!doc["bucket"].as_str().unwrap().contains('@'));

    // The page without JavaScript: filter and sort are query parameters.
    let page = get(&format!("{}/", s.url), &[]);
    assert_eq!(page.status, 200);
    assert_eq!(rows_in(&page.body), 4);
    assert!(page.body.contains(">BROKEN<") && page.body.contains("mark-broken"));
    assert!(
        !page.body.contains("<script>alert"),
        "markup from the bucket got through"
    );
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // Broken: the one that lost its canonical object, and the one with only a label.
    let only = get(&format!("{}/?state=broken", s.url), &[]);
    assert_eq!(rows_in(&only.body), 2);
    assert!(only.body.contains(&t.broken.connector.to_string()));
    assert!(only.body.contains(&evil.connector.to_string()));
    let typed = get(&format!("{}/?q=sdc+upstream", s.url), &[]);
    assert_eq!(rows_in(&typed.body), 1);
    assert!(typed.body.contains("SDC Upstream"));
    let sorted = get(&format!("{}/?sort=name&dir=desc", s.url), &[]);
    let at = |name: &str| sorted.body.find(name).unwrap();
    assert!(at("SDC Upstream") < at("E-WorkBook Bioassay"));
    assert!(at("E-WorkBook Bioassay") < at("Cellario Screening Cell 2"));

    // The hub: its connectors and the newest common instant (the oldest of the newest).
    let h = get(&format!("{}/api/hubs/{}", s.url, t.hub), &[]).json();
    let newest: Vec<String> = doc["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["newest_restorable"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        newest.len(),
        3,
        "the labelled-only connector has nothing restorable"
    );
    assert!(h["common_instant"].is_null(), "{h}");
    assert!(
        h["common_instant_note"]
            .as_str()
            .unwrap()
            .contains("nothing restorable")
    );
    let hub_page = get(&format!("{}/hubs/{}", s.url, t.hub), &[]);
    assert_eq!(hub_page.status, 200);
    assert_eq!(rows_in(&hub_page.body), 4);

    // The connector: versions, drills, the chart and the command to copy.
    let c = get(
        &format!("{}/api/connectors/{}", s.url, t.fresh.connector),
        &[],
    )
    .json();
    assert_eq!(c["ok"], true);
    assert_eq!(c["versions"].as_array().unwrap().len(), 1);
    assert_eq!(c["versions"][0]["current"], true);
    assert!(c["versions"][0]["size"].as_u64().unwrap() > 4096);
    assert_eq!(c["drills"][0]["ok"], true);
    let restore = format!(
        "hubvault restore --bucket {} --org acme --datahub {} --connector {} --hub-root /var/datahub",
        tb.url, t.hub, t.fresh.connector
    );
    assert_eq!(c["commands"]["restore"], restore.as_str());
    let cp = get(&format!("{}/connectors/{}", s.url, t.fresh.connector), &[]);
    assert_eq!(cp.status, 200);
    assert!(cp.body.contains(&restore), "{}", cp.body);
    assert!(cp.body.contains("<svg class=\"chart\""));

    // Unknown ids and paths, and anything but GET.
    for path in [
        format!(
            "/connectors/{}",
            hubvault::model::ids::ConnectorId::random()
        ),
        "/connectors/not-an-id".to_string(),
        format!("/hubs/{}", DatahubId::random()),
        "/nowhere".to_string(),
    ] {
        assert_eq!(get(&format!("{}{path}", s.url), &[]).status, 404, "{path}");
        assert_eq!(
            get(&format!("{}/api{path}", s.url), &[]).status,
            404,
            "/api{path}"
        );
    }
    let post = rt().block_on(fetch(&client(), "POST", &format!("{}/", s.url), &[]));
    assert_eq!(post.status, 405);

    // Nothing was written.
    assert_eq!(snapshot(tb), before);
    assert_eq!(s.stop(), Some(0), "SIGTERM stops serve cleanly");
}
both!(
    serve_pages_and_api_show_states_hubs_connectors_and_write_nothing,
    pages_and_api
);

/// Issue 17: however many pages load at once, the bucket is listed once per refresh, and
/// nothing is ever written; a connector page reads its own prefix once too.
#[test]
fn serve_shares_one_refresh_among_concurrent_pages_and_never_writes_on_s3() {
    let tb = TestBucket::s3();
    let cks = crate::status::seed(&tb.bucket(), "acme", 300, 5);
    let proxy = Proxy::s3();
    let s = Served::start(proxy.cmd(&tb), &["--refresh", "1h"]);
    let lists = |p: &Proxy, prefix: &str| {
        p.requests()
            .iter()
            .filter(|(m, q)| m == "GET" && q.contains("list-type=2") && q.contains(prefix))
            .count()
    };
    let c = client();
    let urls: Vec<String> = (0..40)
        .map(|i| format!("{}{}", s.url, if i % 2 == 0 { "/" } else { "/api/status" }))
        .collect();
    let answers: Vec<Answer> = rt().block_on(futures::future::join_all(
        urls.iter().map(|u| fetch(&c, "GET", u, &[])),
    ));
    assert!(answers.iter().all(|a| a.status == 200));
    // 1,195 keys: two pages of 1,000, for the start-up read and 40 pages together.
    assert_eq!(lists(&proxy, "prefix="), 2, "{:#?}", proxy.requests());

    // Ten loads of one connector page: one listing of its prefix.
    let one = &cks[42];
    let page = format!("{}/connectors/{}", s.url, one.connector);
    let answers: Vec<Answer> = rt().block_on(async {
        futures::future::join_all((0..10).map(|_| fetch(&c, "GET", &page, &[]))).await
    });
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{}",
        answers[0].body
    );
    let connector_lists = lists(&proxy, &one.connector.to_string());
    assert_eq!(connector_lists, 1, "{:#?}", proxy.requests());

    // Browse everything a page links to, and the API: reads only.
    let hub = get(&format!("{}/hubs/{}", s.url, one.datahub), &[]);
    assert_eq!(hub.status, 200);
    for path in [
        format!("/api/hubs/{}", one.datahub),
        format!("/api/connectors/{}", one.connector),
        "/?state=broken&sort=size&dir=desc".into(),
        "/assets/app.js".into(),
        "/assets/style.css".into(),
    ] {
        assert_eq!(get(&format!("{}{path}", s.url), &[]).status, 200, "{path}");
    }
    let methods: Vec<String> = proxy.requests().into_iter().map(|(m, _)| m).collect();
    assert!(
        methods.iter().all(|m| m == "GET" || m == "HEAD"),
        "serve wrote to the bucket: {methods:?}"
    );
    // Still one listing of the fleet: the refresh interval has not passed.
    assert_eq!(lists(&proxy, "prefix="), 2 + connector_lists);
}

const TOKEN: &str = "3f6c0a9e51d24b7f8a0c6e2d9b1f4a7c";

fn token_file(dir: &Path) -> PathBuf {
    let p = dir.join("token");
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    p
}

/// Issue 17: with a token, every request needs it (header, or the cookie `?token=`
/// sets once); a wrong one is refused; without a token, only loopback names are served.
#[test]
fn serve_with_a_token_refuses_requests_without_it_and_serves_them_with_it() {
    let tb = TestBucket::local();
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path());
    let s = Served::start(tb.cmd(), &["--token-file", file.to_str().unwrap()]);
    let u = |p: &str| format!("{}{p}", s.url);

    let no = get(&u("/"), &[]);
    assert_eq!(no.status, 401);
    assert!(no.body.contains("?token="), "{}", no.body);
    assert!(!no.body.contains(TOKEN));
    assert_eq!(get(&u("/api/status"), &[]).status, 401);
    assert_eq!(get(&u("/api/status"), &[]).json()["ok"], false);
    assert_eq!(get(&u("/assets/app.js"), &[]).status, 401);
    assert_eq!(
        get(
            &u("/"),
            &[("authorization", "Bearer wrong-token-0000000000")]
        )
        .status,
        401
    );
    assert_eq!(get(&u("/?token=wrong-token-0000000000"), &[]).status, 401);

    let bearer = format!("Bearer {TOKEN}");
    let ok = get(&u("/api/status"), &[("authorization", &bearer)]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(!ok.body.contains(TOKEN));

    // ?token= once: a cookie, and the same address without the token.
    let once = get(&u(&format!("/?state=stale&token={TOKEN}")), &[]);
    assert_eq!(once.status, 303);
    assert_eq!(once.header("location"), Some("/?state=stale"));
    let cookie = once.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    // The redirect stays on this server: `//host` would send the browser elsewhere.
    let away = get(&u(&format!("//evil.example/x?token={TOKEN}")), &[]);
    assert_eq!(away.status, 303);
    assert_eq!(away.header("location"), Some("/evil.example/x"));
    let with_cookie = get(&u("/?state=stale"), &[("cookie", pair)]);
    assert_eq!(with_cookie.status, 200);
    assert!(!with_cookie.body.contains(TOKEN));
    drop(s);

    // The config file names the token file too; a non-loopback Host header is fine with it.
    let cfg = dir.path().join("hubvault.toml");
    std::fs::write(&cfg, format!("serve_token_file = \"{}\"\n", file.display())).unwrap();
    let s = Served::start(tb.cmd(), &["--config", cfg.to_str().unwrap()]);
    assert_eq!(get(&format!("{}/", s.url), &[]).status, 401);
    let a = get(
        &format!("{}/", s.url),
        &[("authorization", &bearer), ("host", "hub.example")],
    );
    assert_eq!(a.status, 200);
    drop(s);

    // Without a token: loopback names only (no DNS rebinding), and the page is served.
    let s = Served::start(tb.cmd(), &[]);
    assert_eq!(get(&format!("{}/", s.url), &[]).status, 200);
    assert_eq!(
        get(&format!("{}/", s.url), &[("host", "evil.example")]).status,
        421
    );
    assert_eq!(
        get(&format!("{}/", s.url), &[("host", "localhost:1")]).status,
        200
    );
}

/// Issue 17: anything but loopback without a token refuses to start, exit 2, with a hint.
#[test]
fn serve_refuses_a_non_loopback_listen_without_a_token() {
    let tb = TestBucket::local();
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let out = run(tb.cmd().args(["serve", "--listen", listen]));
        assert_eq!(out.status.code(), Some(2), "{listen}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("not a loopback address") && err.contains("--token-file"),
            "{err}"
        );
    }
    // A token that is too short is no token.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t"), "short\n").unwrap();
    let out = run(tb
        .cmd()
        .args(["serve", "--listen", "0.0.0.0:0", "--token-file"])
        .arg(dir.path().join("t")));
    assert_eq!(out.status.code(), Some(2));
    // A listen address that is not one.
    let out = run(hubvault().args(["serve", "--listen", "somewhere", "--bucket", &tb.url]));
    assert_eq!(out.status.code(), Some(2));
    // The --json error document.
    let doc = json_of(
        &run(tb.cmd().args(["serve", "--json", "--listen", "0.0.0.0:0"])),
        2,
    );
    assert!(doc["hint"].as_str().unwrap().contains("--token-file"));
}

/// Where test artifacts go: target/test-artifacts/ (kept after the run).
fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts")
}

/// Issue 17, in a real browser: the rows and their marks (colour and word), filter as you
/// type, sort by a column, the connector page and its restore command; a screenshot.
#[test]
fn serve_shows_the_fleet_in_a_real_browser() {
    let tb = TestBucket::local();
    let t = three(&tb);
    let before = snapshot(&tb);
    let s = Served::start(tb.cmd(), &["--refresh", "1h"]);
    let b = Browser::start();
    b.goto(&format!("{}/", s.url));
    b.wait_until("the fleet table", |b| {
        !b.all("#fleet-table tbody tr").is_empty()
    });

    // Rows: broken first, then stale, then fresh; each marked by colour and by a word.
    let rows = b.all("#fleet-table tbody tr");
    let states: Vec<String> = rows
        .iter()
        .map(|r| b.attr(r, "data-state").unwrap())
        .collect();
    assert_eq!(states, ["broken", "stale", "fresh"]);
    let marks = b.all("#fleet-table tbody td.state .mark");
    let words: Vec<String> = marks.iter().map(|m| b.text(m)).collect();
    assert_eq!(words, ["BROKEN", "STALE", "fresh"]);
    let colours: Vec<String> = marks.iter().map(|m| b.css(m, "background-color")).collect();
    assert_eq!(colours[0], "rgba(185, 28, 28, 1)", "broken is red");
    assert_eq!(colours[1], "rgba(254, 243, 199, 1)", "stale is amber");
    assert_ne!(colours[2], colours[0]);
    let problem = b.text(&b.one("#fleet-table tbody tr .problem"));
    assert!(
        problem.contains("no object at the canonical key"),
        "{problem}"
    );
    let counts = b.text(&b.one(".counts"));
    assert!(
        counts.contains("1\nSTALE") && counts.contains("1\nBROKEN"),
        "{counts}"
    );
    b.screenshot(&artifacts().join("serve-fleet.png"));
    eprintln!(
        "screenshot: {}",
        artifacts().join("serve-fleet.png").display()
    );

    // Filter as you type: no reload, the address follows.
    let q = b.one("#q");
    b.type_text(&q, "cellario");
    b.wait_until("one row for 'cellario'", |b| {
        b.texts("#fleet-table tbody td.name > a") == ["Cellario Screening Cell 2"]
    });
    assert!(b.url().ends_with("/?q=cellario"), "{}", b.url());
    b.clear(&q);
    b.wait_until("all rows back", |b| {
        b.texts("#fleet-table tbody tr").len() == 3
    });

    // Sort by name, then the other way.
    let names = |b: &Browser| b.texts("#fleet-table tbody td.name > a");
    b.click(&b.one("th[data-key=name] a"));
    b.wait_until("sorted by name", |b| {
        names(b)
            == [
                "Cellario Screening Cell 2",
                "E-WorkBook Bioassay",
                "SDC Upstream",
            ]
    });
    assert_eq!(
        b.attr(&b.one("th[data-key=name]"), "aria-sort").as_deref(),
        Some("ascending")
    );
    b.click(&b.one("th[data-key=name] a"));
    b.wait_until("sorted by name, descending", |b| {
        names(b)
            == [
                "SDC Upstream",
                "E-WorkBook Bioassay",
                "Cellario Screening Cell 2",
            ]
    });

    // The connector page and its copy-ready restore command.
    let link = b
        .all("#fleet-table tbody td.name > a")
        .into_iter()
        .find(|a| b.text(a) == "Cellario Screening Cell 2")
        .unwrap();
    b.click(&link);
    b.wait_until("the connector page", |b| !b.all("#cmd-restore").is_empty());
    assert!(b.text(&b.one("h1")).contains("Cellario Screening Cell 2"));
    let cmd = b.text(&b.one("#cmd-restore"));
    assert_eq!(
        cmd,
        format!(
            "hubvault restore --bucket {} --org acme --datahub {} --connector {} --hub-root /var/datahub",
            tb.url, t.hub, t.fresh.connector
        )
    );
    assert!(
        b.displayed(&b.one("button.copy[data-copy=cmd-restore]")),
        "the copy button shows with JavaScript"
    );
    assert_eq!(b.all("svg.chart").len(), 1);
    b.screenshot(&artifacts().join("serve-connector.png"));

    // The hub page: a broken connector has only versions; the common instant is theirs.
    b.goto(&format!("{}/hubs/{}", s.url, t.hub));
    b.wait_until("the hub page", |b| !b.all("#cmd-hub").is_empty());
    assert!(b.text(&b.one("#cmd-hub")).contains(&format!(
        "--datahub {} --hub-root /var/datahub --at ",
        t.hub
    )));

    // With a token: refused without it; `?token=` once, then the cookie carries it.
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path());
    let locked = Served::start(tb.cmd(), &["--token-file", file.to_str().unwrap()]);
    b.goto(&format!("{}/", locked.url));
    b.wait_until("the refusal", |b| b.texts("h1") == ["Access token needed"]);
    assert!(b.all("#fleet-table").is_empty());
    b.goto(&format!("{}/?state=stale&token={TOKEN}", locked.url));
    b.wait_until("the fleet, after the token", |b| {
        b.texts("#fleet-table tbody td.name > a") == ["SDC Upstream"]
    });
    assert_eq!(
        b.url(),
        format!("{}/?state=stale", locked.url),
        "the token left the address"
    );
    b.goto(&format!("{}/connectors/{}", locked.url, t.fresh.connector));
    b.wait_until("a second page, by the cookie", |b| {
        !b.all("#cmd-restore").is_empty()
    });

    drop(b);
    assert_eq!(snapshot(&tb), before, "browsing wrote to the bucket");
}

/// A bucket that stops answering: the page keeps the last good read and says why, and is
/// not asked again by every page load; a server that never read it answers 502 with a hint.
#[test]
fn serve_shows_the_last_good_read_and_why_when_the_bucket_fails_on_s3() {
    use crate::proxy::Fault;
    let tb = TestBucket::s3();
    crate::status::seed(&tb.bucket(), "acme", 3, 0);
    let proxy = Proxy::s3();
    let mut cmd = proxy.cmd(&tb);
    cmd.env("HUBVAULT_S3_RETRIES", "0");
    let s = Served::start(cmd, &["--refresh", "0s"]);
    let ok = get(&format!("{}/api/status", s.url), &[]).json();
    assert_eq!(ok["summary"]["total"], 3);
    assert!(ok["failure"].is_null());

    proxy.inject("GET", "list-type=2", Fault::Status500, 1000);
    let page = get(&format!("{}/", s.url), &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("The bucket could not be read"),
        "{}",
        page.body
    );
    assert_eq!(rows_in(&page.body), 3, "the last good read is still shown");
    let doc = get(&format!("{}/api/status", s.url), &[]).json();
    assert_eq!(doc["summary"]["total"], 3);
    assert!(
        doc["failure"]["error"].as_str().unwrap().contains("list"),
        "{doc}"
    );
    drop(s);

    // Never read: 502, the error and what to try.
    let mut cmd = proxy.cmd(&tb);
    cmd.env("HUBVAULT_S3_RETRIES", "0");
    let s = Served::start(cmd, &["--refresh", "1h"]);
    let page = get(&format!("{}/", s.url), &[]);
    assert_eq!(page.status, 502);
    assert!(page.body.contains("Try:"), "{}", page.body);
    let api = get(&format!("{}/api/status", s.url), &[]);
    assert_eq!(api.status, 502);
    assert_eq!(api.json()["ok"], false);
    assert!(api.json()["hint"].is_string());
}

/// The largest the serve process may grow while it shows a connector whose small
/// objects (its drill record, `latest.json`, a version manifest) are 512 MiB each.
const HOSTILE_PAGE_MEMORY: u64 = 192 << 20;

/// The peak resident memory of a process (`VmHWM`), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Review of serve: anyone who can write under a connector's prefix decides how big its
/// drill record, `latest.json` and version manifests are. The connector page reads them
/// whole; a 512 MiB one must not be read into memory (the server would run out of it on
/// a few page loads), and the page still answers, with those facts unknown.
#[test]
fn serve_shows_a_connector_whose_small_objects_are_huge_without_reading_them_whole() {
    use hubvault::model::layout::{VersionId, stamp};
    use hubvault::store::WriteMode;
    let tb = TestBucket::local();
    let ck = ConnectorKey::new(
        OrgSlug::parse("acme").unwrap(),
        DatahubId::random(),
        hubvault::model::ids::ConnectorId::random(),
    );
    let now = chrono::Utc::now() - chrono::Duration::minutes(1);
    let v = VersionId::new(now, &"ab".repeat(32));
    let huge = [
        ck.latest_manifest(),
        ck.version_manifest(&v),
        ck.drill(&stamp(now), true),
    ];
    let bucket = tb.bucket();
    for key in huge.iter().chain([
        &ck.label("sdc", "Huge records"),
        &ck.canonical(&Default::default()),
        &ck.version_data(&v),
    ]) {
        rt().block_on(bucket.put_bytes(key, bytes::Bytes::from_static(b"{}"), WriteMode::Create))
            .unwrap();
    }
    for key in &huge {
        let path = tb.dir.as_ref().unwrap().path().join(key.as_ref());
        // Sparse: 512 MiB to read, nothing on the disk.
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
    }
    let s = Served::start(tb.cmd(), &["--refresh", "1h"]);
    let api = get(&format!("{}/api/connectors/{}", s.url, ck.connector), &[]);
    assert_eq!(api.status, 200, "{}", api.body);
    let doc = api.json();
    assert_eq!(doc["versions"].as_array().unwrap().len(), 1, "{doc:#}");
    assert!(doc["versions"][0]["size"].is_null(), "{doc:#}");
    assert!(doc["last_drill_record"].is_null(), "{doc:#}");
    assert_eq!(doc["drills"][0]["ok"], true);
    let page = get(&format!("{}/connectors/{}", s.url, ck.connector), &[]);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Huge records"));
    let peak = peak_memory(s.child.id());
    assert!(
        peak < HOSTILE_PAGE_MEMORY,
        "serve grew to {} MiB showing one connector",
        peak >> 20
    );
}

/// Review of serve, in a real browser: names, types and drill problems are the bucket's,
/// so anyone who can write under a connector's prefix chooses them. Markup in them is
/// shown as text on every page (the fleet, after filter as you type swaps the table in,
/// the hub, the connector) and never becomes an element, a handler or a style; an
/// `alert` would leave the browser with an open dialog and fail the next call.
#[test]
fn serve_shows_hostile_names_types_and_drill_problems_as_text_in_a_real_browser() {
    use hubvault::model::drill::DrillRecord;
    use hubvault::model::layout::stamp;
    use hubvault::store::WriteMode;
    let tb = TestBucket::local();
    let hub = DatahubId::random();
    let hostile = [
        ("sdc", "</script><script>alert(1)</script>"),
        ("'><svg onload=alert(3)>", "\"><img src=x onerror=alert(2)>"),
        (
            "<style>body{display:none}</style>",
            "javascript:alert(4)//<a href=javascript:alert(5)>x</a>",
        ),
    ];
    let bucket = tb.bucket();
    let put = |key: &object_store::path::Path, body: Vec<u8>| {
        rt().block_on(bucket.put_bytes(key, bytes::Bytes::from(body), WriteMode::Create))
            .unwrap();
    };
    let mut cks = Vec::new();
    for (ty, name) in hostile {
        let ck = ConnectorKey::new(
            OrgSlug::parse("acme").unwrap(),
            hub,
            hubvault::model::ids::ConnectorId::random(),
        );
        put(&ck.label(ty, name), Vec::new());
        put(
            &ck.canonical(&Default::default()),
            b"not a database".to_vec(),
        );
        cks.push(ck);
    }
    // A failed drill whose record's problems and warnings are markup.
    let at = chrono::Utc::now() - chrono::Duration::minutes(5);
    let record = DrillRecord {
        format: 1,
        time: at,
        ok: false,
        key: "k".into(),
        sha256: None,
        size: None,
        version: None,
        matched: None,
        check: None,
        problems: vec!["<iframe src=javascript:alert(6)></iframe>".into()],
        warnings: vec!["<b id=pwned>bold</b>".into()],
        tool: "<script>alert(7)</script>".into(),
        host: "h".into(),
        stream: None,
    };
    put(&cks[1].drill(&stamp(at), false), record.to_json());

    let s = Served::start(tb.cmd(), &["--refresh", "1h"]);
    let b = Browser::start();
    // Elements only a hostile text could have made (the chart is the page's own SVG).
    let injected = |b: &Browser| -> Vec<String> {
        b.script(
            "return Array.from(document.querySelectorAll('img, iframe, svg:not(.chart), style, b, \
             script:not([src]), a[href^=\"javascript\"], [onload], [onerror]')).map(e => e.outerHTML);",
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
    };
    let names = |b: &Browser| b.texts("#fleet-table tbody td.name > a");
    b.goto(&format!("{}/", s.url));
    b.wait_until("three rows", |b| names(b).len() == 3);
    let mut shown = names(&b);
    shown.sort();
    let mut want: Vec<String> = hostile.iter().map(|(_, n)| n.to_string()).collect();
    want.sort();
    assert_eq!(shown, want, "names are shown as their text");
    assert_eq!(injected(&b), Vec::<String>::new());
    let types = b.texts("select[name=type] option");
    for (ty, _) in hostile {
        assert!(types.iter().any(|t| t == ty), "{ty:?} in {types:?}");
    }
    assert!(
        b.displayed(&b.one("#fleet-table")),
        "no injected style hid the page"
    );

    // Filter as you type: app.js swaps the server's table in.
    b.type_text(&b.one("#q"), "alert(");
    b.wait_until("the filtered table", |b| {
        b.url().contains("q=alert") && names(b).len() == 3
    });
    assert_eq!(injected(&b), Vec::<String>::new());

    b.goto(&format!("{}/hubs/{hub}", s.url));
    b.wait_until("the hub's table", |b| names(b).len() == 3);
    assert_eq!(injected(&b), Vec::<String>::new());

    for (ck, (ty, name)) in cks.iter().zip(hostile) {
        b.goto(&format!("{}/connectors/{}", s.url, ck.connector));
        b.wait_until("the connector page", |b| !b.texts("h1").is_empty());
        let h1 = b.texts("h1")[0].clone();
        assert!(h1.starts_with(name) && h1.contains(ty), "{h1:?}");
        assert_eq!(injected(&b), Vec::<String>::new(), "{name}");
        assert_eq!(
            b.script("return document.title"),
            format!("{name} · hubvault")
        );
    }
    let problems = b.texts("p.problem, p.note");
    assert!(
        problems.is_empty(),
        "the last page is the third connector's: {problems:?}"
    );
    b.goto(&format!("{}/connectors/{}", s.url, cks[1].connector));
    b.wait_until("the drill's problems", |b| !b.texts("p.problem").is_empty());
    let p = b.texts("p.problem, p.note");
    assert!(
        p.iter()
            .any(|t| t.contains("<iframe src=javascript:alert(6)></iframe>"))
            && p.iter().any(|t| t.contains("<b id=pwned>bold</b>")),
        "{p:?}"
    );
    assert_eq!(injected(&b), Vec::<String>::new());
}

/// Review of serve: a connection that never finishes a request (a client that sends
/// part of its headers, or nothing, or went away behind a NAT after a page load) held a
/// task and a file descriptor for ever; enough of them (a slow client's loop, or weeks of
/// laptops closing) exhaust the descriptors and the page stops answering. Each must be
/// closed once the header timeout (20 s) has passed, with 15 s to spare for a busy
/// machine.
#[test]
fn serve_closes_connections_that_do_not_send_a_request_in_time() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;
    let tb = TestBucket::local();
    let s = Served::start(tb.cmd(), &[]);
    let addr = s.url.trim_start_matches("http://").to_string();
    let open = || {
        let c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        c
    };
    let started = Instant::now();
    let mut partial = open();
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let silent = open();
    let mut kept = open();
    kept.write_all(b"GET /assets/style.css HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = vec![0u8; 64 << 10];
    let n = kept.read(&mut answer).unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    for (what, mut c) in [
        ("partial headers", partial),
        ("nothing sent", silent),
        ("idle after an answer", kept),
    ] {
        let mut rest = Vec::new();
        // Ends (EOF or reset) when the server closes; a read timeout means it did not.
        let closed = match c.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => {
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
            }
        };
        assert!(closed, "{what}: still open after {:?}", started.elapsed());
    }
    assert!(
        started.elapsed() < Duration::from_secs(35),
        "closed only after {:?}",
        started.elapsed()
    );
    // The server still answers.
    assert_eq!(get(&format!("{}/assets/app.js", s.url), &[]).status, 200);
}

//! The id rewrite of a restore's private copy, as `install::prepare` runs it, by one path:
//! `rewrite_paths FILE sql|pages` rewrites FILE in place onto fixed new ids (the SQL
//! rewrite, or the page rewrite with no fallback), then runs the checks of the result.
//! Prints the seconds of each step. For bench/pagerewrite.sh; FILE is a copy.

use std::path::Path;
use std::time::Instant;

use hubvault::model::ids::{ConnectorId, DatahubId, Ids};
use hubvault::sqlite::{db, rewrite};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 || !matches!(args[2].as_str(), "sql" | "pages") {
        eprintln!("usage: rewrite_paths FILE sql|pages");
        std::process::exit(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let path = Path::new(&args[1]);
    let to = Ids {
        datahub: DatahubId::parse("11111111-2222-4333-8444-555555555555").unwrap(),
        connector: ConnectorId::parse("66666666-7777-4888-8999-aaaaaaaaaaaa").unwrap(),
    };
    let t0 = Instant::now();
    let mut conn = db::open_scratch(path).expect("opens");
    let info = db::read_info(&conn, path).expect("a connector database");
    let from = Ids {
        datahub: info.datahub,
        connector: info.connector,
    };
    let unchecked = if args[2] == "sql" {
        rewrite::apply_unchecked(&mut conn, path, from, to, false).expect("rewritten")
    } else {
        match rewrite::apply_unchecked_pages(&mut conn, path, from, to, false).expect("rewritten") {
            rewrite::PageOutcome::Done(u) => *u,
            rewrite::PageOutcome::Refused(why) => {
                eprintln!("the page rewrite refused: {why}");
                std::process::exit(1);
            }
        }
    };
    conn.close().expect("closes");
    let rewritten = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let plan = unchecked.check(path).expect("the result passes its checks");
    println!(
        "{}: rewrite {rewritten:.2} s, checks {:.2} s, {} values changed",
        args[2],
        t1.elapsed().as_secs_f64(),
        plan.total_values()
    );
}

//! How the binary talks: logs on stderr, results on stdout (text or one JSON document),
//! errors as `error: …` then `Try: …`, a progress bar only on a terminal.

use std::io::IsTerminal;
use std::process::ExitCode;

use hubvault::Error;
use hubvault::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Global, LogFormat};

pub fn init_logging(g: &Global) {
    let default = match g.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},hubvault={default}"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match g.log_format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn report_error(e: &Error, json: bool) -> ExitCode {
    let code = e.exit_code();
    let chain = error_chain(e);
    if json {
        let doc =
            serde_json::json!({"ok": false, "error": chain, "hint": e.hint(), "exit_code": code});
        println!("{doc}");
    }
    eprintln!("error: {chain}");
    if let Some(hint) = e.hint() {
        eprintln!("Try: {hint}");
    }
    ExitCode::from(code as u8)
}

/// The error and its sources, once each, joined by ": ".
fn error_chain(e: &Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

pub fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("reports always serialize")
    );
}

/// A bar on stderr for transfers over 8 MiB, when stderr is a terminal.
pub struct Bar {
    enabled: bool,
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl Bar {
    pub fn new(json: bool) -> Self {
        Bar {
            enabled: !json && std::io::stderr().is_terminal(),
            bar: std::sync::Mutex::new(None),
        }
    }
}

impl Progress for Bar {
    fn begin(&self, what: &str, total: u64) {
        if !self.enabled || total < 8 * 1024 * 1024 {
            return;
        }
        let pb = ProgressBar::new(total)
            .with_message(what.rsplit('/').next().unwrap_or(what).to_string());
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        *self.bar.lock().unwrap() = Some(pb);
    }
    fn advance(&self, bytes: u64) {
        if let Some(pb) = self.bar.lock().unwrap().as_ref() {
            pb.inc(bytes);
        }
    }
    fn end(&self) {
        if let Some(pb) = self.bar.lock().unwrap().take() {
            pb.finish_and_clear();
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

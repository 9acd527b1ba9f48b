//! How the binary talks: logs on stderr, results on stdout (text or one JSON document),
//! errors as `error: …` then `Try: …`, a progress bar only on a terminal.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use hubvault::Error;
use hubvault::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Global, LogFormat};

/// True if and only if colours may be written to stderr: a terminal, and no `NO_COLOR`.
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Log lines go to stderr with the userinfo of any URL removed (a store's error may
/// name the endpoint as configured, password included). Each event is formatted into
/// one buffer and written when the writer is dropped, so a URL is never split.
struct RedactingStderr(Vec<u8>);

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingStderr {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr()
            .lock()
            .write_all(hubvault::error::redact_userinfo(&text).as_bytes());
    }
}

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
        .with_ansi(colour_on_stderr())
        .with_writer(|| RedactingStderr(Vec::new()));
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
        outln!("{doc}");
    }
    errln!("error: {chain}");
    if let Some(hint) = e.hint() {
        errln!("Try: {hint}");
    }
    ExitCode::from(code as u8)
}

/// A `--then` hook that failed after the restore was installed: with `--json`, one
/// document with the restore's report, the hook's result and the error, and exit 1;
/// otherwise the error, reported as any other.
pub fn hook_failed<R: serde::Serialize, H: serde::Serialize>(
    json: bool,
    report: &R,
    hook: &H,
    e: Error,
) -> hubvault::Result<ExitCode> {
    if !json {
        return Err(e);
    }
    print_json(&serde_json::json!({
        "ok": false, "restore": report, "hook": hook,
        "error": hubvault::error::redact_userinfo(&e.to_string()),
        "hint": e.hint(), "exit_code": 1,
    }));
    errln!("error: {e}");
    if let Some(h) = e.hint() {
        errln!("Try: {h}");
    }
    Ok(ExitCode::from(1))
}

/// A `--then` hook that could not even be started (no shell, a bad `PATH`): the restore
/// is installed all the same, and the error says what is (`installed`), with
/// [`hook_failed`]'s report and no hook result.
pub fn hook_not_started<R: serde::Serialize>(
    json: bool,
    report: &R,
    e: Error,
    installed: &str,
) -> hubvault::Result<ExitCode> {
    let e = e.with_note(&format!("the --then command did not run; {installed}"));
    hook_failed(json, report, &None::<()>, e)
}

/// A command line clap refused (unknown flag, missing or malformed value): exit 2, and
/// under `--json` one JSON document on stdout like every other error. `--help` and
/// `--version` print as usual.
pub fn report_usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) && !json_asked()
    {
        let _ = e.print();
        return ExitCode::from(e.exit_code() as u8);
    }
    let code = if e.use_stderr() { 2 } else { e.exit_code() };
    let text = hubvault::error::redact_userinfo(e.render().to_string().trim_end());
    let message = text.strip_prefix("error: ").unwrap_or(&text);
    let (first, rest) = message.split_once('\n').unwrap_or((message, ""));
    if json_asked() {
        let doc = serde_json::json!({
            "ok": false,
            "error": first,
            "hint": "run the command with --help for its flags",
            "usage": rest.trim(),
            "exit_code": code,
        });
        outln!("{doc}");
    }
    if e.use_stderr() {
        errln!("error: {message}");
    } else {
        outln!("{message}");
    }
    ExitCode::from(code as u8)
}

/// True if and only if `--json` is among the arguments (before a `--`): a command line
/// that clap refused is still answered in JSON when JSON was asked for.
fn json_asked() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// The error and its sources, once each, joined by ": ", without any URL's userinfo.
fn error_chain(e: &Error) -> String {
    hubvault::error::redact_userinfo(&error_chain_raw(e))
}

fn error_chain_raw(e: &Error) -> String {
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
    outln!(
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

/// A bar per item (the connectors of a hub) on stderr, when stderr is a terminal: its
/// name, the step it is at, and the bytes of its download.
pub struct Bars {
    multi: Option<indicatif::MultiProgress>,
}

impl Bars {
    pub fn new(json: bool) -> Self {
        Bars {
            multi: (!json && std::io::stderr().is_terminal()).then(indicatif::MultiProgress::new),
        }
    }

    /// Removes the bars (before the summary is printed).
    pub fn clear(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

struct ItemBar(Option<ProgressBar>);

impl hubvault::progress::ProgressSet for Bars {
    fn item(&self, label: &str) -> Box<dyn Progress> {
        let Some(m) = &self.multi else {
            return Box::new(ItemBar(None));
        };
        let pb = m.add(ProgressBar::new(0));
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:30!} {msg:12} [{bar:25}] {bytes:>10}/{total_bytes:10} {bytes_per_sec}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_prefix(label.to_string());
        Box::new(ItemBar(Some(pb)))
    }
}

impl Progress for ItemBar {
    fn begin(&self, _what: &str, total: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(total);
            pb.set_position(0);
        }
    }
    fn advance(&self, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(bytes);
        }
    }
    fn end(&self) {}
    fn stage(&self, what: &str) {
        if let Some(pb) = &self.0 {
            pb.set_message(what.to_string());
            if what == "installed" || what == "FAILED" {
                pb.abandon();
            }
        }
    }
}

//! Running an operator's shell command (restore's `--then` hook): bounded in time, with
//! an environment that holds no secret of the bucket's credentials, its output passed on
//! and its tail kept for the report.
//!
//! - The command runs with `sh -c` in a process group of its own, stdin from /dev/null.
//! - Past the timeout the group gets SIGTERM, then SIGKILL [`KILL_GRACE`] later.
//! - `AWS_SECRET_ACCESS_KEY` and the session tokens are removed from its environment;
//!   URLs that may carry a password (`HUBVAULT_BUCKET`, `AWS_ENDPOINT_URL`) are passed
//!   without it. The command needs the restored database, not the backup's credentials.
//! - Its stdout and stderr go through pipes that hubvault reads: each chunk is written on
//!   (to our stdout or stderr, where a write error such as a closed pipe only stops the
//!   copying) and the last [`TAIL_BYTES`] are kept. A command that writes to a closed
//!   pipe of ours therefore never dies of SIGPIPE.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, redact_userinfo};

/// Variables never passed to the command.
pub const SECRET_VARS: [&str; 4] = [
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

/// Variables passed on without the password part of a URL.
pub const URL_VARS: [&str; 3] = ["HUBVAULT_BUCKET", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"];

/// Between SIGTERM and SIGKILL when the command outlives its timeout.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How much of the command's output (stdout and stderr together) is kept for a report.
pub const TAIL_BYTES: usize = 4096;

/// Once the command exited, how long its output pipes may stay open (held by a process
/// it left in the background) before we stop waiting for them.
const DRAIN: Duration = Duration::from_secs(2);

/// How the command finished.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Finished {
    /// Its exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// True if and only if it outlived the timeout and was stopped.
    pub timed_out: bool,
    /// The last lines of its output (stdout and stderr, as they came).
    pub output_tail: Vec<String>,
    pub seconds: f64,
}

impl Finished {
    /// True if and only if it exited with code 0 in time.
    pub fn success(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }

    /// "exit code 3", "killed by signal 9", "stopped after the 10m timeout".
    pub fn describe(&self, timeout: Duration) -> String {
        if self.timed_out {
            format!(
                "did not finish within {} and was stopped",
                humantime::format_duration(timeout)
            )
        } else {
            match (self.exit_code, self.signal) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                (None, None) => "ended without an exit code".into(),
            }
        }
    }
}

/// What an operator's hook (`--then`) did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HookReport {
    pub command: String,
    /// True if and only if it exited with code 0 within the timeout.
    pub ok: bool,
    pub timeout_seconds: f64,
    #[serde(flatten)]
    pub finished: Finished,
}

impl HookReport {
    /// "exit code 3 after 0.2s", for the error of a hook that failed.
    pub fn how_it_ended(&self) -> String {
        format!(
            "{} after {:.1}s",
            self.finished
                .describe(Duration::from_secs_f64(self.timeout_seconds)),
            self.finished.seconds
        )
    }

    /// The hook's last output, indented, or a note that it printed nothing.
    pub fn output_shown(&self) -> String {
        if self.finished.output_tail.is_empty() {
            " (it printed nothing)".to_string()
        } else {
            format!(
                "; its last output:\n  {}",
                self.finished.output_tail.join("\n  ")
            )
        }
    }
}

/// Runs an operator's hook once (see [`run`]); its stdout goes to our stderr when
/// `stdout_to_stderr` (our stdout carries one JSON document). `Err` only when it could
/// not be started. Blocking.
pub fn hook(
    command: &str,
    env: &[(&str, String)],
    timeout: Duration,
    stdout_to_stderr: bool,
) -> Result<HookReport> {
    let to = if stdout_to_stderr {
        Stdout::Stderr
    } else {
        Stdout::Stdout
    };
    let finished = run(command, env, timeout, to)?;
    Ok(HookReport {
        ok: finished.success(),
        command: command.to_string(),
        timeout_seconds: timeout.as_secs_f64(),
        finished,
    })
}

/// Where the command's stdout goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdout {
    /// Our stdout.
    Stdout,
    /// Our stderr (our stdout carries one JSON document).
    Stderr,
}

/// Runs `command` with `sh -c` (see the module's rules), with `env` added.
pub fn run(
    command: &str,
    env: &[(&str, String)],
    timeout: Duration,
    stdout: Stdout,
) -> Result<Finished> {
    let started = Instant::now();
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for v in SECRET_VARS {
        c.env_remove(v);
    }
    for v in URL_VARS {
        if let Some(val) = std::env::var_os(v) {
            c.env(v, redact_userinfo(&val.to_string_lossy()));
        }
    }
    c.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = c
        .spawn()
        .map_err(|e| Error::io("sh", "cannot run the command", e))?;
    let tail = Arc::new(Mutex::new(Vec::<u8>::new()));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let mut readers = 0;
    if let Some(out) = child.stdout.take() {
        readers += 1;
        spawn_copy(out, stdout, tail.clone(), done_tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        readers += 1;
        spawn_copy(err, Stdout::Stderr, tail.clone(), done_tx.clone());
    }
    drop(done_tx);

    let pgid = child.id() as i32;
    let deadline = started + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(Error::io("sh", "cannot wait for the command", e)),
        }
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break stop_group(&mut child, pgid)?;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    };
    // The pipes close when every process holding them is gone; a process the command
    // left in the background may hold them much longer. Wait a little, not forever.
    let drain_until = Instant::now() + DRAIN;
    for _ in 0..readers {
        let left = drain_until.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let tail = tail.lock().map(|t| t.clone()).unwrap_or_default();
    Ok(Finished {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        output_tail: last_lines(&tail, 20),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// SIGTERM to the command's process group, SIGKILL after [`KILL_GRACE`], and the status.
fn stop_group(child: &mut std::process::Child, pgid: i32) -> Result<std::process::ExitStatus> {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let until = Instant::now() + KILL_GRACE;
    while Instant::now() < until {
        if let Ok(Some(s)) = child.try_wait() {
            // SAFETY: as above; what the command left in its group goes too.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    child
        .wait()
        .map_err(|e| Error::io("sh", "cannot wait for the command", e))
}

/// Copies `from` to our `to` until it ends, keeping the last [`TAIL_BYTES`] in `tail`.
/// A failed write (a closed pipe) stops the copying, never the reading: the command must
/// not block on a full pipe or die of SIGPIPE because our reader went away.
fn spawn_copy(
    mut from: impl Read + Send + 'static,
    to: Stdout,
    tail: Arc<Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut writing = true;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if writing {
                let r = match to {
                    Stdout::Stdout => {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&buf[..n]).and_then(|_| o.flush())
                    }
                    Stdout::Stderr => std::io::stderr().lock().write_all(&buf[..n]),
                };
                writing = r.is_ok();
            }
            if let Ok(mut t) = tail.lock() {
                t.extend_from_slice(&buf[..n]);
                if t.len() > TAIL_BYTES {
                    let cut = t.len() - TAIL_BYTES;
                    t.drain(..cut);
                }
            }
        }
        let _ = done.send(());
    });
}

/// The last `n` non-empty lines of `bytes`, as text.
fn last_lines(bytes: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_timeout_is_stopped_with_its_group() {
        let f = run(
            "echo started; sleep 30 & sleep 30",
            &[],
            Duration::from_millis(300),
            Stdout::Stderr,
        )
        .unwrap();
        assert!(f.timed_out && !f.success(), "{f:?}");
        assert_eq!(f.output_tail, vec!["started".to_string()]);
        assert!(f.seconds < 10.0, "{f:?}");
    }

    #[test]
    fn exit_code_and_the_tail_of_the_output_are_reported() {
        // Only stdout here: lines of two pipes may be read in either order.
        let f = run(
            "for i in $(seq 1 50); do echo line $i; done; exit 7",
            &[("X", "1".into())],
            Duration::from_secs(30),
            Stdout::Stderr,
        )
        .unwrap();
        assert_eq!(f.exit_code, Some(7));
        assert_eq!(f.output_tail.len(), 20);
        assert_eq!(f.output_tail.first().unwrap(), "line 31");
        assert_eq!(f.output_tail.last().unwrap(), "line 50");
        let f = run(
            "echo oops >&2; exit 0",
            &[],
            Duration::from_secs(30),
            Stdout::Stderr,
        )
        .unwrap();
        assert!(f.success());
        assert_eq!(f.output_tail, vec!["oops".to_string()]);
    }
}

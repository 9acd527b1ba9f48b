//! `hubvault remap`: steps 5 to 10 of the platform's manual restore on a local file, in
//! one checked transaction (the rewrite itself is [`crate::sqlite::rewrite`]).

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::ids::Ids;
use crate::sqlite::db;
use crate::sqlite::fsio;
use crate::sqlite::rewrite::{self, RewritePlan};
use crate::sqlite::snapshot;

/// What `hubvault remap` did (or, with `dry_run`, would do) to a database file.
#[derive(Clone, Debug, Serialize)]
pub struct RemapReport {
    pub db: std::path::PathBuf,
    /// The file written, when not rewritten in place.
    pub output: Option<std::path::PathBuf>,
    pub dry_run: bool,
    #[serde(flatten)]
    pub plan: RewritePlan,
    pub total_values: u64,
    /// True if and only if no old id is left (for a dry run: would be left).
    pub no_old_id_left: bool,
    pub seconds: f64,
}

/// Steps 5 to 10 of the platform's manual restore on a local file: reads the old ids from `db`, rewrites them to
/// `to` in place (one transaction), or into a new file `output` (a copy made with the
/// shared page reader into a temp file beside it, as a backup reads it, renamed into place once checked: the
/// source is not changed and `output` never holds a half-written database). With
/// `dry_run`, only plans. Old ids the rewrite cannot rewrite make it refuse (nothing
/// written) unless `accept_unrewritten`; the report lists them either way.
pub fn remap_file(
    db_path: &Path,
    to: Ids,
    output: Option<&Path>,
    dry_run: bool,
    accept_unrewritten: bool,
) -> Result<RemapReport> {
    let started = std::time::Instant::now();
    db::check_is_sqlite(db_path)?;
    if let Some(out) = output {
        if out.exists() {
            return Err(Error::usage(
                format!("--output {} already exists", out.display()),
                "choose a new file name, or leave out --output to rewrite --db in place",
            ));
        }
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(Error::usage(
                format!(
                    "--output {}: directory {} does not exist",
                    out.display(),
                    parent.display()
                ),
                "create the directory first or choose another --output",
            ));
        }
    }
    let from = {
        let conn = db::open_read_only(db_path)?;
        let info = db::read_info(&conn, db_path)?;
        Ids {
            datahub: info.datahub,
            connector: info.connector,
        }
    };
    rewrite::check_ids(from, to)?;
    let report = |plan: RewritePlan, output: Option<std::path::PathBuf>| RemapReport {
        db: db_path.to_path_buf(),
        output,
        dry_run,
        total_values: plan.total_values(),
        no_old_id_left: plan.no_old_id_left(),
        plan,
        seconds: started.elapsed().as_secs_f64(),
    };
    if dry_run {
        let conn = db::open_read_only(db_path)?;
        return Ok(report(
            rewrite::plan(&conn, db_path, from, to)?,
            output.map(Path::to_path_buf),
        ));
    }
    let Some(out) = output else {
        let mut conn = db::open_read_write(db_path)?;
        let done = rewrite::apply_switched(&mut conn, db_path, from, to, accept_unrewritten)?;
        conn.close()
            .map_err(|(_, e)| Error::sqlite(db_path, "cannot close", e))?;
        return Ok(report(done, None));
    };
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.hubvault-remap-"))
        .tempfile_in(parent)
        .map_err(|e| Error::io(parent, "cannot create a temp file for --output", e))?
        .into_temp_path();
    // The copy is read as a backup reads it (the shared page reader: one pass, a
    // consistent state even of a database in use); a rollback-journal source is first
    // copied beside the output, between two SHARED locks.
    let journal_mode = {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp)
            .map_err(|e| Error::io(&*tmp, "cannot open the temp file for --output", e))?;
        snapshot::copy_into(db_path, parent, &mut out, &tmp)?.0
    };
    // A temp file nobody else sees: no rollback journal needed, and the rewrite commits
    // before its checks, which then run on two cores (on failure the file is removed).
    let mut conn = db::open_scratch(&tmp)?;
    let unchecked =
        rewrite::apply_unchecked_switched(&mut conn, &tmp, from, to, accept_unrewritten)?;
    conn.pragma_update(
        None,
        "journal_mode",
        if journal_mode == "wal" {
            "WAL"
        } else {
            "DELETE"
        },
    )
    .map_err(|e| Error::sqlite(&*tmp, "cannot set the journal mode", e))?;
    conn.close()
        .map_err(|(_, e)| Error::sqlite(&*tmp, "cannot close", e))?;
    let done = unchecked.check(&tmp);
    // The checks' read-only connections leave an empty -wal and -shm beside a WAL file:
    // gone whatever the verdict (the temp file itself goes when `tmp` is dropped).
    fsio::remove_side_files(&tmp);
    let done = done?;
    if let Ok(m) = std::fs::metadata(db_path) {
        let _ = std::fs::set_permissions(&tmp, m.permissions());
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&*tmp, "cannot fsync", e))?;
    // persist_noclobber: a file that appeared at --output meanwhile is never replaced.
    tmp.persist_noclobber(out)
        .map_err(|e| Error::io(out, "cannot move the rewritten copy into place", e.error))?;
    let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
    Ok(report(done, Some(out.to_path_buf())))
}

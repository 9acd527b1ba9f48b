//! Fails the build early, with the fix, when the bundled SQLite would be compiled without
//! `SQLITE_ENABLE_SNAPSHOT`. A backup's checks run on two connections pinned to one WAL
//! snapshot (`sqlite3_snapshot_open`, src/sqlite/twin.rs); without the option the final
//! link fails on an undefined symbol, far from the cause. `.cargo/config.toml` sets the
//! option for any cargo command run inside the project; a command run from elsewhere
//! (`cargo install --path /src/hubvault` from another directory) or an environment that
//! sets `LIBSQLITE3_FLAGS` itself does not get it.

fn main() {
    let target = std::env::var("TARGET")
        .unwrap_or_default()
        .to_uppercase()
        .replace('-', "_");
    let prefixed = format!("{target}_LIBSQLITE3_FLAGS");
    println!("cargo:rerun-if-env-changed=LIBSQLITE3_FLAGS");
    println!("cargo:rerun-if-env-changed={prefixed}");
    // libsqlite3-sys reads the target-prefixed variable first, as here.
    let flags = std::env::var(&prefixed)
        .or_else(|_| std::env::var("LIBSQLITE3_FLAGS"))
        .unwrap_or_default();
    let has = flags.split_whitespace().any(|f| {
        f == "-DSQLITE_ENABLE_SNAPSHOT"
            || f == "SQLITE_ENABLE_SNAPSHOT"
            || f.starts_with("-DSQLITE_ENABLE_SNAPSHOT=")
    });
    if !has {
        eprintln!(
            "hubvault needs the bundled SQLite built with SQLITE_ENABLE_SNAPSHOT, and LIBSQLITE3_FLAGS is {flags:?}.\n\
             Run cargo from the project directory (its .cargo/config.toml sets it), or set\n\
             LIBSQLITE3_FLAGS=\"-DSQLITE_ENABLE_SNAPSHOT -DSQLITE_ENABLE_DBPAGE_VTAB\" (plus any flags of your own) in\n\
             the environment (SQLITE_ENABLE_DBPAGE_VTAB: without it `remap` in place takes the slower SQL rewrite)."
        );
        std::process::exit(1);
    }
}

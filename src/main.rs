//! The `hubvault` binary: flags -> library -> exit code. All behaviour is in the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

//! `hubvault generate-assets --out DIR` (hidden): man pages from the clap definitions
//! (clap_mangen) and shell completions (clap_complete), for the package. Run by
//! scripts/package-deb, never by `cargo build`: the pages always match the binary that
//! is packaged, and an ordinary build pays nothing for them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use hubvault::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Writes DIR/man/*.1 and DIR/completions/{hubvault.bash,_hubvault,hubvault.fish}.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let man = a.out.join("man");
    let comp = a.out.join("completions");
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, "cannot create", e))?;
    }
    let cmd = super::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)
        .map_err(|e| Error::io(&man, "cannot write the man pages", e))?;
    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "hubvault.bash"),
        (Shell::Zsh, "_hubvault"),
        (Shell::Fish, "hubvault.fish"),
    ] {
        let path = comp.join(file);
        let mut f =
            std::fs::File::create(&path).map_err(|e| Error::io(&path, "cannot create", e))?;
        clap_complete::generate(shell, &mut cmd.clone(), "hubvault", &mut f);
    }
    outln!("{}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

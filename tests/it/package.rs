//! The Debian package (issue 16): built by scripts/package-deb from the binary under test
//! (the debug one: a release build would cost CI minutes), then listed, installed on this
//! machine, run, read as a man page, its unit verified by systemd, removed (the
//! configuration stays) and purged (it goes).
//!
//! It changes this machine (dpkg -i / -r / --purge of `hubvault`): the tests run as root,
//! as CI does. A hubvault package installed before the test is replaced and purged.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{hubvault, run, stderr, stdout};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// dpkg, retried (bounded: 300 tries, a second apart) while another process holds dpkg's
/// lock (another suite or an apt run on the same machine).
fn dpkg(args: &[&str]) -> Output {
    for _ in 0..300 {
        let o = Command::new("dpkg").args(args).output().unwrap();
        let locked = String::from_utf8_lossy(&o.stderr).contains("lock");
        if o.status.success() || !locked {
            return o;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    panic!("dpkg {args:?}: dpkg's lock stayed held for 300 s");
}

fn status_of_package() -> String {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "hubvault"])
        .output()
        .unwrap();
    stdout(&o)
}

#[test]
fn the_debian_package_installs_runs_documents_and_keeps_its_configuration_on_remove() {
    let out_dir = tempfile::tempdir().unwrap();
    let built = run(Command::new(repo().join("scripts/package-deb"))
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_hubvault"),
            "--compress",
            "gzip",
            "--out",
        ])
        .arg(out_dir.path()));
    ok(&built, "scripts/package-deb");
    let deb = stdout(&built).lines().last().unwrap().to_string();
    assert!(Path::new(&deb).exists(), "{deb}");

    // Every file is there, with its mode.
    let listing = run(Command::new("dpkg-deb").args(["--contents", &deb]));
    ok(&listing, "dpkg-deb --contents");
    let listing = stdout(&listing);
    let mut want = vec![
        ("-rwxr-xr-x", "./usr/bin/hubvault".to_string()),
        (
            "-rw-r--r--",
            "./lib/systemd/system/hubvault-agent.service".into(),
        ),
        ("-rw-r--r--", "./etc/hubvault/hubvault.toml".into()),
        ("-rw-------", "./etc/hubvault/agent.env".into()),
        ("-rw-r--r--", "./usr/share/man/man1/hubvault.1.gz".into()),
        (
            "-rw-r--r--",
            "./usr/share/bash-completion/completions/hubvault".into(),
        ),
        (
            "-rw-r--r--",
            "./usr/share/zsh/vendor-completions/_hubvault".into(),
        ),
        (
            "-rw-r--r--",
            "./usr/share/fish/vendor_completions.d/hubvault.fish".into(),
        ),
        ("-rw-r--r--", "./usr/share/doc/hubvault/README.md".into()),
        ("-rw-r--r--", "./usr/share/doc/hubvault/AGENT.md".into()),
        ("-rw-r--r--", "./usr/share/doc/hubvault/copyright".into()),
    ];
    for sub in [
        "agent",
        "backup",
        "demo",
        "doctor",
        "inspect",
        "prune",
        "remap",
        "restore",
        "restore-hub",
        "status",
        "verify",
        "versions",
    ] {
        want.push((
            "-rw-r--r--",
            format!("./usr/share/man/man1/hubvault-{sub}.1.gz"),
        ));
    }
    for (mode, path) in &want {
        assert!(
            listing.lines().any(|l| l.starts_with(mode)
                && l.contains("root/root")
                && l.ends_with(path.as_str())),
            "{mode} root/root {path} not in:\n{listing}"
        );
    }
    assert!(
        !listing.contains("generate-assets"),
        "the hidden subcommand has no page"
    );
    let field = |f: &str| {
        let o = run(Command::new("dpkg-deb").args(["-f", &deb, f]));
        stdout(&o).trim().to_string()
    };
    assert_eq!(field("Package"), "hubvault");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    let conffiles = run(Command::new("dpkg-deb").args(["--info", &deb, "conffiles"]));
    ok(&conffiles, "dpkg-deb --info conffiles");
    assert_eq!(
        stdout(&conffiles).lines().collect::<Vec<_>>(),
        ["/etc/hubvault/hubvault.toml", "/etc/hubvault/agent.env"]
    );

    // Install, run, read the manual, verify the unit.
    ok(&dpkg(&["-i", &deb]), "dpkg -i");
    let version = run(Command::new("/usr/bin/hubvault").arg("--version"));
    ok(&version, "hubvault --version");
    assert_eq!(
        stdout(&version).trim(),
        format!("hubvault {}", env!("CARGO_PKG_VERSION"))
    );
    let man = run(Command::new("man")
        .args(["-P", "cat", "hubvault"])
        .env("MANWIDTH", "100")
        .env_remove("MANPATH"));
    ok(&man, "man hubvault");
    let page = stdout(&man);
    assert!(page.contains("doctor") && page.contains("backup"), "{page}");
    let man = run(Command::new("man").args(["-P", "cat", "hubvault-doctor"]));
    ok(&man, "man hubvault-doctor");
    assert!(stdout(&man).contains("--hub-root"), "{}", stdout(&man));
    let unit = "/lib/systemd/system/hubvault-agent.service";
    let verify = run(Command::new("systemd-analyze").args(["verify", unit]));
    ok(&verify, "systemd-analyze verify");
    assert!(
        std::fs::read_to_string(unit)
            .unwrap()
            .contains("ExecStart=/usr/bin/hubvault agent"),
    );
    // The installed example configuration changes nothing until edited.
    let conf = std::fs::read_to_string("/etc/hubvault/hubvault.toml").unwrap();
    assert!(
        conf.lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')),
        "{conf}"
    );

    // Remove: the binary goes, the configuration (conffiles) stays; purge takes it.
    std::fs::write(
        "/etc/hubvault/hubvault.toml",
        format!("{conf}# edited by the operator\n"),
    )
    .unwrap();
    ok(&dpkg(&["-r", "hubvault"]), "dpkg -r");
    assert!(!Path::new("/usr/bin/hubvault").exists());
    assert!(!Path::new(unit).exists());
    assert!(
        std::fs::read_to_string("/etc/hubvault/hubvault.toml")
            .unwrap()
            .contains("edited by the operator")
    );
    assert!(Path::new("/etc/hubvault/agent.env").exists());
    assert_eq!(status_of_package(), "deinstall ok config-files");
    ok(&dpkg(&["--purge", "hubvault"]), "dpkg --purge");
    assert!(!Path::new("/etc/hubvault").exists());
}

/// Issue 16: no help text says "the seed" (an internal name no operator knows).
#[test]
fn help_text_speaks_of_the_platform_not_the_seed() {
    let top = run(hubvault().arg("--help"));
    ok(&top, "hubvault --help");
    let mut texts = vec![stdout(&top)];
    assert!(texts[0].contains("platform's backup rule"), "{}", texts[0]);
    for sub in [
        "agent",
        "backup",
        "demo",
        "doctor",
        "inspect",
        "prune",
        "remap",
        "restore",
        "restore-hub",
        "status",
        "verify",
        "versions",
    ] {
        let o = run(hubvault().args([sub, "--help"]));
        ok(&o, sub);
        texts.push(stdout(&o));
    }
    for t in texts {
        assert!(!t.to_lowercase().contains("seed"), "{t}");
    }
}

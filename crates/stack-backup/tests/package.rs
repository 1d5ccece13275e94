//! The Debian package: built from this workspace by `scripts/package.sh`,
//! installed with `dpkg -i` into a clean Debian root filesystem of this
//! machine's release (`scripts/debian-root.sh`: debootstrap minbase plus
//! man-db and bash-completion, no Rust toolchain), used there, and removed.
//!
//! Ignored by a plain `cargo test`: building the package runs `cargo build`
//! in the same target directory, which puts the package's binary (without
//! the tests' fault-injection points) at `target/debug/stack-backup`, the
//! path every other test file runs. `scripts/test.sh` runs it on its own,
//! after the others: `cargo test --test package -- --ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{bin, Run};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A private copy of the cached Debian root, removed on drop.
struct Root {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Root {
    fn new() -> Self {
        let cached = Run::from(
            Command::new("bash")
                .arg(workspace().join("scripts/debian-root.sh"))
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        );
        cached.expect_code(0);
        let cached = PathBuf::from(cached.stdout.trim());
        // Beside the cache: same filesystem, and /tmp may be small.
        let dir = tempfile::tempdir_in(cached.parent().unwrap()).unwrap();
        let path = dir.path().join("root");
        let cp = Command::new("cp")
            .arg("-a")
            .arg(&cached)
            .arg(&path)
            .status()
            .unwrap();
        assert!(cp.success(), "copying {}", cached.display());
        Self { _dir: dir, path }
    }

    /// Runs `script` with bash inside the root (chroot), as root, with a
    /// clean environment.
    fn sh(&self, script: &str) -> Run {
        Run::from(
            Command::new("chroot")
                .arg(&self.path)
                .args(["/bin/bash", "-c", script])
                .env_clear()
                .env(
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                )
                .env("HOME", "/root")
                .env("LANG", "C.UTF-8")
                .stdin(Stdio::null())
                .output()
                .expect("chroot"),
        )
    }

    fn file(&self, p: &str) -> PathBuf {
        self.path.join(p.trim_start_matches('/'))
    }
}

/// Builds the package with the test profile's compiled dependencies.
fn build_package(out: &Path) -> PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace().join("scripts/package.sh"))
        .args(["--profile", "dev", "--fast", "--out"])
        .arg(out)
        .current_dir(workspace())
        .stdin(Stdio::null());
    // The variables cargo sets for this test process are not the outer
    // build's: build scripts that watch one (ring watches
    // CARGO_MANIFEST_DIR and OUT_DIR) would be rerun, and ring and
    // everything above it rebuilt here and again by the next `cargo test`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "CARGO"
            || name == "OUT_DIR"
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_MANIFEST_LINKS",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name.as_ref())
        {
            cmd.env_remove(name.as_ref());
        }
    }
    let run = Run::from(cmd.output().unwrap());
    run.expect_code(0);
    let deb = PathBuf::from(run.stdout.lines().last().unwrap_or_default());
    assert!(deb.is_file(), "{}", run.stdout);
    deb
}

#[test]
#[ignore = "rebuilds target/debug/stack-backup without fault injection; scripts/test.sh runs it alone"]
fn the_package_installs_works_and_uninstalls_on_a_clean_debian_without_rust() {
    let out = tempfile::tempdir().unwrap();
    let deb = build_package(out.path());
    let root = Root::new();

    // A machine without a Rust toolchain.
    let rust =
        root.sh("command -v cargo rustc rustup; ls -d /root/.cargo /root/.rustup 2>/dev/null");
    assert!(rust.stdout.trim().is_empty(), "{}", rust.stdout);

    std::fs::copy(&deb, root.file("/tmp/stack-backup.deb")).unwrap();
    root.sh("dpkg -i /tmp/stack-backup.deb && rm /tmp/stack-backup.deb")
        .expect_code(0);

    // The same version line as the binary the tests built from this tree.
    let host = Run::from(Command::new(bin()).arg("--version").output().unwrap());
    let installed = root.sh("stack-backup --version");
    installed.expect_code(0);
    assert_eq!(installed.stdout, host.stdout);
    assert!(
        installed.stdout.contains("rustic_core 0.13.0 + "),
        "{}",
        installed.stdout
    );

    // `man stack-backup-restore`, offline, from the installed pages.
    let man = root.sh("MANPAGER=cat MANWIDTH=100 man --nj --nh stack-backup-restore");
    man.expect_code(0);
    let page = man.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for phrase in [
        "stack-backup-restore - Restore a backup set through the safety chain",
        "Pre-restore snapshot: the current state is backed up first",
        "Post-restore verify",
        "--allow-migration-mismatch",
    ] {
        assert!(page.contains(phrase), "`{phrase}` not in:\n{}", man.stdout);
    }
    root.sh("MANPAGER=cat man stack-backup-immaculate-create >/dev/null")
        .expect_code(0);

    // bash-completion finds the installed script by its own lookup (what
    // the first TAB of an interactive shell does; a non-interactive
    // `bash -c` does not load bash-completion, so it is sourced here).
    let spec = root.sh(
        ". /usr/share/bash-completion/bash_completion && __load_completion stack-backup \
         && complete -p stack-backup",
    );
    spec.expect_code(0);
    assert!(
        spec.stdout
            .trim()
            .ends_with("-F _clap_complete_stack_backup stack-backup"),
        "{}",
        spec.stdout
    );

    // The example config is a conffile, mode 0600 in a 0700 directory, and
    // parses: doctor says "not ready" (no repository yet), not "bad config".
    let conffiles = root.sh("dpkg-query -W -f='${Conffiles}' stack-backup");
    assert!(
        conffiles
            .stdout
            .contains("/etc/stack-backup/stack-backup.toml"),
        "{}",
        conffiles.stdout
    );
    let modes = root.sh("stat -c '%a %U' /etc/stack-backup /etc/stack-backup/stack-backup.toml");
    assert_eq!(modes.stdout, "700 root\n600 root\n");
    let example = root.sh("stack-backup --config /etc/stack-backup/stack-backup.toml doctor");
    example.expect_code(6);
    assert!(
        example.stdout.contains("no repository here yet"),
        "{}",
        example.stdout
    );

    // The units are shipped and nothing enabled them.
    for unit in ["stack-backup-backup.service", "stack-backup-backup.timer"] {
        let shipped = std::fs::read_to_string(workspace().join("packaging").join(unit)).unwrap();
        let installed =
            std::fs::read_to_string(root.file(&format!("/usr/lib/systemd/system/{unit}"))).unwrap();
        assert_eq!(installed, shipped, "{unit}");
    }
    let enabled = root.sh("find /etc/systemd -name 'stack-backup*' 2>/dev/null");
    assert!(enabled.stdout.trim().is_empty(), "{}", enabled.stdout);

    // A generated config: init, doctor, a backup, and its name completed
    // by the installed script.
    let demo = root.sh(
        "set -e; mkdir -p /srv/demo/media && echo hello > /srv/demo/media/a.txt && cd /srv/demo \
         && stack-backup init --generate-password --repo /var/backups/demo --name demo \
         && printf '\\n[paths.media]\\npath = \"media\"\\n' >> stack-backup.toml \
         && stack-backup doctor",
    );
    demo.expect_code(0);
    assert!(demo.stdout.contains("paths.media"), "{}", demo.stdout);
    assert!(
        demo.stdout.contains("stack `demo` is ready"),
        "{}",
        demo.stdout
    );
    root.sh("cd /srv/demo && stack-backup backup --name first-on-debian")
        .expect_code(0);
    let names = root.sh(
        "cd /srv/demo && . /usr/share/bash-completion/bash_completion \
         && __load_completion stack-backup && COMP_WORDS=(stack-backup restore fi) COMP_CWORD=2 \
         && _clap_complete_stack_backup stack-backup fi restore && printf '%s\\n' \"${COMPREPLY[@]}\"",
    );
    names.expect_code(0);
    assert_eq!(names.stdout.trim(), "first-on-debian");

    // Removal keeps the (edited) config, the password and the repository.
    std::fs::write(
        root.file("/etc/stack-backup/stack-backup.toml"),
        std::fs::read_to_string(root.file("/etc/stack-backup/stack-backup.toml")).unwrap()
            + "# edited by the admin\n",
    )
    .unwrap();
    root.sh("apt-get remove -y stack-backup").expect_code(0);
    assert!(!root.file("/usr/bin/stack-backup").exists());
    assert!(!root
        .file("/usr/share/man/man1/stack-backup-restore.1.gz")
        .exists());
    let kept = std::fs::read_to_string(root.file("/etc/stack-backup/stack-backup.toml")).unwrap();
    assert!(kept.ends_with("# edited by the admin\n"));
    for p in [
        "/var/backups/demo/config",
        "/root/.config/stack-backup/demo.key",
        "/srv/demo/stack-backup.toml",
    ] {
        assert!(root.file(p).is_file(), "{p} was removed");
    }
    let snapshots = std::fs::read_dir(root.file("/var/backups/demo/snapshots"))
        .unwrap()
        .count();
    assert_eq!(snapshots, 1);
    let status = root.sh("dpkg-query -W -f='${Status}' stack-backup");
    assert_eq!(status.stdout, "deinstall ok config-files");
}

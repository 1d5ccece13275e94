//! What an installed stack-backup offers besides its commands: the shell
//! completion it answers from a real repository, one manual page per
//! command, and a `--version` that names the commit and the vendored
//! rustic_core's patches. (The Debian package itself: `tests/package.rs`.)

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{bin, unique, Run, Sandbox};

/// The workspace root (the source tree the binary was built from).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs bash with `stack-backup completions bash` loaded and asks the
/// function it registered for `words` (the last one being completed), the
/// way bash does on TAB: `COMP_WORDS`, `COMP_CWORD`, then the function with
/// the command, the current and the previous word. Returns the candidates.
fn complete(sb: &Sandbox, cwd: &Path, words: &[&str]) -> (Run, BTreeSet<String>) {
    let dir = bin().parent().unwrap().to_path_buf();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        r#"set -u
source <(stack-backup completions bash)
spec=$(complete -p stack-backup) || exit 90
fn=${{spec##*-F }}; fn=${{fn%% *}}
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9
prev=""; [ "$COMP_CWORD" -gt 0 ] && prev=${{COMP_WORDS[COMP_CWORD-1]}}
"$fn" stack-backup "${{COMP_WORDS[COMP_CWORD]}}" "$prev"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        words = quoted.join(" ")
    );
    let mut cmd = sb.command("bash", cwd, Some(&dir));
    cmd.arg("-c").arg(script);
    let run = Run::from(cmd.output().expect("bash"));
    run.expect_code(0);
    let got = run
        .stdout
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    (run, got)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

#[test]
fn bash_completes_commands_tiers_and_the_set_names_of_a_real_repository() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("media")).unwrap();
    std::fs::write(sb.path().join("media/a.txt"), "a").unwrap();
    sb.write_config(&unique("compl"), "[paths.media]\npath = \"media\"\n");
    sb.init();
    for name in ["before-v2", "nightly-1"] {
        sb.run(&["backup", "--name", name]).expect_code(0);
    }
    sb.run(&["immaculate", "create", "--name", "base-1"])
        .expect_code(0);
    let here = sb.path();

    // An empty word is offered the options too; the values are the point.
    let values = |got: BTreeSet<String>| -> BTreeSet<String> {
        got.into_iter().filter(|c| !c.starts_with('-')).collect()
    };
    let (_, got) = complete(&sb, here, &["stack-backup", "restore", ""]);
    assert!(got.contains("--dry-run"), "{got:?}");
    assert_eq!(
        values(got),
        set(&["before-v2", "nightly-1", "base-1", "latest"]),
        "restore NAME"
    );
    let (_, got) = complete(&sb, here, &["stack-backup", "restore", "ni"]);
    assert_eq!(got, set(&["nightly-1"]));
    let (_, got) = complete(&sb, here, &["stack-backup", "export", "b"]);
    assert_eq!(got, set(&["before-v2", "base-1"]));
    // Only immaculate baselines where only they are accepted.
    let (_, got) = complete(&sb, here, &["stack-backup", "emergency", "--baseline", ""]);
    assert_eq!(values(got), set(&["base-1"]));

    // The repository of the config named on the line, from anywhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let config = sb.config().display().to_string();
    let (_, got) = complete(
        &sb,
        elsewhere.path(),
        &["stack-backup", "--config", &config, "show", ""],
    );
    assert_eq!(
        values(got),
        set(&["before-v2", "nightly-1", "base-1", "latest"])
    );
    // No config there: no names, and nothing printed on the terminal.
    let (run, got) = complete(&sb, elsewhere.path(), &["stack-backup", "show", ""]);
    assert!(values(got.clone()).is_empty() && !got.is_empty(), "{got:?}");
    assert!(run.stderr.is_empty(), "{}", run.stderr);

    // A wrong password: no names, no error on the terminal.
    let mut wrong = Sandbox::new();
    wrong.env = vec![("STACK_BACKUP_PASSWORD".into(), "not-the-password".into())];
    let (run, got) = complete(&wrong, here, &["stack-backup", "restore", ""]);
    assert!(values(got.clone()).is_empty() && !got.is_empty(), "{got:?}");
    assert!(run.stderr.is_empty(), "{}", run.stderr);

    // Tiers, commands and options come from the same definitions.
    let (_, got) = complete(&sb, here, &["stack-backup", "list", "--tier", ""]);
    assert_eq!(
        got,
        set(&["data", "backups", "immaculate", "sacred", "pre-restore"])
    );
    let (_, got) = complete(&sb, here, &["stack-backup", "imm"]);
    assert_eq!(got, set(&["immaculate"]));
    let (_, got) = complete(&sb, here, &["stack-backup", "immaculate", "verify", ""]);
    assert_eq!(values(got), set(&["base-1"]));
    let (_, got) = complete(&sb, here, &["stack-backup", "restore", "--dry"]);
    assert_eq!(got, set(&["--dry-run"]));

    // On a terminal, as a user types it: `stack-backup show ni<TAB><Enter>`
    // runs `show nightly-1`.
    let typed = tty_bash(
        &sb,
        "source <(stack-backup completions bash)\nstack-backup show ni\t\nexit\n",
    );
    assert!(
        typed.contains("# Backup set `nightly-1` of stack"),
        "{typed}"
    );
}

/// An interactive bash (no rc files) on a pseudo-terminal (`script`) in the
/// sandbox, typing `input`; everything the terminal showed.
fn tty_bash(sb: &Sandbox, input: &str) -> String {
    use std::io::Write;
    let dir = bin().parent().unwrap().to_path_buf();
    let mut cmd = sb.command("script", sb.path(), Some(&dir));
    cmd.args(["-qec", "bash --norc --noprofile -i", "/dev/null"])
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("script (util-linux)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_code(0);
    run.stdout.replace('\r', "")
}

#[test]
fn zsh_and_fish_scripts_ask_the_binary() {
    let script = |shell: &str| {
        let run = Run::from(
            Command::new(bin())
                .args(["completions", shell])
                .output()
                .unwrap(),
        );
        run.expect_code(0);
        run.stdout
    };
    let zsh = script("zsh");
    assert!(zsh.starts_with("#compdef stack-backup\n"), "{zsh}");
    assert!(zsh.contains(" STACK_BACKUP_COMPLETE=\"zsh\" "), "{zsh}");
    // Autoloaded from $fpath as `_stack-backup`, it completes at once.
    assert!(
        zsh.contains("if [ \"$funcstack[1]\" = \"_stack-backup\" ]; then\n    _clap_dynamic_completer_stack_backup \"$@\"\nelse\n    compdef _clap_dynamic_completer_stack_backup stack-backup\nfi"),
        "{zsh}"
    );
    let fish = script("fish");
    assert!(
        fish.contains("--command stack-backup")
            && fish.contains("(STACK_BACKUP_COMPLETE=fish stack-backup --"),
        "{fish}"
    );
    Run::from(
        Command::new(bin())
            .args(["completions", "tcsh"])
            .output()
            .unwrap(),
    )
    .expect_code(2);
    // clap_complete's default variable, set for some other reason, does
    // not turn a command into a completion request.
    let version = Run::from(
        Command::new(bin())
            .arg("-V")
            .env("COMPLETE", "bash")
            .output()
            .unwrap(),
    );
    version.expect_code(0);
    assert!(
        version.stdout.starts_with("stack-backup "),
        "{}",
        version.stdout
    );
}

/// The commands `--help` lists (without `help`), e.g. `restore`.
fn commands_in_help(args: &[&str]) -> Vec<String> {
    let out = Run::from(
        Command::new(bin())
            .args(args)
            .arg("--help")
            .output()
            .unwrap(),
    );
    out.expect_code(0);
    out.stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn man_writes_one_page_per_command_and_restore_explains_the_safety_chain() {
    let dir = tempfile::tempdir().unwrap();
    let pages_dir = dir.path().join("man1");
    let run = Run::from(
        Command::new(bin())
            .args(["--json", "man"])
            .arg(&pages_dir)
            .output()
            .unwrap(),
    );
    run.expect_code(0);

    let mut want = vec!["stack-backup.1".to_string()];
    for c in commands_in_help(&[]) {
        want.push(format!("stack-backup-{c}.1"));
    }
    for c in commands_in_help(&["immaculate"]) {
        want.push(format!("stack-backup-immaculate-{c}.1"));
    }
    assert!(want.len() > 15, "{want:?}");
    want.sort();
    let mut have: Vec<String> = std::fs::read_dir(&pages_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    have.sort();
    assert_eq!(have, want);
    let listed: Vec<String> = serde_json::from_value(run.json()["pages"].clone()).unwrap();
    assert_eq!(listed, want);

    // Neither justified nor hyphenated, so phrases stay whole.
    let page = Command::new("man")
        .args(["--nj", "--nh", "-l"])
        .arg(pages_dir.join("stack-backup-restore.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man (man-db) is installed by scripts/services.sh");
    let text = String::from_utf8_lossy(&page.stdout);
    assert!(page.status.success(), "{text}");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let steps = [
        "Disk check",
        "Backup verify",
        "Migration check",
        "Pre-restore snapshot",
        "Restore:",
        "Redis flush",
        "Post-restore verify",
    ];
    let mut at = 0;
    for step in steps {
        let i = text[at..]
            .find(step)
            .unwrap_or_else(|| panic!("`{step}` missing or out of order:\n{text}"));
        at += i + step.len();
    }
    assert!(text.contains("--allow-migration-mismatch"), "{text}");
}

#[test]
fn version_names_the_commit_and_the_vendored_patches() {
    let run = Run::from(Command::new(bin()).arg("--version").output().unwrap());
    run.expect_code(0);
    let line = run.stdout.trim();
    assert!(
        line.starts_with(&format!("stack-backup {} (", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );

    let root = workspace().canonicalize().unwrap();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let in_own_repo = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|t| Path::new(&t).canonicalize().ok().as_deref() == Some(root.as_path()));
    if in_own_repo {
        let head = git(&["rev-parse", "--short=12", "HEAD"]).unwrap();
        assert!(line.contains(&format!("(commit {head};")), "{line}");
    } else {
        assert!(line.contains("(unknown commit;"), "{line}");
    }

    let mut ids: Vec<String> = std::fs::read_dir(root.join("vendor/patches"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".patch"))
        .collect();
    ids.sort();
    assert!(!ids.is_empty());
    let ids: Vec<String> = ids
        .iter()
        .map(|n| {
            let p: Vec<&str> = n.trim_end_matches(".patch").split('-').collect();
            if p.len() > 1 && p[1].chars().all(|c| c.is_ascii_digit()) {
                format!("{}-{}", p[0], p[1])
            } else {
                p[0].to_string()
            }
        })
        .collect();
    assert!(
        line.ends_with(&format!(
            "rustic_core 0.13.0 + {} patches: {})",
            ids.len(),
            ids.join(" ")
        )),
        "{line}"
    );

    // `-V` stays the plain version for scripts and the man pages' header.
    let short = Run::from(Command::new(bin()).arg("-V").output().unwrap());
    assert_eq!(
        short.stdout.trim(),
        format!("stack-backup {}", env!("CARGO_PKG_VERSION"))
    );
}

/// build.rs outside a git repository of its own (a source tarball, also one
/// unpacked inside some other repository): "unknown commit", not a wrong one.
#[path = "../build.rs"]
#[allow(dead_code)]
mod build_script;

#[test]
fn a_tarball_without_git_has_an_unknown_commit() {
    let alone = tempfile::tempdir().unwrap();
    assert_eq!(build_script::git_commit(alone.path()), None);

    let outer = tempfile::tempdir().unwrap();
    let ok = Command::new("git")
        .args(["init", "-q"])
        .arg(outer.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let inner = outer.path().join("stack-backup-0.1.0");
    std::fs::create_dir(&inner).unwrap();
    assert_eq!(build_script::git_commit(&inner), None);

    let here = build_script::git_commit(&workspace());
    let tarball_here = !workspace().join(".git").exists();
    assert_eq!(here.is_none(), tarball_here, "{here:?}");
}

/// The units the package ships (and `schedule install` will write) are
/// valid for systemd: no unknown keys, a runnable ExecStart (pointed at the
/// binary under test, since /usr/bin has none here), a timer whose service
/// exists.
#[test]
fn the_systemd_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    for unit in ["stack-backup-backup.service", "stack-backup-backup.timer"] {
        let text = std::fs::read_to_string(workspace().join("packaging").join(unit)).unwrap();
        if unit.ends_with(".service") {
            assert!(
                text.contains("\nExecStart=/usr/bin/stack-backup --config /etc/stack-backup/stack-backup.toml "),
                "{text}"
            );
        }
        let text = text.replace("/usr/bin/stack-backup", &bin().display().to_string());
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let run = Run::from(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.path().join("stack-backup-backup.service"))
            .arg(dir.path().join("stack-backup-backup.timer"))
            .output()
            .expect("systemd-analyze (scripts/services.sh installs systemd)"),
    );
    run.expect_code(0);
    assert!(run.stderr.trim().is_empty(), "{}", run.stderr);
}

//! `completions SHELL` and `man DIR`: both rendered from the clap
//! definitions in `cli.rs`, so they cannot drift from the binary.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use stack_backup_core::ExitCode;

use crate::cli::{Cli, Shell};
use crate::output::Output;

/// The name the shell completes and the program it asks: the installed
/// binary on PATH, so one script serves every installation.
const BIN: &str = "stack-backup";

/// Prints the registration script of `shell`; completions themselves come
/// from the binary at TAB time (`crate::complete`).
pub fn completions(shell_kind: Shell) -> anyhow::Result<ExitCode> {
    let shell: &dyn EnvCompleter = match shell_kind {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    let mut script = Vec::new();
    shell
        .write_registration(crate::COMPLETE_VAR, BIN, BIN, BIN, &mut script)
        .context("writing the completion script")?;
    let mut script = String::from_utf8(script).context("completion script")?;
    if matches!(shell_kind, Shell::Zsh) {
        script = zsh_autoloadable(&script);
    }
    std::io::Write::write_all(&mut std::io::stdout().lock(), script.as_bytes())?;
    Ok(ExitCode::Success)
}

/// clap_complete's zsh script only registers its function (`compdef`):
/// installed in `$fpath` as `_stack-backup` and autoloaded by compinit, the
/// first TAB would register and complete nothing. Run from the autoloaded
/// function it completes; sourced, it registers as before.
fn zsh_autoloadable(script: &str) -> String {
    const REGISTER: &str = "compdef _clap_dynamic_completer_stack_backup stack-backup";
    script.replace(
        REGISTER,
        &format!(
            "if [ \"$funcstack[1]\" = \"_stack-backup\" ]; then\n    \
             _clap_dynamic_completer_stack_backup \"$@\"\nelse\n    {REGISTER}\nfi"
        ),
    )
}

/// Writes one page per command and subcommand into `dir`
/// (`stack-backup.1`, `stack-backup-restore.1`, `stack-backup-immaculate-create.1`, …).
pub fn man(dir: &Path, out: &Output) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing manual pages into {}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("stack-backup") && n.ends_with(".1"))
        .collect();
    pages.sort();
    out.json(&serde_json::json!({ "dir": dir.display().to_string(), "pages": pages }));
    out.say(format!(
        "wrote {} manual pages into {}",
        pages.len(),
        dir.display()
    ));
    Ok(ExitCode::Success)
}

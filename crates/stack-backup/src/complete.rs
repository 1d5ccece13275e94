//! Dynamic shell completion: the shell runs `stack-backup` with `COMPLETE`
//! set (clap_complete's protocol) and the binary answers from its own
//! argument definitions, plus the names of the backup sets in the
//! repository the command line would use.
//!
//! A completer never prints and never fails: anything that goes wrong
//! (no config, no password, an unreachable repository) means no names.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap_complete::CompletionCandidate;
use stack_backup_core::config::{Env, DEFAULT_FILE};
use stack_backup_core::tiers::Tier;
use stack_backup_core::{repository, sets};

/// Names (and `latest`) of every backup set of the stack.
pub fn set_names(current: &OsStr) -> Vec<CompletionCandidate> {
    candidates(current, None)
}

/// Names of the immaculate baselines.
pub fn immaculate_names(current: &OsStr) -> Vec<CompletionCandidate> {
    candidates(current, Some(Tier::Immaculate))
}

fn candidates(current: &OsStr, tier: Option<Tier>) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    names(tier)
        .into_iter()
        .filter(|n| n.starts_with(prefix.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

fn names(tier: Option<Tier>) -> Vec<String> {
    let env: Env = std::env::vars().collect();
    let path = config_on_line(std::env::args_os())
        .or_else(|| env.get("STACK_BACKUP_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
    let Ok(cfg) = crate::commands::load_config_at(&path, &env) else {
        return Vec::new();
    };
    let Ok(repo) = repository::open_from(&cfg, &env) else {
        return Vec::new();
    };
    sets::list(&repo, &cfg.stack.name.0)
        .map(|list| sets::references(&list, tier))
        .unwrap_or_default()
}

/// The `--config FILE` (or `--config=FILE`) of the command line being
/// completed: the words after clap_complete's `--` separator.
fn config_on_line(args: impl IntoIterator<Item = OsString>) -> Option<PathBuf> {
    let words: Vec<OsString> = args.into_iter().skip_while(|a| a != "--").skip(1).collect();
    let mut found = None;
    for (i, w) in words.iter().enumerate() {
        let w = w.to_string_lossy();
        if w == "--config" {
            found = words.get(i + 1).map(PathBuf::from);
        } else if let Some(v) = w.strip_prefix("--config=") {
            found = Some(PathBuf::from(v));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::config_on_line;
    use std::path::PathBuf;

    fn line(words: &[&str]) -> Option<PathBuf> {
        config_on_line(words.iter().map(Into::into))
    }

    #[test]
    fn config_of_the_completed_line() {
        assert_eq!(line(&["sb", "--", "sb", "restore", ""]), None);
        assert_eq!(
            line(&["sb", "--", "sb", "--config", "/etc/x.toml", "restore", ""]),
            Some(PathBuf::from("/etc/x.toml"))
        );
        assert_eq!(
            line(&["sb", "--", "sb", "restore", "--config=a.toml", "b"]),
            Some(PathBuf::from("a.toml"))
        );
        // Words before the separator are the completer's own invocation.
        assert_eq!(line(&["sb", "--config", "x", "--", "sb", "show"]), None);
    }
}

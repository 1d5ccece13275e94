//! One module per command.

mod backup;
mod completions;
mod copy;
mod doctor;
mod drill;
mod emergency;
mod export;
mod immaculate;
mod init;
mod list;
mod prune;
mod recover_plan;
mod restore;
mod sacred;
mod schedule;
mod show;
pub mod status;
mod unlock;
mod verify;
pub mod watch;

use std::path::{Path, PathBuf};

use anyhow::Context;
use stack_backup_core::config::{Config, Env, DEFAULT_FILE};
use stack_backup_core::{Error, ExitCode};

use crate::cli::{Cli, Command};
use crate::output::Output;

/// Runs the chosen command; its `Ok` is the exit code (doctor may report
/// "not ready" without an error).
pub fn run(cli: &Cli, out: &Output) -> anyhow::Result<ExitCode> {
    let env: Env = std::env::vars().collect();
    // A watched command with a config that loads is recorded and
    // announced; a config that does not load is reported by the command.
    let cfg = watch::watched(&cli.command)
        .and_then(|name| load_config(cli, &env).ok().map(|c| (name, c)));
    let Some((name, cfg)) = cfg else {
        return dispatch(cli, &env, out);
    };
    let w = watch::Watch::start(&cfg, &env, name);
    let result = dispatch(cli, &env, out);
    w.finish(&result, out);
    result
}

fn dispatch(cli: &Cli, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    let env = env.clone();
    match &cli.command {
        Command::Init(args) => init::run(cli, args, &env, out),
        Command::Doctor(args) => doctor::run(&load_config(cli, &env)?, &env, args.strict, out),
        Command::List(args) => list::run(
            &as_of(load_config(cli, &env)?, args.as_of)?,
            args,
            &env,
            out,
        ),
        Command::Show(args) => show::run(&load_config(cli, &env)?, args, &env, out),
        Command::RecoverPlan(args) => recover_plan::run(&load_config(cli, &env)?, args, &env, out),
        Command::Backup(args) => backup::run(
            &load_config(cli, &env)?,
            &env,
            &stack_backup_core::backup::Request {
                name: args.name.clone(),
                tier: stack_backup_core::tiers::Tier::Backups,
                include_redis: args.include_redis,
                only: args.only.clone(),
                databases_only: false,
                skip_missing: false,
                hold: false,
            },
            out,
        ),
        Command::Restore(args) => restore::run(
            &as_of(load_config(cli, &env)?, args.as_of)?,
            args,
            &env,
            out,
        ),
        Command::Copy(args) => copy::run(&load_config(cli, &env)?, args, &env, out),
        Command::Immaculate(cmd) => immaculate::run(&load_config(cli, &env)?, cmd, &env, out),
        Command::Emergency(args) => emergency::run(&load_config(cli, &env)?, args, &env, out),
        Command::Sacred(args) => sacred::run(&load_config(cli, &env)?, args, &env, out),
        Command::Prune(args) => prune::run(&load_config(cli, &env)?, args, &env, out),
        Command::Verify(args) => verify::run(
            &as_of(load_config(cli, &env)?, args.as_of)?,
            args,
            &env,
            out,
        ),
        Command::Drill(args) => drill::run(&load_config(cli, &env)?, args, &env, out),
        Command::Unlock(args) => unlock::run(&load_config(cli, &env)?, args, &env, out),
        Command::Export(args) => export::export(&load_config(cli, &env)?, args, &env, out),
        Command::Import(args) => export::import(&load_config(cli, &env)?, args, &env, out),
        Command::Status(args) => status::run(&load_config(cli, &env)?, args, &env, out),
        Command::Schedule(args) => schedule::run(&load_config(cli, &env)?, args, out),
        Command::Completions(args) => completions::completions(args.shell),
        Command::Man(args) => completions::man(&args.dir, out),
        Command::Dump(args) => backup::run(
            &load_config(cli, &env)?,
            &env,
            &stack_backup_core::backup::Request {
                name: args.name.clone(),
                tier: stack_backup_core::tiers::Tier::Data,
                include_redis: false,
                only: args.only.clone(),
                databases_only: true,
                skip_missing: false,
                hold: false,
            },
            out,
        ),
    }
}

/// The config path: `--config`, `STACK_BACKUP_CONFIG`, or `./stack-backup.toml`.
pub fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FILE))
}

/// Loads the config and applies environment overrides.
/// The config with `--as-of` applied: the repository is then read as it
/// was (a usage error, exit 2, on a repository that is not on S3).
fn as_of(mut cfg: Config, at: Option<jiff::Timestamp>) -> anyhow::Result<Config> {
    if let Some(at) = at {
        stack_backup_core::as_of::require_s3(&cfg)?;
        cfg.repository.as_of = Some(at);
    }
    Ok(cfg)
}

pub fn load_config(cli: &Cli, env: &Env) -> anyhow::Result<Config> {
    let path = config_path(cli);
    load_config_at(&path, env)
}

pub fn load_config_at(path: &Path, env: &Env) -> anyhow::Result<Config> {
    if !path.exists() {
        return Err(Error::Config(stack_backup_core::config::ConfigError {
            file: path.display().to_string(),
            line: None,
            column: None,
            key: None,
            message: "no such file; run `stack-backup init` to create one, or pass --config FILE"
                .into(),
        })
        .into());
    }
    let mut cfg = Config::load(path).map_err(Error::from)?;
    cfg.apply_env(env).map_err(Error::from)?;
    // Every command says so while a restore is interrupted (restore and
    // emergency then refuse, see restore::journal).
    if let Ok(Some(r)) = stack_backup_core::restore::journal::find(&cfg) {
        eprintln!(
            "warning: {}",
            stack_backup_core::restore::journal::interrupted(&r)
        );
    }
    Ok(cfg)
}

/// The exit code for an error: the library's classification when the
/// error (or its cause) is a library error, else "failure".
pub fn exit_code_of(err: &anyhow::Error) -> ExitCode {
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .map_or(ExitCode::Failure, Error::exit_code)
}

/// Wraps a library result with a short context line.
pub fn ctx<T>(r: stack_backup_core::Result<T>, what: &str) -> anyhow::Result<T> {
    r.map_err(anyhow::Error::from).context(what.to_string())
}

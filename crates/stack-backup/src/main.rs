//! `stack-backup`: the command line. Parses arguments, calls the library,
//! renders results for people (tables, progress) or scripts (`--json`).

mod cli;
mod commands;
mod complete;
mod html;
mod output;

use clap::{CommandFactory, Parser};

/// The environment variable through which the shell asks for completions
/// (clap_complete's protocol; the scripts `completions` prints set it).
/// Not clap_complete's default `COMPLETE`: a variable that generic may be
/// set in a cron or systemd environment, and a backup must not turn into a
/// completion request.
const COMPLETE_VAR: &str = "STACK_BACKUP_COMPLETE";

/// At most two glibc malloc arenas. rustic_core runs pools of up to 20
/// threads (restore, archiver); with one arena per thread, memory freed by
/// one phase stays reserved in arenas the next phase does not use, and the
/// peak RSS of a restore grows by a third. See
/// `docs/decisions/0007-restore-memory.md`.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any
    // thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    stack_backup_core::system::fault::setup();
    // Before anything else: a completion request prints candidates and exits.
    clap_complete::CompleteEnv::with_factory(cli::Cli::command)
        .var(COMPLETE_VAR)
        .complete();
    let cli = cli::Cli::parse();
    let out = output::Output::new(&cli);
    out.init_logging();
    match commands::run(&cli, &out) {
        Ok(code) => std::process::ExitCode::from(code.code()),
        Err(err) => {
            let code = commands::exit_code_of(&err);
            out.error(&err, code);
            std::process::ExitCode::from(code.code())
        }
    }
}

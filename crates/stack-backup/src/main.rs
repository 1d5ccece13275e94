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

/// Resident memory past which a `backup` maps every block of
/// [`MAP_BLOCKS_FROM`] or more on its own (decision 0057).
const MAP_LARGE_BLOCKS_PAST: u64 = 192 << 20;

/// The size from which blocks are mapped past the bound: the chunker's
/// smallest chunk, so every chunk buffer is.
const MAP_BLOCKS_FROM: i32 = 512 << 10;

/// For `backup` only, once its resident memory passes
/// [`MAP_LARGE_BLOCKS_PAST`]: every block of [`MAP_BLOCKS_FROM`] or more is
/// mapped on its own and returned when freed.
///
/// Chunks (0.5 to 8 MiB) and their compressed and encrypted copies pass
/// through by the thousand. glibc raises its mapping threshold to the
/// largest block freed, after which they are carved from the arenas
/// between the archive's long-lived small allocations and fragment them: a
/// first backup of 7 GB grew to 320–380 MiB around a heap of 220 MiB, and
/// to 274–277 MiB with the bound. Mapping them costs the kernel's zeroing
/// of every fresh page (a first backup of the 0.7 GB bench stack 9 %
/// slower with a fixed threshold), so small backups, which never get
/// near the bound, keep glibc's default. Reads (restore, verify) reuse
/// their blocks and would pay 30 % more time.
/// See `docs/decisions/0057-backup-maps-large-blocks-past-a-bound.md`.
fn map_large_blocks_past_bound(command: &cli::Command) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if matches!(command, cli::Command::Backup(_)) {
        let watch = || loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let Some(resident) = resident_bytes() else {
                return;
            };
            if resident > MAP_LARGE_BLOCKS_PAST {
                // SAFETY: mallopt takes the main arena's lock and changes
                // one tuning value, read by the allocating threads as it is.
                unsafe {
                    libc::mallopt(libc::M_MMAP_THRESHOLD, MAP_BLOCKS_FROM);
                }
                return;
            }
        };
        // Without the watch a backup still runs, as before 0057.
        let _ = std::thread::Builder::new()
            .name("memory-bound".into())
            .spawn(watch);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = command;
}

/// This process's resident memory (`/proc/self/statm`), in bytes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn resident_bytes() -> Option<u64> {
    // SAFETY: sysconf only reads a constant of the system.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page)
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    stack_backup_core::system::fault::setup();
    // Before anything else: a completion request prints candidates and exits.
    clap_complete::CompleteEnv::with_factory(cli::Cli::command)
        .var(COMPLETE_VAR)
        .complete();
    let cli = cli::Cli::parse();
    map_large_blocks_past_bound(&cli.command);
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

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn resident_bytes_counts_pages_touched() {
        let before = super::resident_bytes().expect("statm readable");
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = super::resident_bytes().expect("statm readable");
        assert!(before > 1 << 20, "resident {before} B");
        assert!(
            after >= before + (32 << 20),
            "{before} B, then {after} B with 64 MiB touched"
        );
        drop(block);
    }
}

//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::ArgValueCompleter;

use crate::complete;

/// Back up and restore a whole self-hosted application stack as one
/// verified unit.
///
/// Exit codes: 0 success, 1 failure, 2 usage or config error,
/// 3 verification failed, 4 refused for safety, 5 repository locked,
/// 6 not ready (doctor; with --strict also a Compose volume or bind
/// mount no component backs up).
#[derive(Debug, Parser)]
#[command(
    name = "stack-backup",
    version,
    long_version = env!("STACK_BACKUP_LONG_VERSION"),
    propagate_version = true,
    about,
    long_about
)]
pub struct Cli {
    /// Config file [default: ./stack-backup.toml]
    #[arg(long, global = true, env = "STACK_BACKUP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// More detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// No progress bars, even on a terminal.
    #[arg(long, global = true)]
    pub no_progress: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the repository (and a starter config when there is none).
    Init(InitArgs),
    /// Check the config, every component, tool versions and free space;
    /// warn about volumes and bind mounts of the stack's Compose project
    /// that no component backs up.
    Doctor(DoctorArgs),
    /// List backup sets.
    List(ListArgs),
    /// Show a backup set's MANIFEST.md.
    Show(ShowArgs),
    /// The runbook that brings the stack back on a bare machine from a set.
    RecoverPlan(RecoverPlanArgs),
    /// Take a backup set of the whole stack (tier `backups`).
    Backup(BackupArgs),
    /// Take a database-only set (PostgreSQL, Redis with role `data`; tier `data`).
    Dump(DumpArgs),
    /// Restore a backup set through the safety chain.
    ///
    /// Shows what will be replaced (host, database, volume, directory,
    /// Redis) and asks, or needs --yes without a terminal. Then every step
    /// must pass before the next starts:
    ///
    /// 1. Disk check: free space on every filesystem the restore writes to,
    ///    above the floor (`min-free-space`).
    ///
    /// 2. Backup verify: every artifact is read back and its SHA-256
    ///    checked; a mismatch stops here, nothing changed (exit 3).
    ///
    /// 3. Migration check: the set's migration state against the code's
    ///    migration files; a mismatch stops here (exit 4) unless
    ///    --allow-migration-mismatch.
    ///
    /// 4. Pre-restore snapshot: the current state is backed up first (tier
    ///    `pre-restore`).
    ///
    /// 5. Restore: each component is restored beside the live one, then
    ///    swapped in.
    ///
    /// 6. Redis flush: cache instances are flushed when --flush-redis.
    ///
    /// 7. Post-restore verify: row counts, migration state, Redis keys,
    ///    image IDs and the configured health checks.
    ///
    /// A failure in the last three steps undoes every change and says so.
    /// --dry-run shows the plan and runs steps 1 to 3 only. Details:
    /// docs/decisions/0004-restore-beside-then-swap.md in the source.
    Restore(RestoreArgs),
    /// Copy backup sets to another repository (an off-site copy); sets the
    /// target already holds are skipped.
    Copy(CopyArgs),
    /// Immaculate baselines: verified sets that are never modified or pruned.
    #[command(subcommand)]
    Immaculate(ImmaculateCommand),
    /// Restore the newest immaculate baseline (asks twice).
    Emergency(EmergencyArgs),
    /// Pin a backup set (or a new one) as `sacred/NAME` and tag its git commit.
    Sacred(SacredArgs),
    /// Remove sets that the `[retention]` policies no longer keep (plan only
    /// without --apply), then the data nothing references.
    Prune(PruneArgs),
    /// Check the repository and read backup sets back (every SHA-256).
    Verify(VerifyArgs),
    /// Restore a set into a scratch environment on this machine, check it
    /// there, report, and remove the environment; the live stack is never
    /// touched.
    ///
    /// PostgreSQL into a scratch database (`sbdrill_<id>_<name>`), Redis
    /// into a temporary redis-server on a private socket, images loaded
    /// under a drill tag (or compared by ID when present), volumes and
    /// paths into `<state>/drill/<id>/`. Checks: every SHA-256, row counts,
    /// migration state, every table read, key counts, image IDs, file
    /// modes and owners, and the `[[drill.check]]` entries. The report is
    /// stored in the repository beside the set and shown by `status`.
    /// Exit 3 when a check fails, naming the component; 4 when a component
    /// cannot be restored here (a missing privilege).
    Drill(DrillArgs),
    /// Remove stale repository locks (of processes that are gone), as
    /// `restic unlock` does; `--remove-all` removes every lock.
    Unlock(UnlockArgs),
    /// Write a backup set as a plain directory that needs no stack-backup.
    Export(ExportArgs),
    /// Store an exported (or legacy shell-script) directory as a backup set.
    Import(ImportArgs),
    /// Show the age of each component's newest good set, the last verify,
    /// drill and off-site copy, the repository's size; exit 3 when a
    /// component is older than --max-age or `[status.max-age]`.
    ///
    /// Reads only snapshot files, a listing of the repository and this
    /// machine's records: no pack file, no lock.
    Status(StatusArgs),
    /// Write, show or remove systemd timers (or a cron file) for `[schedule]`.
    Schedule(ScheduleArgs),
    /// Print the shell completion script for bash, zsh or fish.
    ///
    /// The script asks stack-backup itself for every completion, so
    /// commands, options, tiers and the backup set names of the configured
    /// repository (--config, STACK_BACKUP_CONFIG or ./stack-backup.toml)
    /// are always those of the installed binary. Set names need the
    /// repository password from the usual sources; without it they are not
    /// offered. Install, e.g.:
    /// `stack-backup completions bash > /etc/bash_completion.d/stack-backup`.
    Completions(CompletionsArgs),
    /// Write the manual pages (one per command, section 1) into DIR.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Exit 3 naming each component whose newest good set is older
    /// (e.g. `26h`, `8d`); every tier but pre-restore counts.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Write the node_exporter textfile here (atomically)
    /// [default: `[status] prometheus-file`, when set].
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
    /// Write a self-contained HTML page here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// What to do.
    pub action: ScheduleAction,
    /// A cron file instead of systemd units.
    #[arg(long)]
    pub cron: bool,
    /// Write units into this directory (or the cron file at this path)
    /// [default: /etc/systemd/system, /etc/cron.d/stack-backup]; then
    /// systemctl is not called.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// The binary the units run [default: this one].
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
    /// Show what install or remove would write or delete; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A `schedule` action.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScheduleAction {
    /// Write the units (or cron file) and enable the timers.
    Install,
    /// Print what install writes.
    Show,
    /// Disable and delete what install wrote.
    Remove,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: Shell,
}

/// A shell with dynamic completion.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write `stack-backup.1`, `stack-backup-restore.1`, … into
    /// (created when missing).
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ImmaculateCommand {
    /// Take a new set and make it immaculate once it has been read back in full.
    Create(ImmaculateCreateArgs),
    /// List immaculate baselines with their last verification.
    List,
    /// Read immaculate baselines back in full (all, or the one named).
    Verify(ImmaculateVerifyArgs),
    /// Local repository: make the baselines' pack and snapshot files
    /// read-only again, and immutable with --chattr.
    Protect(ImmaculateProtectArgs),
}

#[derive(Debug, Args)]
pub struct ImmaculateProtectArgs {
    /// Name or id of one immaculate or sacred set [default: all of them].
    #[arg(add = ArgValueCompleter::new(complete::set_names))]
    pub name: Option<String>,
    /// Also set the immutable attribute (`chattr +i`; needs root and a
    /// filesystem that has it, as ext4, xfs, btrfs). Only root can undo
    /// it (`chattr -i`), and restic's prune then fails on those files.
    #[arg(long)]
    pub chattr: bool,
}

#[derive(Debug, Args)]
pub struct ImmaculateCreateArgs {
    /// Unique name [default: immaculate-<time>].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Also back up Redis instances whose role is `cache`.
    #[arg(long)]
    pub include_redis: bool,
}

#[derive(Debug, Args)]
pub struct ImmaculateVerifyArgs {
    /// Name or id of one immaculate set [default: all of them].
    #[arg(add = ArgValueCompleter::new(complete::immaculate_names))]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct EmergencyArgs {
    /// Required: the first of the two confirmations.
    #[arg(long)]
    pub confirm: bool,
    /// The immaculate baseline to restore [default: the newest].
    #[arg(long, value_name = "NAME", add = ArgValueCompleter::new(complete::immaculate_names))]
    pub baseline: Option<String>,
    /// The second confirmation without a terminal: the stack's name.
    #[arg(long, value_name = "STACK")]
    pub yes_i_am_sure: Option<String>,
    /// Show the plan and run the checks; change nothing (needs no confirmation).
    #[arg(long)]
    pub dry_run: bool,
    /// Restore even when the baseline's migration state does not fit the code.
    #[arg(long)]
    pub allow_migration_mismatch: bool,
    /// Roles the restore creates (missing ones the dump needs) get their
    /// password from the baseline; without it they have none.
    #[arg(long)]
    pub restore_role_passwords: bool,
}

#[derive(Debug, Args)]
pub struct SacredArgs {
    /// The milestone's name: the set becomes `sacred/NAME`, the git tag `sacred/NAME`.
    pub name: String,
    /// Pin this existing backup set instead of taking a new one.
    #[arg(long, value_name = "BACKUP", add = ArgValueCompleter::new(complete::set_names))]
    pub from: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove every lock, live ones included (only when you know no
    /// other process uses the repository).
    #[arg(long)]
    pub remove_all: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Apply the plan (without it, only show it).
    #[arg(long)]
    pub apply: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Backup set name, snapshot id (prefix) or `latest`.
    #[arg(conflicts_with = "all", add = ArgValueCompleter::new(complete::set_names))]
    pub name: Option<String>,
    /// Every backup set of the stack.
    #[arg(long)]
    pub all: bool,
    /// Also read every pack file of the repository (slow: reads everything).
    #[arg(long)]
    pub read_data: bool,
    /// Read the repository as it was at TIME (RFC 3339, or `YYYY-MM-DD
    /// HH:MM` in local time), read-only, from the S3 bucket's object
    /// versions: after the repository was deleted or overwritten.
    #[arg(long, value_name = "TIME", value_parser = as_of_parser)]
    pub as_of: Option<jiff::Timestamp>,
    /// Instead of reading sets back: check that the baselines (immaculate
    /// and sacred sets, or the one named) cannot be destroyed. On S3, a
    /// sample of their objects is attacked with the configured
    /// credentials (versioned delete, overwrite with identical bytes);
    /// locally, their files must be read-only or immutable. Exit 3 when
    /// anything is not protected.
    #[arg(long, conflicts_with_all = ["all", "read_data", "as_of"])]
    pub immutability: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Backup set name, snapshot id (prefix) or `latest`.
    #[arg(add = ArgValueCompleter::new(complete::set_names))]
    pub name: String,
    /// Directory to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// Keep device nodes, FIFOs and sockets of volumes and paths (they are
    /// left out by default; setuid/setgid bits are always cleared).
    #[arg(long)]
    pub keep_special: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The directory (with CHECKSUM.sha256).
    pub dir: PathBuf,
    /// Name of the new set [default: the exported set's name, or `imported-<time>`].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Backup set name, snapshot id (prefix) or `latest` [default: the
    /// newest set of tier `backups`].
    #[arg(add = ArgValueCompleter::new(complete::set_names))]
    pub name: Option<String>,
    /// Leave the scratch environment for inspection; prints how to reach
    /// it and how to remove it (`drill --clean`).
    #[arg(long, conflicts_with = "clean")]
    pub keep: bool,
    /// Only remove what earlier drills left (killed, or kept), and exit.
    #[arg(long)]
    pub clean: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup set name, snapshot id (prefix) or `latest`.
    #[arg(default_value = "latest", add = ArgValueCompleter::new(complete::set_names))]
    pub name: String,
    /// Only these components (`postgres`, `postgres.main`, `docker`, `paths.media`, …).
    #[arg(long, value_name = "COMPONENT", num_args = 1..)]
    pub only: Vec<String>,
    /// Flush Redis instances with role `cache` instead of restoring them.
    #[arg(long)]
    pub flush_redis: bool,
    /// Show the plan, run the checks (disk, verify, migrations), change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (for scripts).
    #[arg(long)]
    pub yes: bool,
    /// Restore even when the backup's migration state does not fit the code.
    #[arg(long)]
    pub allow_migration_mismatch: bool,
    /// Roles the restore creates (missing ones the dump needs) get their
    /// password from the set; without it they have none. Existing roles
    /// are never changed.
    #[arg(long)]
    pub restore_role_passwords: bool,
    /// Finish an interrupted restore (or emergency): to the set's state,
    /// from its journal. Rolls back and restores the set again when it had
    /// not passed its checks.
    #[arg(long, conflicts_with_all = ["abort", "only", "flush_redis"])]
    pub resume: bool,
    /// Roll back an interrupted restore (or emergency): every component to
    /// its state before, temporaries removed, from its journal.
    #[arg(long, conflicts_with_all = ["only", "flush_redis"])]
    pub abort: bool,
    /// Read the set from the repository as it was at TIME (RFC 3339, or
    /// `YYYY-MM-DD HH:MM` in local time), read-only, from the S3 bucket's
    /// object versions. Needs --no-pre-restore.
    #[arg(long, value_name = "TIME", value_parser = as_of_parser,
          requires = "no_pre_restore", conflicts_with_all = ["resume", "abort"])]
    pub as_of: Option<jiff::Timestamp>,
    /// With --as-of: accept that no pre-restore set is taken (the
    /// repository is read-only then), so what is replaced cannot be undone.
    #[arg(long, requires = "as_of")]
    pub no_pre_restore: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Unique name of the set [default: the time, e.g. 2026-11-25T18-40-02].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Also back up Redis instances whose role is `cache`.
    #[arg(long)]
    pub include_redis: bool,
    /// Only these components: `postgres`, `postgres.main`, `redis`, `docker`,
    /// `docker.image.web:latest`, `docker.volume.x`, `git`, `paths`, `paths.media`.
    #[arg(long, value_name = "COMPONENT", num_args = 1..)]
    pub only: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Unique name of the set [default: the time].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Only these databases (`postgres.main`, `redis.sessions`).
    #[arg(long, value_name = "COMPONENT", num_args = 1..)]
    pub only: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Repository for a new config: a directory, or a URL such as
    /// `s3:http://host:9000/bucket/prefix` [default: /var/backups/<stack>].
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// Stack name for a new config [default: the directory's name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Generate a strong repository password and store it (mode 0600).
    #[arg(long)]
    pub generate_password: bool,
    /// Where to store a generated password
    /// [default: the config's password-file, or ~/.config/stack-backup/<stack>.key];
    /// with --from-repository, the file holding the repository's password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// A new host: write the config from the one stored in a backup set of
    /// this repository (a directory or a URL), then run `doctor`. The
    /// password: STACK_BACKUP_PASSWORD or --password-file.
    #[arg(long, value_name = "REPO", conflicts_with_all = ["repo", "name", "generate_password"])]
    pub from_repository: Option<String>,
    /// With --from-repository: the stack (needed when the repository holds several).
    #[arg(long, value_name = "NAME", requires = "from_repository")]
    pub stack: Option<String>,
    /// With --from-repository: the set whose config is used [default: latest].
    #[arg(long, value_name = "SET", requires = "from_repository")]
    pub set: Option<String>,
    /// With --from-repository or --compose: replace an existing config file.
    #[arg(long)]
    pub force: bool,
    /// Write the config from a running Docker Compose project (its
    /// containers' labels, images, environment and mounts) or a compose
    /// FILE; no secret is copied. Without a value: the compose file here,
    /// else the only project running. The repository is created too when
    /// a password is at hand (--generate-password, STACK_BACKUP_PASSWORD).
    #[arg(long, value_name = "PROJECT|FILE", num_args = 0..=1, default_missing_value = "", conflicts_with = "from_repository")]
    pub compose: Option<String>,
    /// With --compose: print the config instead of writing it.
    #[arg(long, requires = "compose")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Exit 6 (not ready) also when a volume or bind mount of the stack's
    /// Compose project is unprotected (no component backs it up).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct RecoverPlanArgs {
    /// Backup set name, snapshot id (prefix) or `latest`.
    #[arg(default_value = "latest", add = ArgValueCompleter::new(complete::set_names))]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only sets of this tier.
    #[arg(long, value_name = "TIER", value_parser = tier_parser())]
    pub tier: Option<stack_backup_core::tiers::Tier>,
    /// Read the repository as it was at TIME (RFC 3339, or `YYYY-MM-DD
    /// HH:MM` in local time), read-only, from the S3 bucket's object
    /// versions: after the repository was deleted or overwritten.
    #[arg(long, value_name = "TIME", value_parser = as_of_parser)]
    pub as_of: Option<jiff::Timestamp>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Backup set name, snapshot id (prefix) or `latest`.
    #[arg(default_value = "latest", add = ArgValueCompleter::new(complete::set_names))]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Backup set name, snapshot id (prefix) or `latest` [default: latest,
    /// unless --tier or --all].
    #[arg(conflicts_with_all = ["tier", "all"], add = ArgValueCompleter::new(complete::set_names))]
    pub name: Option<String>,
    /// Every set of this tier.
    #[arg(long, value_name = "TIER", conflicts_with = "all", value_parser = tier_parser())]
    pub tier: Option<stack_backup_core::tiers::Tier>,
    /// Every set of the stack.
    #[arg(long)]
    pub all: bool,
    /// The target repository: a directory or a URL (`s3:http://host:9000/bucket/prefix`).
    #[arg(long, value_name = "REPO")]
    pub to: String,
    /// File holding the target's password [default: STACK_BACKUP_TO_PASSWORD,
    /// else the source repository's password].
    #[arg(long, value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Create the target repository when there is none.
    #[arg(long)]
    pub init: bool,
}

/// `--as-of TIME`, parsed by the library.
fn as_of_parser(s: &str) -> Result<jiff::Timestamp, String> {
    stack_backup_core::as_of::parse_time(s)
}

/// Tiers as clap's possible values, so help, man pages and completion list
/// them from the one definition in the library.
fn tier_parser() -> impl clap::builder::TypedValueParser<Value = stack_backup_core::tiers::Tier> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    use stack_backup_core::tiers::Tier;
    PossibleValuesParser::new(Tier::ALL.map(|t| PossibleValue::new(t.as_str())))
        .try_map(|s| s.parse::<Tier>())
}

//! `export NAME DIR` and `import DIR`

use stack_backup_core::config::{Config, Env};
use stack_backup_core::{disk, export, import, ExitCode};

use super::ctx;
use crate::cli::{ExportArgs, ImportArgs};
use crate::output::Output;

pub fn export(
    cfg: &Config,
    args: &ExportArgs,
    env: &Env,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let e = ctx(
        export::export(cfg, env, &args.name, &args.dir, args.keep_special),
        "export failed",
    )?;
    out.json(&serde_json::to_value(&e)?);
    out.say(format!(
        "exported `{}` to {}: {} file(s), {}; every artifact matched its SHA-256",
        e.set.name,
        e.dir.display(),
        e.files,
        disk::human(e.bytes)
    ));
    out.say(format!(
        "check it with: (cd {} && sha256sum -c CHECKSUM.sha256); restore by hand following its MANIFEST.md",
        e.dir.display()
    ));
    Ok(ExitCode::Success)
}

pub fn import(
    cfg: &Config,
    args: &ImportArgs,
    env: &Env,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let r = ctx(
        import::import(cfg, env, &args.dir, args.name.as_deref()),
        "import failed",
    )?;
    out.json(&serde_json::to_value(&r)?);
    for u in &r.unlisted {
        out.warn(format!("{u}: not listed in CHECKSUM.sha256, not imported"));
    }
    out.say(format!(
        "imported {} ({} layout, {} file(s) checked) as backup set `{}` ({})",
        args.dir.display(),
        r.layout,
        r.checked,
        r.set.name,
        r.set.short_id()
    ));
    Ok(ExitCode::Success)
}

//! Shared repositories: the local process lock in a private state
//! directory (no symlink games), restic-format repository locks honoured
//! both ways with stock restic and between hosts, and prune that never
//! deletes another writer's fresh packs.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A sandbox with a `paths` component of a few files and its own state
/// directory, as another host would have.
fn host(media: &Path) -> (Sandbox, PathBuf) {
    let mut sb = Sandbox::new();
    let state = sb.path().join("state");
    sb.env
        .push(("STACK_BACKUP_STATE_DIR".into(), state.display().to_string()));
    sb.write_config(
        "shop",
        &format!("[paths.media]\npath = \"{}\"\n", media.display()),
    );
    (sb, state)
}

fn media_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for i in 0..5 {
        std::fs::write(d.path().join(format!("f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    d
}

#[test]
fn a_symlink_planted_at_the_lock_path_is_never_followed() {
    let media = media_dir();
    let (sb, state) = host(media.path());
    sb.init();
    let bystander = sb.path().join("bystander");
    std::fs::write(&bystander, "precious\n").unwrap();
    let loc = stack_backup_core::repository::Location::Local(sb.repo());

    // The old path under the world-writable temp directory.
    let key = stack_backup_core::lock::RepoLock::path_in(Path::new("/x"), &loc);
    let old = std::env::temp_dir()
        .join("stack-backup-locks")
        .join(key.file_name().unwrap());
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&old);
    std::os::unix::fs::symlink(&bystander, &old).unwrap();
    // The new path in the state directory.
    let new = stack_backup_core::lock::RepoLock::path_in(&state, &loc);
    std::fs::create_dir_all(new.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&new);
    std::os::unix::fs::symlink(&bystander, &new).unwrap();

    let r = sb.run(&["backup", "--name", "one"]);
    r.expect_code(4);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&bystander).unwrap(), "precious\n");
    assert!(std::fs::symlink_metadata(&new)
        .unwrap()
        .file_type()
        .is_symlink());

    // A hard link to the bystander is refused as well.
    std::fs::remove_file(&new).unwrap();
    std::fs::hard_link(&bystander, &new).unwrap();
    let r = sb.run(&["backup", "--name", "one"]);
    r.expect_code(4);
    assert!(r.stderr.contains("hard link"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&bystander).unwrap(), "precious\n");

    // Once the plant is gone the backup runs; the old path is not used.
    std::fs::remove_file(&new).unwrap();
    sb.run(&["backup", "--name", "one"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&bystander).unwrap(), "precious\n");
    let md = std::fs::symlink_metadata(&new).unwrap();
    assert!(md.is_file());
    let _ = std::fs::remove_file(&old);

    // A state directory others can write is refused.
    let open = sb.path().join("open-state");
    std::fs::create_dir(&open).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let mut sb2 = Sandbox::new();
    sb2.env = sb.env.clone();
    sb2.env.retain(|(k, _)| k != "STACK_BACKUP_STATE_DIR");
    sb2.env
        .push(("STACK_BACKUP_STATE_DIR".into(), open.display().to_string()));
    std::fs::copy(sb.config(), sb2.config()).unwrap();
    let r = sb2.run(&["backup", "--name", "two"]);
    r.expect_code(4);
    assert!(
        r.stderr.contains("writable by group or others"),
        "{}",
        r.stderr
    );
}

//! Restores with the credentials and neighbours a real stack has: the
//! application's own database role, roles of other applications on the
//! same cluster, sessions holding locks, containers that must run for the
//! health checks. `docs/reliability.md` lists each case.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn pg_config(url: &str, extra: &str) -> String {
    format!("[postgres.main]\nurl = \"{url}\"\n{extra}\n")
}

fn set_names(sb: &Sandbox) -> Vec<(String, String)> {
    names_and_tiers(&sb.run(&["list", "--json"]))
}

/// The application's tables, and whether a table the set does not have
/// is there.
fn app_state(app: &TempDb) -> String {
    let extra: bool = pg_client(&app.name)
        .query_one("SELECT to_regclass('public.added_later') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    format!("{} extra={extra}", db_tables(&app.name))
}

/// What a migration and a bad deploy do: a table dropped, rows changed, a
/// new table.
fn wreck_app(app: &TempDb) {
    app.client()
        .batch_execute(
            "DROP TABLE orders; UPDATE customers SET name = 'wrecked';
             CREATE TABLE added_later (id int); INSERT INTO added_later VALUES (1);",
        )
        .unwrap();
}

#[test]
fn the_applications_own_role_backs_up_restores_and_rolls_back() {
    let app = TempDb::seeded(120, "aaaa1111bbbb");
    let sb = Sandbox::new();
    sb.write_config("shop", &pg_config(&app.url(), ""));
    sb.init();
    let doctor = sb.run(&["doctor"]);
    doctor.expect_code(0);
    assert!(
        doctor.stdout.contains("in place"),
        "doctor names the restore method: {}",
        doctor.stdout
    );
    let good = app_state(&app);
    sb.run(&["backup", "--name", "good"]).expect_code(0);

    // Restore: in place, as the owner, which may not create a database.
    wreck_app(&app);
    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(0);
    assert!(
        r.stdout.contains("in place") || r.stderr.contains("in place"),
        "{r:?}"
    );
    assert_eq!(app_state(&app), good, "the set's tables, and only them");

    // Emergency: the newest baseline.
    sb.run(&["immaculate", "create"]).expect_code(0);
    wreck_app(&app);
    sb.run(&["emergency", "--confirm", "--yes-i-am-sure=shop"])
        .expect_code(0);
    assert_eq!(app_state(&app), good);

    // A failing health check: the database goes back to its state before
    // the restore (the pre-restore set, restored in place the same way).
    wreck_app(&app);
    let wrecked = app_state(&app);
    sb.write_config(
        "shop",
        &format!(
            "{}\n[[health]]\nname = \"always-fails\"\nsql = \"SELECT false\"\npostgres = \"main\"\n",
            pg_config(&app.url(), "")
        ),
    );
    let r = sb.run(&["restore", "good", "--yes"]);
    expect_rolled_back_by(&r, "always-fails");
    assert_eq!(
        app_state(&app),
        wrecked,
        "the rollback put the database back"
    );
    let owner: String = pg_client("postgres")
        .query_one(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[&app.name],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        owner, app.role,
        "the same database, still the application's"
    );
    assert!(leftover_databases_of(&[&app]).is_empty());
}

#[test]
fn a_missing_privilege_is_named_before_anything_changes() {
    let app = TempDb::seeded(30, "cccc2222dddd");
    // A role that may read the data but neither owns the database nor
    // may create one.
    let reader = unique("sbread");
    pg_client(&app.name)
        .batch_execute(&format!(
            "CREATE ROLE {reader} LOGIN PASSWORD 'pw-{reader}';
             GRANT CONNECT ON DATABASE {db} TO {reader};
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader};
             GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {reader};",
            db = app.name
        ))
        .unwrap();
    let url = app.url().replacen(
        &format!("{}:pw-{}", app.role, app.role),
        &format!("{reader}:pw-{reader}"),
        1,
    );
    let sb = Sandbox::new();
    sb.write_config("shop", &pg_config(&url, ""));
    sb.init();
    let good = app_state(&app);
    let doctor = sb.run(&["doctor"]);
    doctor.expect_code(6);
    let said = format!("{}{}", doctor.stdout, doctor.stderr);
    assert!(
        said.contains("CREATEDB")
            && said.contains(&format!("ownership of database `{}`", app.name)),
        "doctor names what is missing: {said}"
    );
    assert!(
        !said.contains(&format!("pw-{reader}")),
        "password shown: {said}"
    );
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    // (No new table: this role could not read it for the pre-restore set.)
    wreck_app_without_customers(&app);
    let wrecked = app_state(&app);
    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(4);
    assert!(r.stderr.contains("CREATEDB"), "{}", r.stderr);
    assert_eq!(app_state(&app), wrecked, "nothing changed");
    assert_eq!(
        set_names(&sb),
        [("good".to_string(), "backups".to_string())],
        "refused before the pre-restore snapshot"
    );
    // Asking for a method explicitly names what it needs.
    sb.write_config("shop", &pg_config(&url, "restore-method = \"in-place\""));
    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(4);
    assert!(
        r.stderr
            .contains("restore-method = \"in-place\" needs ownership of database"),
        "{}",
        r.stderr
    );

    // With a privileged admin-url for restores only, the same role's
    // backup restores beside the live database.
    sb.write_config(
        "shop",
        &pg_config(&url, &format!("admin-url = \"{}\"", pg_admin_url())),
    );
    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(0);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("through admin-url"),
        "{r:?}"
    );
    assert_eq!(app_state(&app), good);
    assert!(leftover_databases_of(&[&app]).is_empty());

    // And a rollback of that method: the original database renamed back.
    wreck_app_without_customers(&app);
    let wrecked = app_state(&app);
    sb.write_config(
        "shop",
        &format!(
            "{}\n[[health]]\nname = \"always-fails\"\nsql = \"SELECT false\"\npostgres = \"main\"\n",
            pg_config(&url, &format!("admin-url = \"{}\"", pg_admin_url()))
        ),
    );
    let r = sb.run(&["restore", "good", "--yes"]);
    expect_rolled_back_by(&r, "always-fails");
    assert_eq!(app_state(&app), wrecked);
    assert!(leftover_databases_of(&[&app]).is_empty());
    drop(app);
    pg_client("postgres")
        .batch_execute(&format!("DROP ROLE IF EXISTS {reader}"))
        .unwrap();
}

/// A session that holds `ACCESS EXCLUSIVE` on `customers` until dropped.
struct Blocker {
    client: postgres::Client,
    pid: i32,
}

impl Blocker {
    fn hold(mut client: postgres::Client) -> Self {
        client
            .batch_execute("BEGIN; LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
            .unwrap();
        let pid = client
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        Self { client, pid }
    }

    fn alive(&mut self) -> bool {
        self.client.simple_query("SELECT 1").is_ok()
    }
}

#[test]
fn a_lock_held_by_another_session_bounds_backup_and_restore() {
    let app = TempDb::seeded(50, "eeee3333ffff");
    let sb = Sandbox::new();
    sb.write_config("shop", &pg_config(&app.url(), "lock-timeout-seconds = 2"));
    sb.init();
    let good = app_state(&app);
    sb.run(&["backup", "--name", "good"]).expect_code(0);

    wreck_app_without_customers(&app);
    let before = app_state(&app);

    // Someone else's session (a superuser's migration): the backup gives
    // up within the timeout and names it.
    let mut other = Blocker::hold(pg_client(&app.name));
    let took = ends_naming(&sb, &["backup", "--name", "blocked"], &other, 30);
    eprintln!("blocked backup ended after {took:?} (lock timeout 2 s)");

    // A restore cannot end it either (not the role's session): it ends in
    // time, names it, and changes nothing.
    let took = ends_naming(&sb, &["restore", "good", "--yes"], &other, 60);
    eprintln!("restore blocked by a foreign session ended after {took:?}");
    assert!(other.alive());
    drop(other);
    assert_eq!(app_state(&app), before, "nothing changed");

    // The application's own idle transaction on the database being
    // replaced: the restore ends it and goes on.
    let mut own = Blocker::hold(app.client());
    let started = Instant::now();
    let r = sb.run(&["restore", "good", "--yes"]);
    let took = started.elapsed();
    r.expect_code(0);
    assert!(took < Duration::from_secs(60), "restore waited {took:?}");
    eprintln!("restore that ended the application's blocking session took {took:?}");
    assert!(!own.alive(), "the blocking session was ended");
    assert_eq!(app_state(&app), good);
}

/// Runs `args`, which must exit 7 within `seconds`, naming `blocker`'s pid;
/// returns how long it took.
fn ends_naming(sb: &Sandbox, args: &[&str], blocker: &Blocker, seconds: u64) -> Duration {
    let started = Instant::now();
    let r = sb.run(args);
    let took = started.elapsed();
    r.expect_code(7);
    assert!(
        r.stderr.contains(&format!("pid {}", blocker.pid)),
        "{}",
        r.stderr
    );
    assert!(
        took < Duration::from_secs(seconds),
        "{args:?} waited {took:?}"
    );
    took
}

/// Changes that leave `customers` alone (a blocker holds it).
fn wreck_app_without_customers(app: &TempDb) {
    app.client()
        .batch_execute(
            "DELETE FROM orders WHERE id % 2 = 0; UPDATE alembic_version SET version_num = 'wrecked';",
        )
        .unwrap();
}

/// `rolname → (password hash, attributes)` of the roles named `prefix*`
/// and of the test superuser.
fn roles_of(prefix: &str) -> Vec<String> {
    pg_client("postgres")
        .query(
            "SELECT rolname || ' ' || coalesce(rolpassword, '-') || ' ' || rolcanlogin::text || rolcreatedb::text \
             FROM pg_authid WHERE starts_with(rolname, $1) OR rolname = current_user ORDER BY 1",
            &[&prefix],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The line of `role` in a [`roles_of`] list.
fn role_line(roles: &[String], role: &str) -> String {
    roles
        .iter()
        .find(|r| r.starts_with(&format!("{role} ")))
        .unwrap()
        .clone()
}

#[test]
fn a_restore_changes_no_existing_role_and_brings_back_only_what_the_dump_needs() {
    let db = TempDb::seeded(20, "1234abcd5678");
    let p = unique("sbrole");
    let (reader, other, gone) = (
        format!("{p}_reader"),
        format!("{p}_other"),
        format!("{p}_gone"),
    );
    pg_client("postgres")
        .batch_execute(&format!(
            "CREATE ROLE {reader} LOGIN PASSWORD 'reader-pw';
             CREATE ROLE {other} LOGIN PASSWORD 'other-old';
             CREATE ROLE {gone} LOGIN PASSWORD 'gone-pw';"
        ))
        .unwrap();
    sql(&db, &format!("GRANT SELECT ON customers TO {reader}"));
    // The superuser's URL: its backup holds every role with its password
    // hash, which the previous restore ran whole.
    let sb = Sandbox::new();
    sb.write_config("shop", &pg_config(&db.superuser_url(), ""));
    sb.init();
    let reader_at_backup = role_line(&roles_of(&reader), &reader);
    sb.run(&["backup", "--name", "good"]).expect_code(0);

    // After the backup: another application's password rotated, an
    // unrelated role dropped, the dump's reader role dropped.
    sql(&db, &format!("REVOKE ALL ON customers FROM {reader}"));
    pg_client("postgres")
        .batch_execute(&format!(
            "ALTER ROLE {other} PASSWORD 'other-new';
             DROP ROLE {gone};"
        ))
        .unwrap();
    pg_client("postgres")
        .batch_execute(&format!("DROP ROLE {reader}"))
        .unwrap();
    let before = roles_of(&p);
    // A neighbour's session on another database of the cluster: a restore
    // (here as a superuser, which may end any session) ends only the
    // sessions of the database it replaces.
    let neighbour_db = TempDb::new();
    let mut neighbour = neighbour_db.client();
    neighbour.batch_execute("BEGIN").unwrap();
    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(0);
    assert!(
        neighbour.simple_query("SELECT 1").is_ok(),
        "a session on another database was ended"
    );
    let after = roles_of(&p);
    let changed: Vec<&String> = after.iter().filter(|r| !before.contains(r)).collect();
    assert_eq!(changed.len(), 1, "only the reader role is new: {changed:?}");
    assert!(
        changed[0].starts_with(&format!("{reader} - ")),
        "created without a password: {changed:?}"
    );
    assert!(
        before.iter().all(|r| after.contains(r)),
        "an existing role changed: {before:?} → {after:?}"
    );
    assert!(!after.iter().any(|r| r.starts_with(&gone)), "{after:?}");
    let granted: bool = pg_client(&db.name)
        .query_one(
            "SELECT has_table_privilege($1, 'public.customers', 'SELECT')",
            &[&reader],
        )
        .unwrap()
        .get(0);
    assert!(granted, "the dump's grant came back with its role");

    // With --restore-role-passwords the role the restore creates gets the
    // hash it had at backup time; the others still do not change.
    sql(&db, &format!("REVOKE ALL ON customers FROM {reader}"));
    pg_client("postgres")
        .batch_execute(&format!("DROP ROLE {reader}"))
        .unwrap();
    sb.run(&["restore", "good", "--yes", "--restore-role-passwords"])
        .expect_code(0);
    let again = roles_of(&p);
    assert!(again.contains(&reader_at_backup), "{again:?}");
    let other_before = role_line(&before, &other);
    assert!(again.contains(&other_before), "{again:?}");
    drop(db);
    pg_client("postgres")
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {reader}; DROP ROLE IF EXISTS {other};"
        ))
        .unwrap();
}

#[test]
fn containers_run_again_before_the_health_checks() {
    let vol = TempVolume::new();
    std::fs::write(vol.mountpoint().join("a.txt"), "original").unwrap();
    let container = unique("sbt-c");
    docker(&[
        "run",
        "-d",
        "--name",
        &container,
        "-v",
        &format!("{}:/data", vol.name),
        &base_image(),
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1; done",
    ])
    .expect_code(0);
    let _gone = Defer(|| {
        docker(&["rm", "-f", &container]);
    });
    let running = || {
        docker(&["inspect", "--format", "{{.State.Running}}", &container])
            .stdout
            .trim()
            == "true"
    };
    let sb = Sandbox::new();
    let health = |extra: &str| {
        format!(
            "[docker]\nvolumes = [\"{}\"]\n\n[[health]]\nname = \"app reads its volume\"\ncommand = \"docker exec {container} cat /data/a.txt\"\n{extra}",
            vol.name
        )
    };
    sb.write_config("shop", &health(""));
    sb.init();
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    std::fs::write(vol.mountpoint().join("a.txt"), "changed").unwrap();
    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(0);
    assert!(r.stderr.contains("app reads its volume"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(vol.mountpoint().join("a.txt")).unwrap(),
        "original"
    );
    assert!(running());

    // A failing check still rolls back, and the container runs on the old
    // content.
    std::fs::write(vol.mountpoint().join("a.txt"), "changed again").unwrap();
    sb.write_config(
        "shop",
        &health("\n[[health]]\nname = \"fails\"\ncommand = \"false\"\n"),
    );
    let r = sb.run(&["restore", "good", "--yes"]);
    expect_rolled_back_by(&r, "fails");
    assert!(running(), "the container runs again after the rollback");
    let seen = docker(&["exec", &container, "cat", "/data/a.txt"]);
    assert_eq!(seen.stdout, "changed again");
}

/// Runs a closure on drop (clean-up that must run when an assert fails).
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

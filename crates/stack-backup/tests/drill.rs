//! `drill`: a set restored into scratch and checked there, against the
//! real services; the live stack's digests are compared before and after
//! every drill.

mod common;

use std::path::PathBuf;

use common::*;

struct Stack {
    sb: Sandbox,
    db1: TempDb,
    db2: TempDb,
    redis: RedisServer,
    img: TempImage,
    /// In the set, not in the engine at drill time: loaded by the drill.
    gone: TempImage,
    vol: TempVolume,
    media: PathBuf,
    code: PathBuf,
}

fn config(s: &Stack, extra_analytics: &str) -> String {
    format!(
        r#"
[postgres.main]
url = "{}"
admin-url = "{admin}"

[postgres.analytics]
url = "{}"
admin-url = "{admin}"
{extra_analytics}

[redis.sessions]
url = "{}"
role = "data"

[docker]
images = ["{}", "{}"]
volumes = ["{}"]

[paths.media]
path = "{}"

[git]
path = "{}"

[[drill.check]]
name = "smoke"
command = "{}"

[[drill.check]]
name = "customers"
sql = "SELECT count(*) = 200 FROM customers"
postgres = "main"
"#,
        s.db1.url(),
        s.db2.url(),
        s.redis.url(),
        s.img.reference,
        s.gone.reference,
        s.vol.name,
        s.media.display(),
        s.code.display(),
        s.sb.path().join("smoke.sh").display(),
        admin = pg_admin_url(),
    )
}

/// The stack with a set `good`; the second image removed from the engine
/// afterwards (the drill must load it without bringing its tag back).
fn stack() -> Stack {
    let sb = Sandbox::new();
    let media = sb.path().join("media");
    let (db1, db2, redis, img, vol) = restore_fixture(&media);
    let code = sb.path().join("code");
    git_repo(&code);
    // The application's own smoke test, run against the scratch resources.
    std::fs::write(
        sb.path().join("smoke.sh"),
        format!(
            "#!/bin/sh\nset -e\nout={}\nenv | grep '^SB_DRILL_' | sort > $out\ncat \"$SB_DRILL_DIR_MEDIA/one.jpg\" >> $out; echo >> $out\nredis-cli -s \"$SB_DRILL_REDIS_SOCKET\" dbsize >> $out\npsql \"$SB_DRILL_PG_URL_MAIN\" -Atc 'SELECT count(*) FROM customers' >> $out\necho \"password:${{STACK_BACKUP_PASSWORD:-unset}}\" >> $out\n",
            sb.path().join("smoke.out").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        sb.path().join("smoke.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let s = Stack {
        sb,
        db1,
        db2,
        redis,
        img,
        // Content of its own: the same bytes in another test running at
        // the same time make the same image ID, which that test's tag keeps
        // in the engine, so this drill would find it present.
        gone: TempImage::build(&format!("loaded by the drill {}", unique("gone"))),
        vol,
        media,
        code,
    };
    s.sb.write_config("shop", &config(&s, ""));
    s.sb.init();
    s.sb.run(&["backup", "--name", "good"]).expect_code(0);
    docker(&["image", "rm", "-f", &s.gone.reference]).expect_code(0);
    s
}

/// The live stack, as digests: every table, every Redis key and value,
/// the image IDs and every tag of the engine, the volume's and the
/// directory's files, the databases of the server.
fn live(s: &Stack) -> Vec<String> {
    let mut dbs: Vec<String> = pg_client("postgres")
        .query(
            "SELECT datname FROM pg_database WHERE datname = ANY($1)",
            &[&vec![s.db1.name.clone(), s.db2.name.clone()]],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    dbs.sort();
    // Roles are cluster-wide: a drill on the live server must create none.
    // The stack's own roles and any named after its databases (the only
    // ones a dump of them can refer to; other tests' roles come and go).
    let mut roles: Vec<String> = pg_client("postgres")
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1) \
             OR starts_with(rolname, $2) OR starts_with(rolname, $3)",
            &[
                &vec![s.db1.role.clone(), s.db2.role.clone()],
                &s.db1.name,
                &s.db2.name,
            ],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    roles.sort();
    vec![
        db_tables(&s.db1.name),
        db_tables(&s.db2.name),
        redis_state(&s.redis),
        docker(&[
            "images",
            "--no-trunc",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
        ])
        .stdout
        .lines()
        .filter(|l| l.starts_with(&s.img.reference) || l.starts_with(&s.gone.reference))
        .map(str::to_string)
        .collect::<Vec<_>>()
        .join(";"),
        dir_state(&s.vol.mountpoint(), |p| std::fs::read_to_string(p).unwrap()),
        dir_state(&s.media, |p| std::fs::read_to_string(p).unwrap()),
        dbs.join(","),
        roles.join(","),
    ]
}

/// What a drill `id` may have left: scratch databases, its directory,
/// image tags.
fn leftovers(s: &Stack, id: &str) -> Vec<String> {
    let mut out: Vec<String> = pg_client("postgres")
        .query(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
            &[&format!("sbdrill_{id}")],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let dir = s.sb.path().join("state/drill").join(id);
    if dir.exists() {
        out.push(dir.display().to_string());
    }
    out.extend(
        docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "stack-backup-drill",
        ])
        .stdout
        .lines()
        .filter(|t| t.starts_with(&format!("stack-backup-drill:{id}-")))
        .map(str::to_string),
    );
    out
}

/// The report of a drill run with `--json` (a failed one prints the error
/// as a second JSON value after it).
fn report_of(r: &Run) -> serde_json::Value {
    serde_json::Deserializer::from_str(&r.stdout)
        .into_iter::<serde_json::Value>()
        .next()
        .unwrap_or_else(|| panic!("no JSON: {r:?}"))
        .unwrap()
}

fn component<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == id)
        .unwrap_or_else(|| panic!("{id} not in {report}"))
}

/// The pid of the temporary redis-server, from the report.
fn redis_pid(report: &serde_json::Value) -> u32 {
    let line = component(report, "redis.sessions")["restored"]
        .as_str()
        .unwrap();
    line.split("pid ")
        .nth(1)
        .and_then(|r| r.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line}"))
}

fn is_redis_server(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("redis-server"))
}

#[test]
fn a_good_set_passes_leaves_nothing_behind_and_the_live_stack_is_untouched() {
    let s = stack();
    let before = live(&s);
    let r = s.sb.run(&["--json", "drill"]);
    r.expect_code(0);
    let report = r.json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["set"], "good");
    let all = report["components"].as_array().unwrap();
    assert_eq!(all.len(), 8, "{report}");
    assert!(all.iter().all(|c| c["state"] == "ok"), "{report}");
    let img = format!("docker.image.{}", s.gone.reference);
    assert!(
        component(&report, &img)["checked"]
            .as_str()
            .unwrap()
            .contains("(loaded)"),
        "{report}"
    );
    assert_eq!(component(&report, "git")["state"], "ok");
    assert!(component(&report, "postgres.main")["checked"]
        .as_str()
        .unwrap()
        .contains("every table read"));
    assert!(report["rto_seconds"].as_f64().unwrap() > 0.0);
    // The checks ran against the scratch resources, and saw the set.
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["ok"] == true), "{report}");
    let id = report["id"].as_str().unwrap().to_string();
    let seen = std::fs::read_to_string(s.sb.path().join("smoke.out")).unwrap();
    assert!(
        seen.contains(&format!("SB_DRILL_PG_URL_MAIN=postgres://{}", s.db1.role)),
        "{seen}"
    );
    assert!(seen.contains(&format!("/sbdrill_{id}_main")), "{seen}");
    // Checks get the allow-listed environment: no repository password.
    assert!(seen.contains("password:unset"), "{seen}");
    assert!(
        seen.contains(&format!(
            "SB_DRILL_DIR_MEDIA={}",
            s.sb.path().join("state/drill").join(&id).display()
        )),
        "{seen}"
    );
    assert!(seen.contains("SB_DRILL_REDIS_SOCKET="), "{seen}");
    assert!(seen.contains("SB_DRILL_DIR_"), "{seen}");
    // one.jpg's content, 30 keys, 200 customers.
    assert!(seen.contains("\none\n30\n200\n"), "{seen}");
    // Nothing left, nothing live changed.
    assert_eq!(leftovers(&s, &id), Vec::<String>::new());
    assert!(!is_redis_server(redis_pid(&report)));
    assert_eq!(live(&s), before, "the drill changed the live stack");
    assert!(
        docker(&["image", "inspect", &s.gone.reference]).code != 0,
        "loading the image brought its tag back"
    );
    // The report is in the repository, never a set, and status shows it.
    let list = s.sb.run(&["--json", "list"]);
    assert_eq!(
        names_and_tiers(&list),
        vec![("good".into(), "backups".into())]
    );
    let snaps = restic(
        &s.sb.repo(),
        &["snapshots", "--json", "--tag", "stack-backup-drill"],
    );
    let snaps = snaps.json();
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    let st = s.sb.run(&["--json", "status"]);
    st.expect_code(0);
    let st = st.json();
    assert_eq!(st["last_drill"]["set"], "good", "{st}");
    assert_eq!(st["last_drill"]["ok"], true);
    // Another machine (no local record) reads it from the repository.
    std::fs::remove_file(s.sb.path().join("state/drill-shop.json")).unwrap();
    let st = s.sb.run(&["--json", "status"]).json();
    assert_eq!(st["last_drill"]["set"], "good", "{st}");
    // Prune takes a set's drill reports with it.
    s.sb.write_config(
        "shop",
        &format!("{}\n[retention.backups]\nkeep-last = 1\n", config(&s, "")),
    );
    s.sb.run(&["backup", "--name", "newer", "--only", "postgres"])
        .expect_code(0);
    s.sb.run(&["prune", "--apply"]).expect_code(0);
    let snaps = restic(
        &s.sb.repo(),
        &["snapshots", "--json", "--tag", "stack-backup-drill"],
    );
    assert_eq!(snaps.json().as_array().unwrap().len(), 0);
}

#[test]
fn damaged_sets_fail_the_drill_naming_the_component() {
    let s = stack();
    // The analytics database moves (a sequence), so that the next backup
    // dumps it through the wrapper rather than reuse `good`'s dump
    // (decision 0048).
    sql(&s.db2, "SELECT nextval('customers_id_seq')");
    let before = live(&s);
    let real = pg_bin_dir();
    // A dump pg_restore rejects: pg_dump's output cut short at backup time.
    let w = Wrappers::new();
    for tool in ["pg_dumpall", "psql"] {
        w.script(tool, &format!("exec {}/{tool} \"$@\"", real.display()));
    }
    w.script(
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {0}/pg_dump --version; fi\n{0}/pg_dump \"$@\" | head -c 3000",
            real.display()
        ),
    );
    w.script(
        "pg_restore",
        &format!("exec {}/pg_restore \"$@\"", real.display()),
    );
    s.sb.write_config(
        "shop",
        &config(&s, &format!("bin-dir = \"{}\"", w.path().display())),
    );
    s.sb.run(&["backup", "--name", "cut", "--only", "postgres"])
        .expect_code(0);
    let r = s.sb.run(&["drill", "cut"]);
    r.expect_code(3);
    assert!(r.stderr.contains("postgres.analytics"), "{}", r.stderr);
    assert!(r.stderr.contains("pg_restore"), "{}", r.stderr);
    let error = r.stderr.lines().last().unwrap();
    assert!(
        error.contains("postgres.analytics: pg_restore failed"),
        "{error}"
    );
    assert!(!error.contains("postgres.main"), "{error}");

    // Rows that differ from the manifest: a pg_restore that loses some.
    w.script(
        "pg_restore",
        &format!(
            "if [ \"$1\" = --version ]; then exec {0}/pg_restore --version; fi\n{0}/pg_restore \"$@\" || exit $?\nfor a in \"$@\"; do case $a in --dbname=*) db=${{a#--dbname=}};; esac; done\n{0}/psql -q -d \"$db\" -c 'DELETE FROM orders WHERE id <= 7'\n",
            real.display()
        ),
    );
    let r = s.sb.run(&["--json", "drill", "good"]);
    r.expect_code(3);
    let report = report_of(&r);
    assert_eq!(report["ok"], false);
    let a = component(&report, "postgres.analytics");
    assert_eq!(a["state"], "failed");
    assert!(
        a["checked"]
            .as_str()
            .unwrap()
            .contains("public.orders: 113 (expected 120)"),
        "{report}"
    );
    assert_eq!(component(&report, "postgres.main")["state"], "ok");
    let st = s.sb.run(&["--json", "status"]).json();
    assert_eq!(st["last_drill"]["ok"], false, "{st}");

    // A drill check with neither `sql` nor `command` would test the live
    // app: the config is rejected before anything runs.
    s.sb.write_config(
        "shop",
        &format!("{}\n[[drill.check]]\nname = \"live\"\n", config(&s, "")),
    );
    let r = s.sb.run(&["drill", "good"]);
    r.expect_code(2);
    assert!(r.stderr.contains("drill.check[2]"), "{}", r.stderr);
    assert!(r.stderr.contains("exactly one of `sql`"), "{}", r.stderr);

    // Less room than `min-free-space` would leave: refused before anything
    // is restored (a full disk would take the live server down).
    s.sb.write_config("shop", &config(&s, ""));
    let text = std::fs::read_to_string(s.sb.config()).unwrap();
    std::fs::write(
        s.sb.config(),
        text.replace("min-free-space = \"1MiB\"", "min-free-space = \"1000TiB\""),
    )
    .unwrap();
    let r = s.sb.run(&["drill", "good"]);
    r.expect_code(4);
    assert!(r.stderr.contains("not enough free space"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_dir(s.sb.path().join("state/drill"))
            .unwrap()
            .count(),
        0,
        "a refused drill left its marker"
    );

    // Without admin-url the application's role may not create the scratch
    // database: refused, naming the drill's own setting; never advising
    // `in-place`, which a scratch database cannot use.
    let no_admin = config(&s, "").replace(&format!("admin-url = \"{}\"\n", pg_admin_url()), "");
    assert!(!no_admin.contains("admin-url"));
    s.sb.write_config("shop", &no_admin);
    let r = s.sb.run(&["drill", "good"]);
    r.expect_code(4);
    assert!(r.stderr.contains("[drill] postgres-url"), "{}", r.stderr);
    assert!(!r.stderr.contains("in-place"), "{}", r.stderr);

    // `[drill] postgres-url`: a role that may create databases but is no
    // member of the stack's roles (the dump's owners): the drill passes,
    // its SQL check runs on the scratch copy.
    let role = format!("sbdrillrole_{}", std::process::id());
    let mut admin = pg_client("postgres");
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN CREATEDB NOCREATEROLE NOSUPERUSER PASSWORD 'drill-pw'"
        ))
        .unwrap();
    let pw = s.sb.path().join("drill.password");
    std::fs::write(&pw, "drill-pw\n").unwrap();
    let server = pg_admin_url();
    let at = server
        .split_once('@')
        .unwrap()
        .1
        .rsplit_once('/')
        .unwrap()
        .0;
    s.sb.write_config(
        "shop",
        &format!(
            "[drill]\npostgres-url = \"postgres://{role}@{at}/postgres\"\npostgres-password-file = \"{}\"\n{no_admin}",
            pw.display()
        ),
    );
    let r = s.sb.run(&["--json", "drill", "good"]);
    let report = report_of(&r);
    r.expect_code(0);
    let pg = component(&report, "postgres.main");
    assert_eq!(pg["state"], "ok", "{report}");
    assert!(
        pg["restored"]
            .as_str()
            .unwrap()
            .contains("without the dump's owners"),
        "{report}"
    );
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{report}"
    );
    assert!(!r.stdout.contains("drill-pw") && !r.stderr.contains("drill-pw"));
    assert_eq!(
        leftovers(&s, report["id"].as_str().unwrap()),
        Vec::<String>::new()
    );
    admin.batch_execute(&format!("DROP ROLE {role}")).unwrap();

    // A corrupted pack: the verify names what it holds.
    s.sb.write_config("shop", &config(&s, ""));
    let repo = common::backend::Repo::Local { path: s.sb.repo() };
    repo.corrupt_largest_pack();
    let r = s.sb.run(&["--json", "drill", "good"]);
    r.expect_code(3);
    let report = report_of(&r);
    let failed: Vec<&serde_json::Value> = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "failed")
        .collect();
    assert!(!failed.is_empty(), "{report}");
    assert!(
        failed
            .iter()
            .all(|c| c["checked"].as_str().unwrap().starts_with("verify: ")),
        "{report}"
    );
    assert_eq!(
        leftovers(&s, report["id"].as_str().unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(live(&s), before, "a failed drill changed the live stack");
}

#[test]
fn a_killed_drill_is_cleaned_up_by_the_next() {
    let s = stack();
    let before = live(&s);
    let mut cmd = s.sb.command(bin(), s.sb.path(), None);
    cmd.arg("drill")
        .env("FAILPOINTS", "drill-checked=return(kill)");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), None, "not killed: {out:?}");
    let markers: Vec<String> = std::fs::read_dir(s.sb.path().join("state/drill"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    let id = &markers[0];
    let left = leftovers(&s, id);
    assert!(
        left.iter()
            .any(|l| l.starts_with(&format!("sbdrill_{id}_main"))),
        "{left:?}"
    );
    assert!(
        left.iter().any(|l| l.starts_with("stack-backup-drill:")),
        "{left:?}"
    );
    let r = s.sb.run(&["--json", "drill"]);
    r.expect_code(0);
    let report = r.json();
    let cleaned = report["cleaned"].as_array().unwrap();
    assert!(cleaned.len() >= 4, "{report}");
    assert_eq!(leftovers(&s, id), Vec::<String>::new());
    assert_eq!(
        leftovers(&s, report["id"].as_str().unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(live(&s), before);
}

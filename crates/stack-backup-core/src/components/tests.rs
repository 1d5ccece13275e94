//! The pure parts of the component layer: which components a config
//! describes, what a restore plan says it will do, and the export layout.
//! No service is needed.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::config::Config;
use crate::manifest::{ArtifactRecord, Manifest};
use crate::tiers::Tier;

const CONFIG: &str = r#"
[stack]
name = "shop"

[repository]
path = "/var/backups/shop"

[postgres.main]
url = "postgres://shop:s3cret@127.0.0.1:5432/shop"

[redis.cache]
url = "redis://:hush@127.0.0.1:6379/0"
role = "cache"

[redis.jobs]
url = "redis://127.0.0.1:6379/1"
role = "data"

[docker]
images = ["shop-web:latest", "registry.local:5000/worker:v2"]

[git]
path = "."

[paths.media]
path = "/srv/shop/media"
"#;

fn cfg() -> Config {
    Config::parse(CONFIG, Path::new("stack-backup.toml")).expect("config parses")
}

fn id(text: &str) -> ComponentId {
    ComponentId::parse(text).unwrap()
}

fn records() -> BTreeMap<ComponentId, Record> {
    let pg = postgres::PostgresRecord {
        database: "shop".into(),
        host: "127.0.0.1".into(),
        port: 5432,
        user: "shop".into(),
        server_version: "15.18".into(),
        server_major: 15,
        pg_dump_version: "pg_dump (PostgreSQL) 15.18".into(),
        dump: "postgres/main/shop.dump".into(),
        roles: Some("postgres/main/globals.sql".into()),
        roles_note: None,
        roles_used: Some(vec!["shop".into()]),
        migrations: Vec::new(),
        row_counts: [("public.a".to_string(), 3), ("public.b".to_string(), 4)].into(),
        mark: None,
    };
    let redis = |n: &str| redis::RedisRecord {
        url: "redis://127.0.0.1:6379/0".into(),
        version: "7.0.15".into(),
        role: "cache".into(),
        rdb: format!("redis/{n}/dump.rdb"),
        keys: 12,
        lastsave: 0,
    };
    let image = docker::ImageRecord {
        reference: "shop-web:latest".into(),
        id: "sha256:0123456789abcdef0123".into(),
        repo_digests: Vec::new(),
        tags: vec!["shop-web:latest".into()],
        archive: "docker/images/shop-web_latest.tar".into(),
        reused: false,
        group: Vec::new(),
    };
    [
        ("postgres.main", Record::Postgres(pg)),
        ("redis.cache", Record::Redis(redis("cache"))),
        ("redis.gone", Record::Redis(redis("gone"))),
        ("docker.image.shop-web:latest", Record::DockerImage(image)),
        (
            "paths.media",
            Record::Path(tree::TreeRecord::new(
                "/srv/shop/media".into(),
                "paths/media".into(),
            )),
        ),
        (
            "git",
            Record::Git(git::GitRecord {
                path: ".".into(),
                files: vec!["git/HEAD_COMMIT".into()],
            }),
        ),
    ]
    .into_iter()
    .map(|(i, r)| (id(i), r))
    .collect()
}

fn manifest(components: BTreeMap<ComponentId, Record>) -> Manifest {
    Manifest {
        schema: crate::manifest::SCHEMA,
        tool: "stack-backup test".into(),
        stack: "shop".into(),
        name: "n".into(),
        tier: Tier::Backups,
        created: "2026-11-29T00:00:00Z".into(),
        host: "h".into(),
        parent: None,
        git: None,
        components,
        artifacts: Vec::<ArtifactRecord>::new(),
        restore_command: "stack-backup restore n".into(),
        imported: None,
    }
}

#[test]
fn a_config_describes_its_components_in_registry_order() {
    let cfg = cfg();
    let stack = Stack::resolve(&cfg).expect("no compose project: nothing to ask");
    let ids: Vec<String> = stack.components().iter().map(ToString::to_string).collect();
    assert_eq!(
        ids,
        [
            "postgres.main",
            "redis.cache",
            "redis.jobs",
            "docker.image.registry.local:5000/worker:v2",
            "docker.image.shop-web:latest",
            "git",
            "paths.media",
        ]
    );
    let databases: Vec<String> = stack
        .components()
        .into_iter()
        .filter(|c| c.kind().is_database())
        .map(|c| c.to_string())
        .collect();
    assert_eq!(databases, ["postgres.main", "redis.cache", "redis.jobs"]);
}

/// (component, what is done to it, or why it is left).
type Lines = Vec<(String, String)>;

/// What a restore of `records` would do, as shown to the user, and what
/// it leaves.
fn plan(opts: &RestoreOptions) -> (Lines, Lines) {
    let cfg = cfg();
    let mut actions = Vec::new();
    let mut skipped = Vec::new();
    let records = records();
    for (id, r) in &records {
        match id.kind().restorer(&cfg, opts, id, r).unwrap() {
            Restore::Into(r) => actions.push((r.id().to_string(), r.action())),
            Restore::Skip(why) => skipped.push((id.to_string(), why)),
        }
    }
    let in_set: Vec<ComponentId> = records.keys().cloned().collect();
    for k in KINDS {
        for r in k.extra_restorers(&cfg, opts, &in_set).unwrap() {
            actions.push((r.id().to_string(), r.action()));
        }
    }
    (actions, skipped)
}

#[test]
fn a_restore_plan_names_every_target_and_says_what_it_leaves() {
    let (actions, skipped) = plan(&RestoreOptions::default());
    let action = |c: &str| {
        actions
            .iter()
            .find(|(i, _)| i == c)
            .map(|(_, a)| a.as_str())
            .unwrap_or_else(|| panic!("{c} not planned: {actions:?}"))
    };
    // The method follows (it depends on the server's privileges, which a
    // unit test has none of: here it says why it cannot restore).
    let pg = action("postgres.main");
    assert!(
        pg.starts_with("replace database `shop` (postgres://shop:***@127.0.0.1:5432/shop) with the dump of `shop` (2 tables): "),
        "{pg}"
    );
    assert_eq!(
        action("redis.cache"),
        "replace the keys of database 0 of Redis redis://:***@127.0.0.1:6379/0 with the RDB's database 0 (12 keys); other databases untouched"
    );
    assert_eq!(
        action("docker.image.shop-web:latest"),
        "load image `shop-web:latest` (ID 0123456789ab) unless present, and tag it"
    );
    assert_eq!(action("paths.media"), "replace directory /srv/shop/media");
    assert_eq!(
        skipped,
        [
            (
                "git".to_string(),
                "code is not restored; check out the recorded commit yourself".to_string()
            ),
            ("redis.gone".to_string(), "not in the config".to_string()),
        ]
    );
    for (_, a) in &actions {
        assert!(
            !a.contains("s3cret") && !a.contains("hush"),
            "secret shown: {a}"
        );
    }
}

#[test]
fn flush_redis_flushes_cache_instances_in_the_set_or_not() {
    let (actions, _) = plan(&RestoreOptions {
        flush_redis: true,
        ..RestoreOptions::default()
    });
    let flushes: Vec<&str> = actions
        .iter()
        .filter(|(_, a)| a.starts_with("flush Redis"))
        .map(|(i, _)| i.as_str())
        .collect();
    // `redis.cache` is in the set and flushed instead of restored;
    // `redis.jobs` (role data) is neither in the set nor a cache.
    assert_eq!(flushes, ["redis.cache"]);
    assert_eq!(
        actions.iter().filter(|(i, _)| i == "redis.cache").count(),
        1
    );
}

#[test]
fn export_paths_follow_the_kind() {
    let mut records = records();
    let m = manifest(records.clone());
    let path = |c: &str, p: &str| crate::export::export_path(&m, p, c);
    assert_eq!(
        path("postgres.main", "postgres/main/shop.dump"),
        ("database/main.dump".into(), false)
    );
    assert_eq!(
        path("postgres.main", "postgres/main/globals.sql"),
        ("database/main.globals.sql".into(), false)
    );
    assert_eq!(
        path("redis.cache", "redis/cache/dump.rdb"),
        ("redis/cache.rdb".into(), false),
        "two Redis in the set: one file each"
    );
    assert_eq!(
        path(
            "docker.image.shop-web:latest",
            "docker/images/shop-web_latest.tar"
        ),
        ("docker/images/shop-web_latest.tar.gz".into(), true)
    );
    assert_eq!(
        path("git", "git/HEAD_COMMIT"),
        ("git/HEAD_COMMIT".into(), false)
    );
    assert_eq!(
        path("legacy", "MANIFEST.md"),
        ("legacy/MANIFEST.md".into(), false)
    );
    assert_eq!(path("legacy", "db.sql.gz"), ("db.sql.gz".into(), false));
    records.remove(&id("redis.gone"));
    let m = manifest(records);
    assert_eq!(
        crate::export::export_path(&m, "redis/cache/dump.rdb", "redis.cache"),
        ("redis/dump.rdb".into(), false),
        "one Redis: the name a person expects"
    );
}

#[test]
fn manifests_keep_their_format_and_a_mismatched_record_is_refused() {
    let m = manifest(records());
    let json = serde_json::to_string(&m).unwrap();
    for kind in [
        "\"kind\":\"postgres\"",
        "\"kind\":\"docker-image\"",
        "\"kind\":\"path\"",
        "\"kind\":\"git\"",
    ] {
        assert!(json.contains(kind), "{kind} missing from {json}");
    }
    let back: Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    assert!(check_manifest(&m).is_ok());
    // A tampered manifest: a directory record under a database's id
    // parses (it is valid JSON of a known kind) and is refused.
    let mut tampered = m.clone();
    tampered.components.insert(
        id("postgres.main"),
        Record::Path(tree::TreeRecord::new("/etc".into(), "x".into())),
    );
    let t: Manifest = serde_json::from_str(&serde_json::to_string(&tampered).unwrap()).unwrap();
    let err = check_manifest(&t).unwrap_err();
    assert!(
        err.contains("postgres.main") && err.contains("paths"),
        "{err}"
    );
    let unknown = json.replacen("\"git\":{", "\"oracle.main\":{", 1);
    let err = serde_json::from_str::<Manifest>(&unknown).unwrap_err();
    assert!(err.to_string().contains("not a component id"), "{err}");
}

/// A `rows-v1` record of database `shop` with tables `a` and `b`.
fn rows_record() -> mysql::MysqlRecord {
    let file = |t: &str| mysql::rows::RowsFile {
        table: t.into(),
        path: mysql::rows::rows_path("app", "shop", t),
        columns: vec!["id".into()],
    };
    mysql::MysqlRecord {
        database: "shop".into(),
        host: "127.0.0.1".into(),
        port: 3306,
        user: "app".into(),
        server_version: "10.11.19-MariaDB".into(),
        dump_version: "mariadb-dump 10.19".into(),
        dump: mysql::rows::schema_path("app", "shop"),
        objects: BTreeMap::new(),
        migrations: Vec::new(),
        row_counts: [("a".to_string(), 1), ("b".to_string(), 0)].into(),
        mark: None,
        reused: false,
        format: Some(mysql::rows::FORMAT.into()),
        rows: vec![file("a"), file("b")],
    }
}

#[test]
fn a_rows_set_names_only_its_own_files_and_exports_them_beside_the_schema() {
    let with = |r: mysql::MysqlRecord| manifest([(id("mysql.app"), Record::Mysql(r))].into());
    let ok = with(rows_record());
    crate::validate::check_paths("set", &ok, []).expect("a well-formed rows set");
    let path = |p: &str| crate::export::export_path(&ok, p, "mysql.app");
    assert_eq!(
        path("mysql/app/shop.schema.sql"),
        ("database/app.mysql.schema.sql".into(), false)
    );
    assert_eq!(
        path("mysql/app/shop.rows/b.tsv"),
        ("database/app.mysql.rows/b.tsv".into(), false)
    );
    // The export's load script: beside the schema, one LOAD DATA per file by
    // its export path; MANIFEST.md runs it from a file, never a heredoc.
    let rec = Record::Mysql(rows_record());
    let kind = id("mysql.app").kind();
    let extras = kind.export_extras(&ok, &rec, &|p| path(p).0);
    assert_eq!(extras.len(), 1);
    assert_eq!(extras[0].0, "database/app.mysql.load.sql");
    let script = String::from_utf8(extras[0].1.clone()).unwrap();
    assert_eq!(
        script.matches("LOAD DATA LOCAL INFILE").count(),
        2,
        "{script}"
    );
    assert!(
        script.contains("'database/app.mysql.rows/b.tsv'"),
        "{script}"
    );
    let howto = kind.export_howto(&ok, &rec, &|p| path(p).0);
    assert!(
        howto.contains("< database/app.mysql.load.sql\n") && !howto.contains("<<"),
        "{howto}"
    );
    // Sets are input: a rows file outside its place, a table's file under
    // another table's name, a table with rows but no count (or the
    // reverse), a file without columns — each is refused before any read.
    let mut outside = rows_record();
    outside.rows[0].path = "mysql/app/../../etc/passwd".into();
    let mut swapped = rows_record();
    swapped.rows[0].path = mysql::rows::rows_path("app", "shop", "b");
    let mut uncounted = rows_record();
    uncounted.row_counts.remove("b");
    let mut unlisted = rows_record();
    unlisted.rows.pop();
    let mut no_columns = rows_record();
    no_columns.rows[1].columns.clear();
    let mut sql_path = rows_record();
    sql_path.dump = "mysql/app/shop.sql".into();
    // A name that spans lines (MariaDB accepts it) could end a line of the
    // export's load script.
    let evil = "x\nSTACK_BACKUP_ROWS_END\ntouch /tmp/pwned #";
    let mut bad_table = rows_record();
    bad_table.rows[0].table = evil.into();
    bad_table.rows[0].path = mysql::rows::rows_path("app", "shop", evil);
    bad_table.row_counts = [(evil.to_string(), 1), ("b".to_string(), 0)].into();
    bad_table.rows.sort_by(|x, y| x.table.cmp(&y.table));
    let mut bad_column = rows_record();
    bad_column.rows[1].columns.push("c\rd".into());
    // Rows files in a set without format: the restore would ignore them.
    let mut sql_with_rows = rows_record();
    sql_with_rows.format = None;
    sql_with_rows.dump = "mysql/app/shop.sql".into();
    for (what, r) in [
        ("outside", outside),
        ("swapped", swapped),
        ("uncounted", uncounted),
        ("unlisted", unlisted),
        ("no columns", no_columns),
        ("schema at the SQL dump's path", sql_path),
        ("control character in a table name", bad_table),
        ("control character in a column name", bad_column),
        ("rows without format", sql_with_rows),
    ] {
        let e = crate::validate::check_paths("set", &with(r), []).expect_err(what);
        assert!(matches!(e, crate::Error::Refused(_)), "{what}: {e}");
    }
    // A set without `format` is the SQL dump, as every older set.
    let mut old = rows_record();
    old.format = None;
    old.rows.clear();
    old.dump = "mysql/app/shop.sql".into();
    let old = with(old);
    crate::validate::check_paths("set", &old, []).expect("an older set");
    let old_rec = &old.components[&id("mysql.app")];
    assert!(id("mysql.app")
        .kind()
        .export_extras(&old, old_rec, &|p| p.to_string())
        .is_empty());
    assert_eq!(
        crate::export::export_path(&old, "mysql/app/shop.sql", "mysql.app"),
        ("database/app.mysql.sql".into(), false)
    );
}

#[test]
fn a_group_record_must_name_the_group_of_its_ids() {
    let a = format!("sha256:{}", "a".repeat(64));
    let b = format!("sha256:{}", "b".repeat(64));
    let group = vec![a.clone(), b.clone()];
    let record = |id: &str, group: Vec<String>, archive: String| {
        image_record("shop-web:latest", id, &archive, &group)
    };
    let check = |r: Record| {
        let m = manifest([(id("docker.image.shop-web:latest"), r)].into());
        crate::validate::check_paths("set `n`", &m, [])
    };
    let path = docker::group_artifact(&group);
    check(record(&a, group.clone(), path.clone())).unwrap();
    // An old manifest (no `group`) still parses, as the image's own tar.
    let old = serde_json::json!({"kind": "docker-image", "reference": "shop-web:latest",
        "id": a, "repo_digests": [], "tags": [], "archive": "docker/images/shop-web_latest.tar",
        "reused": false});
    let r: Record = serde_json::from_value(old).unwrap();
    check(r).unwrap();
    // A group path that is not its IDs', a group without the image, an
    // unsorted group: refused.
    let other = docker::group_artifact(std::slice::from_ref(&b));
    for (r, says) in [
        (record(&a, group.clone(), other), "the archive of its group"),
        (
            record(
                &a,
                vec![b.clone()],
                docker::group_artifact(std::slice::from_ref(&b)),
            ),
            "group",
        ),
        (
            record(
                &a,
                vec![b.clone(), a.clone()],
                docker::group_artifact(&[b.clone(), a.clone()]),
            ),
            "group",
        ),
        (
            record(
                &a,
                group.clone(),
                "docker/images/shop-web_latest.tar".into(),
            ),
            "archive",
        ),
    ] {
        let err = check(r).unwrap_err().to_string();
        assert!(err.contains(says) && err.contains("refused"), "{err}");
    }
}

/// An image's record, saved in `archive` (with `group` when that is a
/// group's), not reused.
fn image_record(reference: &str, id: &str, archive: &str, group: &[String]) -> Record {
    Record::DockerImage(docker::ImageRecord {
        reference: reference.into(),
        id: id.into(),
        repo_digests: Vec::new(),
        tags: Vec::new(),
        archive: archive.into(),
        reused: false,
        group: group.to_vec(),
    })
}

/// A plan to save image `reference` alone (ID `hex` × 64), as
/// `plan_backup` makes it.
fn image_plan(reference: &str, hex: char, size: u64) -> Planned {
    let path = docker::image_artifact(reference);
    let id = format!("sha256:{}", hex.to_string().repeat(64));
    let record = image_record(reference, &id, &path, &[]);
    let entry = crate::source::Entry::File(crate::source::Artifact {
        path,
        component: format!("docker.image.{reference}"),
        content: crate::source::Content::Stream(docker::save_stream(reference)),
        reuse_meta: None,
    });
    Planned::new(record, vec![entry], size)
}

#[test]
fn an_image_of_8_gib_or_more_is_never_saved_in_a_group() {
    // Two images to save, one of 9 GiB: loading the small one out of a
    // group would unpack the large one too, so each keeps its own save
    // (and with one left to group, no group and no engine call).
    let (a, b) = (id("docker.image.big:1"), id("docker.image.small:1"));
    let mut big = image_plan("big:1", 'a', 9 << 30);
    let mut small = image_plan("small:1", 'b', 10 << 20);
    let mut plans = vec![(&a, &mut big), (&b, &mut small)];
    a.kind().plan_together(&mut plans, None, &|_| false);
    for (p, reference) in [(&big, "big:1"), (&small, "small:1")] {
        let Record::DockerImage(r) = &p.record else {
            unreachable!()
        };
        assert!(r.group.is_empty(), "{reference} was grouped");
        assert_eq!(r.archive, docker::image_artifact(reference));
        assert!(matches!(&p.entries[..], [crate::source::Entry::File(f)] if f.path == r.archive));
    }
}

#[test]
fn an_image_saved_again_elsewhere_is_guided_by_its_previous_save() {
    // The parent saved a and b together, c alone, and knew nothing of d.
    // Now a is rebuilt (new ID), b unchanged, c rebuilt, d new: a is saved
    // alone, guided by the group; c lands where it was (the archiver
    // brings its previous content itself: no guide); b is reused; d has
    // no previous save. (c and d are of 9 GiB, never grouped: a is the
    // only image left to group, so no engine is asked.)
    let (a, b, c, d) = (
        id("docker.image.a:1"),
        id("docker.image.b:1"),
        id("docker.image.c:1"),
        id("docker.image.d:1"),
    );
    let group_ids = vec![
        "sha256:".to_string() + &"1".repeat(64),
        "sha256:".to_string() + &"b".repeat(64),
    ];
    let group_path = docker::group_artifact(&group_ids);
    let parent = manifest(BTreeMap::from([
        (
            a.clone(),
            image_record("a:1", &group_ids[0], &group_path, &group_ids),
        ),
        (
            b.clone(),
            image_record("b:1", &group_ids[1], &group_path, &group_ids),
        ),
        (
            c.clone(),
            image_record(
                "c:1",
                &format!("sha256:{}", "2".repeat(64)),
                &docker::image_artifact("c:1"),
                &[],
            ),
        ),
    ]));
    let (mut pa, mut pb, mut pc, mut pd) = (
        image_plan("a:1", 'a', 10 << 20),
        image_plan("b:1", 'b', 10 << 20),
        image_plan("c:1", 'c', 9 << 30),
        image_plan("d:1", 'd', 9 << 30),
    );
    let mut plans = vec![(&a, &mut pa), (&b, &mut pb), (&c, &mut pc), (&d, &mut pd)];
    a.kind().plan_together(&mut plans, Some(&parent), &|_| true);
    let Record::DockerImage(ra) = &pa.record else {
        unreachable!()
    };
    let guides: Vec<_> = [&pa, &pb, &pc, &pd]
        .iter()
        .flat_map(|p| p.guides.clone())
        .collect();
    assert_eq!(
        guides,
        [crate::components::Guide {
            path: ra.archive.clone(),
            from: vec![group_path.clone()],
        }],
        "{:?}",
        ra
    );
    assert_eq!(ra.archive, docker::image_artifact("a:1"));
}

#[test]
fn a_postgres_dump_is_reused_only_when_both_marks_agree() {
    let Some(Record::Postgres(base)) = records().remove(&id("postgres.main")) else {
        panic!("no postgres record");
    };
    let mark = postgres::PgMark {
        snapshot: "1000:1000:".into(),
        lsn: "0/16B3748".into(),
        cluster: "7642011472967116994 2026-11-30 04:20:00+00".into(),
        database_oid: 16384,
        sequences: "e3b0c442".into(),
        args: "ab12".into(),
    };
    let with = |m: Option<postgres::PgMark>, edit: &dyn Fn(&mut postgres::PostgresRecord)| {
        let mut r = base.clone();
        r.mark = m;
        edit(&mut r);
        Record::Postgres(r)
    };
    let same = |a: &Record, b: &Record| a.kind().same_content(a, b);
    let parent = with(Some(mark.clone()), &|_| {});
    assert!(same(&with(Some(mark.clone()), &|_| {}), &parent));
    assert!(
        !same(&with(None, &|_| {}), &with(None, &|_| {})),
        "no marks, no reuse"
    );
    assert!(!same(&with(None, &|_| {}), &parent));
    assert!(!same(&parent, &with(None, &|_| {})));
    for edit in [
        &(|m: &mut postgres::PgMark| m.snapshot = "1000:1001:".into())
            as &dyn Fn(&mut postgres::PgMark),
        &|m| m.lsn = "0/16B3750".into(),
        &|m| m.cluster = "7642011472967116994 2026-11-30 05:00:00+00".into(),
        &|m| m.database_oid = 16385,
        &|m| m.sequences = "e3b0c443".into(),
        &|m| m.args = "ab13".into(),
    ] {
        let mut other = mark.clone();
        edit(&mut other);
        assert!(!same(&with(Some(other), &|_| {}), &parent));
    }
    for edit in [
        &(|r: &mut postgres::PostgresRecord| r.port = 5433)
            as &dyn Fn(&mut postgres::PostgresRecord),
        &|r| r.user = "other".into(),
        &|r| r.pg_dump_version = "pg_dump (PostgreSQL) 16.1".into(),
        &|r| r.roles = None,
        &|r| r.roles_note = Some("roles taken without passwords".into()),
        &|r| r.database = "other".into(),
    ] {
        assert!(!same(&with(Some(mark.clone()), edit), &parent));
    }
}

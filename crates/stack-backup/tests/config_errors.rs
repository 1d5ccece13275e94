//! Bad configuration: every case exits with the config-error code (2) and a
//! message that names the file, the key and, where there is one, the line.

mod common;

use common::Sandbox;

const BASE: &str = r#"[stack]
name = "shop"

[repository]
path = "/tmp/never-created-repo"

[postgres.main]
url = "postgres://shop@127.0.0.1:5432/shop"

[redis.cache]
url = "redis://127.0.0.1:6379/0"
role = "cache"

[docker]
images = ["shop-web:latest"]
"#;

struct Case {
    what: &'static str,
    /// (from, to) replacement applied to BASE
    edit: (&'static str, &'static str),
    key: &'static str,
    line: Option<usize>,
}

const fn case(
    what: &'static str,
    from: &'static str,
    to: &'static str,
    key: &'static str,
    line: Option<usize>,
) -> Case {
    Case {
        what,
        edit: (from, to),
        key,
        line,
    }
}

/// (what, replace this, with this, the key the error names, its line)
#[rustfmt::skip]
const CASES: &[Case] = &[
    case("unknown top-level table", "[docker]", "[dokcer]", "dokcer", Some(14)),
    case("unknown key in [stack]", "name = \"shop\"", "name = \"shop\"\nnmae = \"x\"", "stack.nmae", Some(3)),
    case("wrong type", "name = \"shop\"", "name = \"shop\"\nmin-free-space = true", "stack.min-free-space", Some(3)),
    case("unparseable size", "name = \"shop\"", "name = \"shop\"\nmin-free-space = \"lots\"", "stack.min-free-space", Some(3)),
    case("missing stack name", "name = \"shop\"", "", "stack", Some(1)),
    case("invalid stack name", "name = \"shop\"", "name = \"my shop!\"", "stack.name", Some(2)),
    case("TOML syntax error", "name = \"shop\"", "name = \"shop", "", Some(2)),
    case("repository without path or url", "path = \"/tmp/never-created-repo\"", "", "repository.path", None),
    case("non-postgres URL", "postgres://shop@", "ftp://shop@", "postgres.main.url", Some(8)),
    case("unknown redis role", "role = \"cache\"", "role = \"persistent\"", "redis.cache.role", Some(12)),
    case("images not a list", "images = [\"shop-web:latest\"]", "images = \"shop-web\"", "docker.images", Some(15)),
    case("unknown key in a component", "role = \"cache\"", "role = \"cache\"\nttl = 60", "redis.cache.ttl", Some(13)),
    case("repository with both path and url", "path = \"/tmp/never-created-repo\"", "path = \"/tmp/x\"\nurl = \"opendal:memory\"", "repository.url", None),
    case("retention for a tier that is never pruned", "[docker]", "[retention.immaculate]\nkeep-last = 3\n\n[docker]", "retention.immaculate", Some(14)),
    case("retention policy without a rule", "[docker]", "[retention.backups]\n\n[docker]", "retention.backups", None),
    case("retention keep-within that is not a duration", "[docker]", "[retention.data]\nkeep-within = \"fortnight\"\n\n[docker]", "retention.data.keep-within", None),
];

#[test]
fn every_bad_config_names_key_and_line_and_exits_2() {
    assert!(CASES.len() >= 8);
    for case in CASES {
        let sb = Sandbox::new();
        let text = BASE.replacen(case.edit.0, case.edit.1, 1);
        assert_ne!(text, BASE, "case `{}` changed nothing", case.what);
        std::fs::write(sb.config(), &text).unwrap();
        for cmd in [&["doctor"][..], &["list"][..]] {
            let r = sb.run(cmd);
            assert_eq!(
                r.code, 2,
                "case `{}` ({cmd:?}): exit {}\n{}",
                case.what, r.code, r.stderr
            );
            assert!(
                !r.stderr.contains("panicked"),
                "case `{}` panicked: {}",
                case.what,
                r.stderr
            );
            assert!(
                r.stderr.contains("stack-backup.toml"),
                "case `{}`: file not named: {}",
                case.what,
                r.stderr
            );
            if !case.key.is_empty() {
                assert!(
                    r.stderr.contains(&format!("`{}`", case.key)),
                    "case `{}`: key `{}` not named: {}",
                    case.what,
                    case.key,
                    r.stderr
                );
            }
            if let Some(line) = case.line {
                assert!(
                    r.stderr.contains(&format!("line {line} "))
                        || r.stderr.contains(&format!("line {line},")),
                    "case `{}`: line {line} not named: {}",
                    case.what,
                    r.stderr
                );
            }
        }
    }
}

#[test]
fn missing_and_unreadable_config_files_exit_2() {
    let sb = Sandbox::new();
    let r = sb.run(&["doctor"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("stack-backup.toml") && r.stderr.contains("init"),
        "{}",
        r.stderr
    );

    // A directory where the file should be cannot be read (root reads any file).
    std::fs::create_dir(sb.config()).unwrap();
    let r = sb.run(&["doctor"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("cannot read the config file"),
        "{}",
        r.stderr
    );

    let r = sb.run(&["--config", "/nonexistent/dir/x.toml", "list"]);
    r.expect_code(2);
    assert!(r.stderr.contains("/nonexistent/dir/x.toml"), "{}", r.stderr);
}

#[test]
fn bad_environment_override_names_the_variable() {
    let mut sb = Sandbox::new();
    std::fs::write(sb.config(), BASE).unwrap();
    sb.env.push((
        "STACK_BACKUP_POSTGRES_MAIN_URL".into(),
        "ftp://x@h/db".into(),
    ));
    let r = sb.run(&["doctor"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("`STACK_BACKUP_POSTGRES_MAIN_URL`"),
        "{}",
        r.stderr
    );
}

#[test]
fn json_mode_reports_config_errors_as_json() {
    let sb = Sandbox::new();
    std::fs::write(sb.config(), BASE.replace("[docker]", "[dokcer]")).unwrap();
    let r = sb.run(&["--json", "doctor"]);
    r.expect_code(2);
    let v = r.json();
    assert_eq!(v["error"]["exit_code"], 2);
    assert!(v["error"]["message"].as_str().unwrap().contains("dokcer"));
}

#[test]
fn usage_errors_exit_2() {
    let sb = Sandbox::new();
    sb.run(&["no-such-command"]).expect_code(2);
    sb.run(&["list", "--tier", "gold"]).expect_code(2);
}

//! Operations: `status` (figures, dead-man switch, Prometheus file, HTML
//! page), notifications to a local HTTP server, and `schedule`.
//!
//! Sets with known times are made by taking one real backup and writing
//! copies of its snapshot with other names, tiers, times and component
//! lists (the way `copy` writes snapshots: same tree, new file), then
//! deleting the original: status sees exactly those sets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use stack_backup_core::tiers::Tier;

const DAY: i64 = 86400;

/// A sandbox with two path components and one real backup set `real`.
fn paths_stack(extra: &str) -> Sandbox {
    let sb = Sandbox::new();
    for (dir, file) in [("media", "a.jpg"), ("docs", "b.txt")] {
        let d = sb.path().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(file), format!("{dir} content\n")).unwrap();
    }
    sb.write_config(
        "shop",
        &format!(
            "[paths.media]\npath = \"{}\"\n\n[paths.docs]\npath = \"{}\"\n\n{extra}",
            sb.path().join("media").display(),
            sb.path().join("docs").display()
        ),
    );
    sb.init();
    sb.run(&["backup", "--name", "real"]).expect_code(0);
    sb
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Replaces the sets of `sb` by copies of set `real` with these names,
/// tiers, times and components; returns nothing (status reads them back).
fn make_sets(sb: &Sandbox, sets: &[(String, Tier, i64, Vec<&str>)]) {
    let cfg = stack_backup_core::config::Config::load(&sb.config()).unwrap();
    let repo = stack_backup_core::repository::open(&cfg, PASSWORD).unwrap();
    let all = repo.get_all_snapshots().unwrap();
    assert_eq!(all.len(), 1, "one real set to copy");
    let real = all[0].clone();
    let copies: Vec<_> = sets
        .iter()
        .map(|(name, tier, time, comps)| {
            let mut s = real.clone();
            s.tags = stack_backup_core::tags::SetTags::set("shop", *tier, name).to_list();
            s.time = jiff::Timestamp::from_second(*time)
                .unwrap()
                .to_zoned(jiff::tz::TimeZone::UTC);
            let summary = stack_backup_core::sets::Summary {
                components: comps.iter().map(|c| (*c).to_string()).collect(),
                ..Default::default()
            };
            s.description = Some(serde_json::to_string(&summary).unwrap());
            s
        })
        .collect();
    repo.save_snapshots(copies).unwrap();
    repo.delete_snapshots(&[real.id]).unwrap();
}

fn status_json(sb: &Sandbox, args: &[&str], code: i32) -> Value {
    let mut a = vec!["--json", "status"];
    a.extend_from_slice(args);
    let r = sb.run(&a);
    r.expect_code(code);
    r.json()
}

fn component<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == name)
        .unwrap_or_else(|| panic!("no component {name} in {st:#}"))
}

/// The sandbox's state directory (`STACK_BACKUP_STATE_DIR`).
fn state_dir(sb: &Sandbox) -> PathBuf {
    sb.path().join("state")
}

/// The Prometheus file parsed by the Python client: `(name, labels) -> value`.
fn parse_prometheus(file: &Path) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    // Debian's python3, where python3-prometheus-client is installed.
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(file)
        .output()
        .expect("python3 (scripts/services.sh)");
    assert!(
        out.status.success(),
        "the Prometheus parser rejected {}:\n{}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
    let v: Vec<(String, serde_json::Map<String, Value>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    v
}

fn metric(
    m: &[(String, serde_json::Map<String, Value>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    m.iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k) == Some(&Value::from(*v)))
        })
        .map(|(_, _, v)| *v)
}

fn repo_bytes(repo: &Path) -> u64 {
    let mut total = 0;
    for d in ["keys", "snapshots", "index", "data"] {
        let mut stack = vec![repo.join(d)];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    total += m.len();
                }
            }
        }
    }
    total
}

#[test]
fn status_ages_come_from_the_set_times_and_max_age_is_a_dead_man_switch() {
    let sb = paths_stack("");
    let t = now();
    make_sets(
        &sb,
        &[
            (
                "b-old".into(),
                Tier::Backups,
                t - 10 * DAY,
                vec!["paths.media", "paths.docs"],
            ),
            (
                "i-base".into(),
                Tier::Immaculate,
                t - 30 * DAY,
                vec!["paths.media", "paths.docs"],
            ),
            (
                "b-media".into(),
                Tier::Backups,
                t - 3 * DAY,
                vec!["paths.media"],
            ),
            ("pre".into(), Tier::PreRestore, t - DAY, vec!["paths.docs"]),
        ],
    );
    let st = status_json(&sb, &[], 0);
    let now_st = st["timestamp"].as_i64().unwrap();
    assert!((now_st - t).abs() < 120, "{now_st} vs {t}");
    let media = component(&st, "paths.media");
    assert_eq!(media["last_success"]["name"], "b-media");
    assert_eq!(media["last_success"]["age_seconds"], now_st - (t - 3 * DAY));
    // A pre-restore set is no backup anyone chose: docs' newest good set
    // is b-old.
    let docs = component(&st, "paths.docs");
    assert_eq!(docs["last_success"]["name"], "b-old");
    assert_eq!(docs["last_success"]["age_seconds"], now_st - (t - 10 * DAY));
    assert_eq!(docs["by_tier"]["pre-restore"]["name"], "pre");
    let tier = |name: &str| {
        st["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["tier"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(tier("backups")["sets"], 2);
    assert_eq!(tier("backups")["newest"]["name"], "b-media");
    assert_eq!(
        tier("immaculate")["newest"]["age_seconds"],
        now_st - (t - 30 * DAY)
    );
    assert_eq!(tier("sacred")["sets"], 0);
    assert!(st["last_drill"].is_null());
    assert!(st["last_verify"].is_null());
    assert_eq!(st["repository_bytes"], repo_bytes(&sb.repo()));
    let human = sb.run(&["status"]);
    human.expect_code(0);
    assert!(human.stdout.contains("no drill yet"), "{}", human.stdout);
    assert!(human.stdout.contains("b-media"), "{}", human.stdout);

    // --max-age: docs (10 days) is over 5 days, media (3 days) is not.
    let st = status_json(&sb, &["--max-age", "5d"], 3);
    let v = st["violations"].as_array().unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["component"], "paths.docs");
    assert_eq!(v[0]["max_age_seconds"], 5 * DAY);
    let r = sb.run(&["status", "--max-age", "5d"]);
    r.expect_code(3);
    assert!(
        r.stderr.contains("paths.docs") && !r.stderr.contains("paths.media"),
        "{}",
        r.stderr
    );
    status_json(&sb, &["--max-age", "11d"], 0);
    let r = sb.run(&["status", "--max-age", "soon"]);
    r.expect_code(2);

    // [status.max-age] per tier: immaculate sets older than 20 days, and a
    // tier with no set at all.
    std::fs::write(
        sb.config(),
        std::fs::read_to_string(sb.config()).unwrap()
            + "\n[status.max-age]\nimmaculate = \"20d\"\nsacred = \"400d\"\nbackups = \"4d\"\n",
    )
    .unwrap();
    let st = status_json(&sb, &[], 3);
    let mut got: Vec<String> = st["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{}@{}",
                v["component"].as_str().unwrap(),
                v["tier"].as_str().unwrap()
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "paths.docs@backups",
            "paths.docs@immaculate",
            "paths.media@immaculate",
            "tier:sacred@sacred"
        ]
    );
}

#[test]
fn the_prometheus_file_parses_and_holds_the_figures() {
    let sb = paths_stack("");
    let t = now();
    make_sets(
        &sb,
        &[
            (
                "i1".into(),
                Tier::Immaculate,
                t - 2 * DAY,
                vec!["paths.media", "paths.docs"],
            ),
            (
                "b1".into(),
                Tier::Backups,
                t - 3600,
                vec!["paths.media", "paths.docs"],
            ),
        ],
    );
    // An off-site copy of the immaculate tier, then a newer immaculate set
    // that has not been copied.
    let target = sb.path().join("offsite");
    sb.run(&[
        "copy",
        "--tier",
        "immaculate",
        "--to",
        &target.to_string_lossy(),
        "--init",
    ])
    .expect_code(0);
    sb.run(&["verify", "b1"]).expect_code(0);
    let st0 = status_json(&sb, &[], 0);
    assert_eq!(st0["copies"][0]["pending"], 0, "{st0:#}");
    assert_eq!(st0["copies"][0]["lag_seconds"], 0);

    // The drill's report, as the drill command is to leave it.
    std::fs::write(
        state_dir(&sb).join("drill-shop.json"),
        r#"{"time":"2026-11-20T10:00:00Z","set":"b1","ok":true,"rto_seconds":42.5}"#,
    )
    .unwrap();

    let prom = sb.path().join("textfile/stack-backup.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let st = status_json(&sb, &["--prometheus", &prom.to_string_lossy()], 0);
    let m = parse_prometheus(&prom);
    let shop = ("stack", "shop");
    assert_eq!(
        metric(
            &m,
            "stack_backup_last_success_timestamp_seconds",
            &[shop, ("component", "paths.media"), ("tier", "backups")]
        ),
        Some((t - 3600) as f64)
    );
    assert_eq!(
        metric(
            &m,
            "stack_backup_last_success_timestamp_seconds",
            &[shop, ("component", "paths.docs"), ("tier", "immaculate")]
        ),
        Some((t - 2 * DAY) as f64)
    );
    assert_eq!(
        metric(&m, "stack_backup_last_verify_timestamp_seconds", &[shop]),
        Some(st["last_verify"]["timestamp"].as_i64().unwrap() as f64)
    );
    assert_eq!(
        metric(&m, "stack_backup_last_verify_success", &[shop]),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "stack_backup_last_drill_timestamp_seconds", &[shop]),
        Some(
            "2026-11-20T10:00:00Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_second() as f64
        )
    );
    assert_eq!(
        metric(&m, "stack_backup_last_drill_rto_seconds", &[shop]),
        Some(42.5)
    );
    assert_eq!(
        metric(&m, "stack_backup_repository_bytes", &[shop]),
        Some(repo_bytes(&sb.repo()) as f64)
    );
    let tgt = target.to_string_lossy().into_owned();
    assert_eq!(
        metric(
            &m,
            "stack_backup_copy_lag_seconds",
            &[shop, ("target", &tgt)]
        ),
        Some(0.0)
    );
    let verify_took = metric(
        &m,
        "stack_backup_last_duration_seconds",
        &[shop, ("command", "verify")],
    )
    .unwrap();
    assert!(verify_took > 0.0 && verify_took < 600.0, "{verify_took}");
    assert!(metric(
        &m,
        "stack_backup_last_duration_seconds",
        &[shop, ("command", "copy")]
    )
    .is_some());
    assert!(
        std::fs::read_dir(prom.parent().unwrap()).unwrap().count() == 1,
        "no temporary file left"
    );

    // A new immaculate set not yet copied: the lag is its age. The file is
    // rewritten by the next command that finishes once `[status]
    // prometheus-file` is set (here: a failing verify, recorded as such).
    let cfg = std::fs::read_to_string(sb.config()).unwrap();
    {
        let config = stack_backup_core::config::Config::load(&sb.config()).unwrap();
        let repo = stack_backup_core::repository::open(&config, PASSWORD).unwrap();
        let mut s = repo
            .get_all_snapshots()
            .unwrap()
            .into_iter()
            .find(|s| s.tags.contains("name:i1"))
            .unwrap();
        s.tags = stack_backup_core::tags::SetTags::set("shop", Tier::Immaculate, "i2").to_list();
        s.time = jiff::Timestamp::from_second(t - 7200)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC);
        repo.save_snapshots(vec![s]).unwrap();
    }
    std::fs::write(
        sb.config(),
        format!(
            "{cfg}\n[status]\nprometheus-file = \"{}\"\n",
            prom.display()
        ),
    )
    .unwrap();
    sb.run(&["verify", "no-such-set"]).expect_code(1);
    let m = parse_prometheus(&prom);
    assert_eq!(
        metric(
            &m,
            "stack_backup_last_run_success",
            &[shop, ("command", "verify")]
        ),
        Some(0.0)
    );
    let lag = metric(
        &m,
        "stack_backup_copy_lag_seconds",
        &[shop, ("target", &tgt)],
    )
    .unwrap();
    assert!((lag - 7200.0).abs() < 120.0, "lag {lag}");
    assert_eq!(
        metric(
            &m,
            "stack_backup_copy_pending_sets",
            &[shop, ("target", &tgt)]
        ),
        Some(1.0)
    );
    let st = status_json(&sb, &[], 0);
    assert_eq!(st["copies"][0]["newest_pending"]["name"], "i2");
    assert_eq!(st["last_verify"]["outcome"], "failure");
}

/// What a local HTTP server received: method, path, body.
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// A local HTTP server answering 200 to everything, recording requests.
fn http_server() -> (u16, Received) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got: Received = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let mut parts = line.split_whitespace();
            g.lock().unwrap().push((
                parts.next().unwrap_or("").into(),
                parts.next().unwrap_or("").into(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, got)
}

#[test]
fn notifications_reach_a_local_server_without_secrets_and_a_dead_one_costs_at_most_its_timeout() {
    let (port, got) = http_server();
    let base = format!("http://127.0.0.1:{port}");
    let notify = format!(
        "[[notify]]\non = [\"start\", \"success\", \"failure\"]\nwebhook = \"{base}/hook/whk-SECRET-1\"\n\n\
         [[notify]]\non = [\"start\", \"success\", \"failure\"]\nhealthchecks = \"{base}/ping/hc-SECRET-2\"\n\n\
         [[notify]]\non = [\"failure\"]\nntfy = \"{base}/ntfy-SECRET-3\"\n"
    );
    let sb = paths_stack(&notify);
    let secrets = ["whk-SECRET-1", "hc-SECRET-2", "ntfy-SECRET-3", PASSWORD];
    let take = || std::mem::take(&mut *got.lock().unwrap());
    take();

    let r = sb.run(&["-vv", "backup", "--name", "n1"]);
    r.expect_code(0);
    let reqs = take();
    let paths: Vec<&str> = reqs.iter().map(|(_, p, _)| p.as_str()).collect();
    assert!(
        paths.contains(&"/ping/hc-SECRET-2/start") && paths.contains(&"/ping/hc-SECRET-2"),
        "{paths:?}"
    );
    let hooks: Vec<Value> = reqs
        .iter()
        .filter(|(m, p, _)| m == "POST" && p == "/hook/whk-SECRET-1")
        .map(|(_, _, b)| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(hooks.len(), 2, "{reqs:?}");
    let start = hooks.iter().find(|h| h["outcome"] == "start").unwrap();
    assert_eq!(start["command"], "backup");
    let done = hooks.iter().find(|h| h["outcome"] == "success").unwrap();
    assert_eq!(done["stack"], "shop");
    assert_eq!(done["set"], "n1");
    assert!(done["duration_seconds"].as_f64().unwrap() > 0.0);
    assert!(done["error"].is_null());
    assert!(
        !paths.iter().any(|p| p.contains("ntfy")),
        "ntfy only on failure: {paths:?}"
    );
    for s in secrets {
        assert!(
            !r.stdout.contains(s) && !r.stderr.contains(s),
            "{s} shown:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }

    // A failure carries the error; the URL password in the error is gone.
    let r = sb.run(&["-vv", "restore", "no-such-set", "--yes"]);
    assert_ne!(r.code, 0);
    let reqs = take();
    let fail = reqs
        .iter()
        .find(|(_, p, b)| p == "/hook/whk-SECRET-1" && b.contains("\"failure\""))
        .map(|(_, _, b)| serde_json::from_str::<Value>(b).unwrap())
        .unwrap_or_else(|| panic!("{reqs:?}"));
    assert_eq!(fail["command"], "restore");
    assert!(
        fail["error"].as_str().unwrap().contains("no-such-set"),
        "{fail}"
    );
    assert_eq!(fail["exit_code"], r.code);
    assert!(
        reqs.iter().any(|(_, p, _)| p == "/ping/hc-SECRET-2/fail"),
        "{reqs:?}"
    );
    let ntfy = reqs
        .iter()
        .find(|(_, p, _)| p == "/ntfy-SECRET-3")
        .expect("ntfy");
    assert!(
        ntfy.2.contains("restore") && ntfy.2.contains("failure"),
        "{ntfy:?}"
    );
    for (_, _, body) in &reqs {
        assert!(!body.contains(PASSWORD), "{body}");
    }
    for s in secrets {
        assert!(
            !r.stdout.contains(s) && !r.stderr.contains(s),
            "{s} shown:\n{}",
            r.stderr
        );
    }
    // The config stored in the set holds no token either.
    let shown = sb.run(&["show", "n1"]);
    for s in secrets {
        assert!(!shown.stdout.contains(s));
    }
    let stored = restic_restore(&sb.repo(), "n1");
    let toml =
        std::fs::read_to_string(stored.path().join("stack-backup/stack-backup.toml")).unwrap();
    assert!(toml.contains("[[notify]]"), "{toml}");
    for s in secrets {
        assert!(!toml.contains(s), "{toml}");
    }

    // A dead webhook: accepts the connection, never answers.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in dead.incoming().flatten() {
            h.lock().unwrap().push(s);
        }
    });
    let baseline_start = Instant::now();
    sb.run(&["backup", "--name", "n2"]).expect_code(0);
    let baseline = baseline_start.elapsed();
    std::fs::write(
        sb.config(),
        std::fs::read_to_string(sb.config()).unwrap().replace(
            &notify,
            &format!(
                "[[notify]]\non = [\"start\", \"success\"]\ntimeout-seconds = 2\nwebhook = \"http://127.0.0.1:{dead_port}/hook/dead-SECRET-4\"\n"
            ),
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let r = sb.run(&["backup", "--name", "n3"]);
    let took = t0.elapsed();
    r.expect_code(0);
    // Two notifications (start, success), each at most its 2 s timeout.
    assert!(
        took < baseline + Duration::from_millis(2 * 2000 + 1500),
        "{took:?} vs baseline {baseline:?}"
    );
    assert!(
        took >= Duration::from_millis(3500),
        "the server was never waited for: {took:?}"
    );
    assert!(
        r.stderr
            .contains("notification to webhook http://127.0.0.1"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("dead-SECRET-4"), "{}", r.stderr);
    assert!(!held.lock().unwrap().is_empty());
    sb.run(&["list"]).expect_code(0);
}

/// A resolver that never answers: the system resolver is beyond reqwest's
/// timeouts, so only the caller's own deadline bounds the wait. The binary
/// runs in its own mount namespace whose `/etc/resolv.conf` names a UDP
/// socket of this test that reads queries and never replies.
#[test]
fn a_resolver_that_never_answers_costs_a_notification_at_most_its_timeout() {
    let sb = paths_stack("");
    // A loopback address of its own, so no local resolver is in the way.
    let dns = (2..=250)
        .find_map(|last| {
            std::net::UdpSocket::bind(("127.0.0.".to_string() + &last.to_string(), 53)).ok()
        })
        .expect("a free loopback address for the silent resolver (the tests run as root)");
    let resolv = sb.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!(
            "nameserver {}\noptions timeout:30 attempts:1\n",
            dns.local_addr().unwrap().ip()
        ),
    )
    .unwrap();
    let queries = Arc::new(Mutex::new(0usize));
    let q = queries.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while dns.recv_from(&mut buf).is_ok() {
            *q.lock().unwrap() += 1;
        }
    });
    let cfg = std::fs::read_to_string(sb.config()).unwrap();
    std::fs::write(
        sb.config(),
        format!("{cfg}\n[[notify]]\non = [\"start\", \"success\"]\ntimeout-seconds = 1\nwebhook = \"http://sb-stalled.example.test/hook/stall-SECRET-5\"\n"),
    )
    .unwrap();
    let mut cmd = sb.command("unshare", sb.path(), None);
    cmd.args([
        "--mount",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"",
    ])
    .arg(&resolv)
    .arg(bin())
    .args(["backup", "--name", "stalled"]);
    let t0 = Instant::now();
    let r = Run::from(cmd.output().unwrap());
    let took = t0.elapsed();
    r.expect_code(0);
    assert!(*queries.lock().unwrap() > 0, "the resolver was never asked");
    // Two notifications (start, success), each at most its 1 s (the
    // resolver alone would hold each for 30 s).
    assert!(took < Duration::from_secs(12), "{took:?}");
    assert!(
        r.stderr.contains("name resolution or connection stalled"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("stall-SECRET-5"), "{}", r.stderr);
    sb.run(&["show", "stalled"]).expect_code(0);
}

#[test]
fn schedules_become_units_systemd_accepts_or_a_cron_file() {
    let sb = paths_stack(
        "[schedule]\nbackup = \"hourly\"\ndump = \"*:0/15\"\nverify = \"weekly\"\nprune = \"daily\"\ndrill = \"weekly\"\n\
         copy = { when = \"daily\", args = [\"--all\", \"--to\", \"/srv/offsite\"] }\n",
    );
    let units = tempfile::tempdir().unwrap();
    let dir = units.path().to_string_lossy().into_owned();
    let show = sb.run(&["schedule", "show", "--dir", &dir]);
    show.expect_code(0);
    assert!(
        show.stdout.contains("--no-progress drill"),
        "{}",
        show.stdout
    );
    sb.run(&["schedule", "install", "--dir", &dir, "--dry-run"])
        .expect_code(0);
    assert_eq!(
        std::fs::read_dir(units.path()).unwrap().count(),
        0,
        "dry run wrote"
    );
    sb.run(&["schedule", "install", "--dir", &dir])
        .expect_code(0);
    let mut names: Vec<String> = std::fs::read_dir(units.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let want: Vec<String> = ["backup", "copy", "drill", "dump", "prune", "verify"]
        .iter()
        .flat_map(|c| {
            [
                format!("stack-backup-{c}.service"),
                format!("stack-backup-{c}.timer"),
            ]
        })
        .collect();
    assert_eq!(names, want);
    let service = std::fs::read_to_string(units.path().join("stack-backup-prune.service")).unwrap();
    let cfg = std::fs::canonicalize(sb.config()).unwrap();
    assert!(
        service.contains(&format!(
            "--config {} --no-progress prune --apply",
            cfg.display()
        )),
        "{service}"
    );
    assert!(
        service.contains(&format!(
            "/usr/bin/flock -w 21600 {}/state/schedule-shop.lock",
            sb.path().display()
        )),
        "{service}"
    );
    let timer = std::fs::read_to_string(units.path().join("stack-backup-dump.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=*:0/15")
            && timer.contains("Persistent=true")
            && timer.contains("RandomizedDelaySec="),
        "{timer}"
    );
    assert!(
        std::fs::read_to_string(units.path().join("stack-backup-copy.service"))
            .unwrap()
            .contains("copy --all --to /srv/offsite")
    );

    let mut cmd = Command::new("systemd-analyze");
    cmd.args(["verify", "--man=no"]);
    for n in &names {
        cmd.arg(units.path().join(n));
    }
    let run = Run::from(cmd.output().expect("systemd-analyze (scripts/services.sh)"));
    run.expect_code(0);
    assert!(run.stderr.trim().is_empty(), "{}", run.stderr);

    // Another stack's unit (the names are per command: one stack's
    // schedule per directory) is never overwritten nor removed.
    let other_unit = units.path().join("stack-backup-verify.service");
    let other = format!(
        "{}\n[Unit]\nDescription=stack-backup: verify of stack other\n",
        stack_backup_core::schedule::MARKER
    );
    std::fs::write(&other_unit, &other).unwrap();
    let r = sb.run(&["schedule", "install", "--dir", &dir]);
    r.expect_code(4);
    assert!(r.stderr.contains("another stack"), "{}", r.stderr);
    sb.run(&["schedule", "remove", "--dir", &dir])
        .expect_code(0);
    assert_eq!(std::fs::read_to_string(&other_unit).unwrap(), other);
    std::fs::remove_file(&other_unit).unwrap();

    // A unit someone else wrote is never overwritten nor removed.
    std::fs::write(units.path().join("stack-backup-backup.timer"), "[Timer]\n").unwrap();
    let r = sb.run(&["schedule", "install", "--dir", &dir]);
    r.expect_code(4);
    sb.run(&["schedule", "remove", "--dir", &dir])
        .expect_code(0);
    let left: Vec<String> = std::fs::read_dir(units.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["stack-backup-backup.timer"]);

    let cron = sb.path().join("cron.d/stack-backup");
    sb.run(&[
        "schedule",
        "install",
        "--cron",
        "--dir",
        &cron.to_string_lossy(),
    ])
    .expect_code(0);
    let text = std::fs::read_to_string(&cron).unwrap();
    assert!(
        text.contains(&format!(
            "\n0 * * * * root /usr/bin/flock -w 21600 {}/state/schedule-shop.lock ",
            sb.path().display()
        )),
        "{text}"
    );
    assert!(
        text.contains("\n*/15 * * * * root ") && text.contains(" dump\n"),
        "{text}"
    );
    sb.run(&[
        "schedule",
        "remove",
        "--cron",
        "--dir",
        &cron.to_string_lossy(),
    ])
    .expect_code(0);
    assert!(!cron.exists());
}

#[test]
fn the_html_page_renders_in_headless_chromium_and_its_table_reads_back() {
    let sb = paths_stack("");
    let t = now();
    make_sets(
        &sb,
        &[
            (
                "b1".into(),
                Tier::Backups,
                t - 5 * DAY,
                vec!["paths.media", "paths.docs"],
            ),
            ("d1".into(), Tier::Data, t - 7200, vec!["paths.media"]),
            (
                "s<1>".into(),
                Tier::Sacred,
                t - 20 * DAY,
                vec!["paths.docs"],
            ),
        ],
    );
    let page = sb.path().join("status.html");
    let st = status_json(&sb, &["--html", &page.to_string_lossy()], 0);
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["src=", "href=", "<link", "url("] {
        assert!(!html.contains(external), "{external} in the page");
    }
    assert!(!html.contains("<script"));
    let shot = sb.path().join("shot.png");
    let chromium = |args: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!(
                "--user-data-dir={}",
                sb.path().join("chromium").display()
            ))
            .args(args)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium (scripts/services.sh)")
    };
    let out = chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1000,900",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5000,
        "{} bytes",
        png.len()
    );
    let dom = chromium(&["--dump-dom"]);
    assert!(dom.status.success());
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    // The components table as the browser built it.
    let table = &dom[dom.find("id=\"components\"").expect("components table")..];
    let table = &table[..table.find("</table>").unwrap()];
    let cells: Vec<Vec<String>> = table
        .split("<tr")
        .skip(2)
        .map(|row| {
            row.split("<td>")
                .skip(1)
                .map(|c| c[..c.find("</td>").unwrap()].to_string())
                .collect()
        })
        .collect();
    let want: Vec<Vec<String>> = st["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            vec![
                c["component"].as_str().unwrap().to_string(),
                c["last_success"]["name"]
                    .as_str()
                    .unwrap()
                    .replace('<', "&lt;")
                    .replace('>', "&gt;"),
                c["last_success"]["tier"].as_str().unwrap().to_string(),
                c["last_success"]["age_seconds"].to_string(),
            ]
        })
        .collect();
    let got: Vec<Vec<String>> = cells.iter().map(|r| r[..4].to_vec()).collect();
    assert_eq!(got, want);
    assert_eq!(got[0][0], "paths.docs");
    assert_eq!(got[0][1], "b1");
    assert_eq!(got[1][1], "d1");
    assert!(dom.contains("no drill yet"));
    assert_eq!(
        dom.matches("<circle").count(),
        3,
        "one dot per set on the timeline"
    );
}

/// The status of a repository with 1,000 sets opens no pack file (counted
/// with strace); the time it takes is measured by bench/status.sh.
#[test]
fn status_of_a_thousand_sets_reads_no_pack_file() {
    let sb = paths_stack("");
    let t = now();
    let sets: Vec<(String, Tier, i64, Vec<&str>)> = (0..1000)
        .map(|i| {
            (
                format!("s{i:04}"),
                if i % 10 == 0 {
                    Tier::Data
                } else {
                    Tier::Backups
                },
                t - 3600 * (1000 - i),
                vec!["paths.media", "paths.docs"],
            )
        })
        .collect();
    make_sets(&sb, &sets);
    let trace = sb.path().join("trace");
    let mut cmd = sb.command("strace", sb.path(), None);
    cmd.args(["-f", "-qq", "-e", "trace=open,openat", "-o"])
        .arg(&trace)
        .arg(bin())
        .args(["--json", "status", "--max-age", "2h"]);
    let r = Run::from(cmd.output().expect("strace (scripts/services.sh)"));
    r.expect_code(0);
    let st = r.json();
    assert_eq!(st["sets"].as_array().unwrap().len(), 1000);
    assert_eq!(
        component(&st, "paths.media")["last_success"]["name"],
        "s0999"
    );
    let opened = std::fs::read_to_string(&trace).unwrap();
    let repo = sb.repo().display().to_string();
    let snapshots = opened.matches(&format!("{repo}/snapshots/")).count();
    // The size of the repository lists data/ (its directories are
    // opened); a pack file itself never is.
    let data = format!("{repo}/data/");
    let listed = opened
        .lines()
        .filter(|l| l.contains(&data) && l.contains("O_DIRECTORY"))
        .count();
    let packs: Vec<&str> = opened
        .lines()
        .filter(|l| l.contains(&data) && !l.contains("O_DIRECTORY"))
        .collect();
    assert!(snapshots >= 1000, "{snapshots} snapshot files opened");
    assert!(
        listed > 0,
        "the trace shows no listing of data/: is it the right repository?"
    );
    assert!(packs.is_empty(), "pack files opened:\n{}", packs.join("\n"));
}

/// The repository of `bench/status.sh`: 1,000 sets, made as above, kept
/// (not deleted) in a directory whose path is written to the file named
/// by `SB_BENCH_STATUS_OUT`. Run only by the benchmark.
#[test]
#[ignore = "the fixture of bench/status.sh"]
fn bench_status_fixture() {
    let Ok(out) = std::env::var("SB_BENCH_STATUS_OUT") else {
        panic!("set SB_BENCH_STATUS_OUT (bench/status.sh does)");
    };
    let n: i64 = std::env::var("SB_BENCH_STATUS_SETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let sb = paths_stack("");
    let t = now();
    let tiers = [Tier::Backups, Tier::Backups, Tier::Data, Tier::Immaculate];
    let sets: Vec<(String, Tier, i64, Vec<&str>)> = (0..n)
        .map(|i| {
            (
                format!("s{i:05}"),
                tiers[(i % 4) as usize],
                t - 3600 * (n - i),
                vec!["paths.media", "paths.docs"],
            )
        })
        .collect();
    make_sets(&sb, &sets);
    let kept = sb.dir.keep();
    std::fs::write(out, kept.display().to_string()).unwrap();
}

//! The daemon's real `/metrics`, scraped from inside its network namespace: `promtool check
//! metrics` (Debian's `prometheus` package) accepts it, the live gauges say what the store holds,
//! and every metric the Grafana dashboard in `dist/grafana/passknock.json` queries is in it —
//! with every query parsed as PromQL by `promtool check rules`.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use support::daemon::{test_config, Daemon};
use support::netns::Netns;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/grafana/passknock.json");

/// The body of `GET /metrics`, fetched inside the daemon's namespace.
fn scrape(ns: &Netns) -> String {
    let script = "exec 3<>/dev/tcp/127.0.0.1/9477; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
    let out = ns.exec("bash", &["-c", script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    text.split_once("\r\n\r\n").expect("a header").1.to_string()
}

/// Runs `promtool ARGS` with `input` on stdin; returns (success, stdout and stderr).
fn promtool(args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool, from Debian's prometheus package (tests/run-all.sh installs it)");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Sample names in an exposition: `name` of `name{…} v` and `name v`.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Every `expr` anywhere in the dashboard.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The names a PromQL expression reads: identifiers starting `passknock_`.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("passknock_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn metrics_pass_promtool_gauges_are_live_and_the_dashboard_queries_what_is_exported() {
    let ns = Netns::new("promtool");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &ns,
        dir.path(),
        &test_config(
            dir.path(),
            "\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:9477\"\n",
        ),
    );
    d.ok(&["grant", "203.0.113.7", "--services", "sip"]);
    d.ok(&["grant", "203.0.113.8", "--services", "sip"]);
    d.ok(&["ban", "203.0.113.66"]);
    d.ok(&["revoke", "203.0.113.8"]);
    let body = scrape(&ns);

    let (ok, said) = promtool(&["check", "metrics"], &body);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n{body}"
    );

    // The gauges follow the store: two grants made, one revoked.
    for want in [
        "passknock_live_grants 1\n",
        "passknock_live_bans 1\n",
        "passknock_ami_contacts 0\n",
        "passknock_ami_calls 0\n",
        "passknock_history_dropped_total 0\n",
    ] {
        assert!(body.contains(want), "missing {want:?}:\n{body}");
    }

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).expect("dashboard JSON");
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 10, "the dashboard has its queries: {all:?}");
    let exported = sample_names(&body);
    let mut used = BTreeSet::new();
    for e in &all {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{e:?} queries no passknock metric");
        for n in names {
            assert!(
                exported.contains(&n),
                "the dashboard queries {n} ({e:?}), which /metrics does not export:\n{body}"
            );
            used.insert(n);
        }
    }
    for gauge in [
        "passknock_live_grants",
        "passknock_live_bans",
        "passknock_ami_contacts",
        "passknock_ami_calls",
    ] {
        assert!(used.contains(gauge), "the dashboard shows {gauge}");
    }
    // Each query is PromQL: promtool parses them as recording rules (JSON strings are YAML).
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in all.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: passknock:dashboard_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let (ok, said) = promtool(&["check", "rules", file.to_str().unwrap()], "");
    assert!(ok, "promtool check rules:\n{said}\n{rules}");
}

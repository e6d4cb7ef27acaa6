//! The binary's command line: bad input exits 64 before any port is bound.

use std::process::Command;

fn erratum(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_erratum"))
        .args(args)
        .env_remove("ERRATUM_MANIFESTS")
        .output()
        .expect("binary runs")
}

#[test]
fn bad_flags_exit_64_with_a_message() {
    for args in [
        &["run", "--manifests", ".", "--http-addr", "not-an-address"][..],
        &["run", "--manifests", ".", "--default-backend", "nonsense"],
        &["run", "--manifests", ".", "--upstream-response-timeout", "0s"],
        &["run", "--manifests", ".", "--log-level", "[[["],
        &["run", "--no-such-flag"],
        &["frobnicate"],
    ] {
        let out = erratum(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
}

#[test]
fn an_unreadable_folder_exits_64_before_binding() {
    // Hold the port: if erratum tried to bind before validating, it would fail differently.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let out = erratum(&["run", "--manifests", "/nonexistent/erratum-manifests", "--http-addr", &addr]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/erratum-manifests"), "{stderr}");
}

#[test]
fn help_and_version_succeed() {
    assert_eq!(erratum(&["--help"]).status.code(), Some(0));
    assert_eq!(erratum(&["--version"]).status.code(), Some(0));
    let help = String::from_utf8(erratum(&["run", "--help"]).stdout).unwrap();
    for flag in [
        "--manifests",
        "--http-addr",
        "--https-addr",
        "--admin-addr",
        "--ingress-class",
        "--default-backend",
        "--upstream-connect-timeout",
        "--upstream-response-timeout",
        "--workers",
        "--log-format",
        "ERRATUM_HTTP_ADDR",
    ] {
        assert!(help.contains(flag), "run --help documents {flag}");
    }
}

/// Reads the child's output until a line contains `needle`; returns every line read.
fn read_until(reader: &mut impl std::io::BufRead, needle: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let done = line.contains(needle);
        lines.push(line);
        if done {
            return lines;
        }
    }
    panic!("never saw {needle:?} in:\n{}", lines.concat());
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_erratum"))
        .args([
            "run",
            "--manifests",
            dir.path().to_str().unwrap(),
            "--http-addr",
            "127.0.0.1:0",
            "--https-addr",
            "off",
        ])
        .args(["--admin-addr", "127.0.0.1:0", "--log-format", "json", "--workers", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let lines = read_until(&mut stderr, "erratum serving");
    let serving: serde_json::Value = serde_json::from_str(lines.last().unwrap()).expect("json log line");
    assert_eq!(
        serving["fields"]["message"].as_str().or(serving["message"].as_str()),
        Some("erratum serving")
    );
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_demo_serves_the_quickstart() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_erratum"))
        .args(["demo", "--http-addr", "127.0.0.1:0", "--https-addr", "off", "--admin-addr", "127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let lines = read_until(&mut stdout, "curl -i http://localhost:");
    let port: u16 = lines
        .last()
        .unwrap()
        .split("http://localhost:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the demo prints its port");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let statuses = rt.block_on(async {
        let client = reqwest::Client::new();
        let mut out = Vec::new();
        for path in ["/", "/missing/page", "/boom", "/unavailable", "/reset", "/refused", "/not-ready"] {
            let url = format!("http://127.0.0.1:{port}{path}");
            let resp = client.get(url).header("host", "localhost").send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            if status >= 500 {
                assert!(
                    body.contains("Something went wrong on localhost"),
                    "{path}: the quickstart policy pages 5xx: {body}"
                );
            }
            out.push((path, status));
        }
        let other =
            client.get(format!("http://127.0.0.1:{port}/")).header("host", "nobody.example").send().await;
        out.push(("other host", other.unwrap().status().as_u16()));
        out
    });
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(
        statuses,
        vec![
            ("/", 200),
            ("/missing/page", 404),
            ("/boom", 500),
            ("/unavailable", 503),
            ("/reset", 502),
            ("/refused", 502),
            ("/not-ready", 503),
            ("other host", 404)
        ]
    );
}

#[test]
fn the_readme_documents_every_flag() {
    let help = String::from_utf8(erratum(&["run", "--help"]).stdout).unwrap();
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
        .filter(|w| !matches!(*w, "--help" | "--version"))
        .collect();
    assert!(flags.len() > 15, "{flags:?}");
    for flag in flags {
        assert!(readme.contains(&format!("`{flag}")), "README's configuration reference misses {flag}");
    }
}

/// The allocator is kept off transparent huge pages (each touched 2 MiB resident whole put an
/// idle keep-alive connection at ~23 KB instead of ~9 KB) unless `--transparent-huge-pages`:
/// the kernel's own view of the process (`THP_enabled` in /proc/PID/status, Linux 5.0+).
#[test]
fn transparent_huge_pages_are_off_unless_asked_for() {
    for (flags, expected) in [(&[][..], "0"), (&["--transparent-huge-pages"][..], "1")] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_erratum"))
            .args(["run", "--manifests", dir.path().to_str().unwrap(), "--http-addr", "127.0.0.1:0"])
            .args(["--https-addr", "off", "--admin-addr", "127.0.0.1:0", "--log-format", "json"])
            .args(flags)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        read_until(&mut stderr, "erratum serving");
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let thp = status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .map(str::trim)
            .expect("the kernel reports THP_enabled (Linux 5.0+)");
        sigterm(&child);
        assert_eq!(child.wait().unwrap().code(), Some(0));
        assert_eq!(thp, expected, "flags {flags:?}");
    }
}

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

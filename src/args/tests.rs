//! Unit tests of `args`.

use super::*;

fn parse(args: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(std::iter::once("erratum").chain(args.iter().copied()))
}

#[test]
fn defaults_match_the_documented_flags() {
    let Command::Run(run) = parse(&["run", "--manifests", "."]).unwrap().command else { panic!() };
    assert_eq!(run.http_addr, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(run.https_addr, OptionalAddr(Some("0.0.0.0:8443".parse().unwrap())));
    assert_eq!(run.tuning.upstream_connect_timeout, Duration::from_secs(5));
    assert_eq!(run.tuning.upstream_response_timeout, Duration::from_secs(60));
}

#[test]
fn bad_values_are_rejected() {
    assert!(parse(&["run", "--http-addr", "nope"]).is_err());
    assert!(parse(&["run", "--default-backend", "svc-without-namespace"]).is_err());
    assert!(parse(&["run", "--upstream-connect-timeout", "soon"]).is_err());
    let Command::Run(run) = parse(&["run", "--manifests", "/nonexistent/erratum"]).unwrap().command else {
        panic!()
    };
    assert!(matches!(run.into_config(), Err(Error::Manifests(_))));
    let Command::Run(run) = parse(&["run", "--manifests", ".", "--workers", "0"]).unwrap().command else {
        panic!()
    };
    assert!(matches!(run.into_config(), Err(Error::Invalid(_))));
}

#[test]
fn https_can_be_turned_off() {
    let Command::Run(run) = parse(&["run", "--https-addr", "off"]).unwrap().command else { panic!() };
    assert_eq!(run.https_addr, OptionalAddr(None));
}

#[test]
fn trusted_proxies_take_cidrs_and_addresses_and_refuse_the_rest() {
    let Command::Run(run) =
        parse(&["run", "--trusted-proxies", "10.0.0.0/8, 192.0.2.7,2001:db8::/32"]).unwrap().command
    else {
        panic!()
    };
    let nets: Vec<String> = run.tuning.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    let err = parse(&["run", "--trusted-proxies", "10.0.0.0/8,lb.example"]).unwrap_err().to_string();
    assert!(err.contains("\"lb.example\" is not a CIDR"), "{err}");
    let Command::Run(run) = parse(&["run"]).unwrap().command else { panic!() };
    assert!(run.tuning.trusted_proxies.is_empty(), "nobody is trusted by default");
}

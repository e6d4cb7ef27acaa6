use super::*;
use crate::table::{ObjectKey, PortRef};

fn metrics() -> Metrics {
    let opts = |n: &str| prometheus::Opts::new(n, n);
    Metrics {
        retries: IntCounterVec::new(opts("r"), &["reason"]).unwrap(),
        retries_denied: IntCounterVec::new(opts("d"), &["reason"]).unwrap(),
        ejections: IntCounter::new("e", "e").unwrap(),
        returns: IntCounter::new("b", "b").unwrap(),
        ejected: IntGauge::new("g", "g").unwrap(),
    }
}

fn backend(n: u16) -> Backend {
    let addrs = (1..=n).map(|i| SocketAddr::from(([10, 0, 0, i as u8], 80))).collect();
    Backend::new(ObjectKey::new("ns", "svc"), PortRef::Number(80), Target::Endpoints(addrs))
}

#[test]
fn consecutive_connect_failures_eject_within_the_share() {
    let settings = Settings { consecutive_failures: 2, ..Settings::default() };
    let b = Balancer::new(settings, metrics());
    let be = backend(3);
    b.report(&be, Some(0), Attempt::ConnectFailed);
    b.report(&be, Some(0), Attempt::Answered);
    b.report(&be, Some(0), Attempt::ConnectFailed);
    assert_eq!(b.outliers()[0].ejected_for, None, "a success in between resets the count");
    b.report(&be, Some(0), Attempt::ConnectFailed);
    assert!(b.outliers()[0].ejected_for.is_some());
    for _ in 0..30 {
        assert_ne!(b.pick(&be, LoadBalance::RoundRobin, &[]).unwrap().index, Some(0));
    }
    // A second endpoint failing stays in: 50 % of 3 is one.
    b.report(&be, Some(1), Attempt::ConnectFailed);
    b.report(&be, Some(1), Attempt::ConnectFailed);
    assert_eq!(b.outliers().iter().filter(|o| o.ejected_for.is_some()).count(), 1);
    // The only untried endpoint is ejected: it is used rather than refusing the request.
    assert_eq!(b.pick(&be, LoadBalance::RoundRobin, &[1, 2]).unwrap().index, Some(0));
    assert_eq!(b.pick(&be, LoadBalance::RoundRobin, &[0, 1, 2]).map(|p| p.index), Err(NO_READY_ENDPOINTS));
}

#[test]
fn a_single_endpoint_is_never_ejected() {
    let b = Balancer::new(Settings { consecutive_failures: 1, ..Settings::default() }, metrics());
    let be = backend(1);
    for _ in 0..5 {
        b.report(&be, Some(0), Attempt::ConnectFailed);
    }
    assert!(b.outliers().iter().all(|o| o.ejected_for.is_none()));
}

#[test]
fn ejections_grow_and_end() {
    let settings =
        Settings { consecutive_failures: 1, base_ejection: Duration::from_millis(30), ..Settings::default() };
    let b = Balancer::new(settings, metrics());
    let be = backend(2);
    b.report(&be, Some(0), Attempt::ConnectFailed);
    std::thread::sleep(Duration::from_millis(40));
    // The ejection ran out: picked again, and one more failure ejects it for twice as long.
    let picks: Vec<_> = (0..4).map(|_| b.pick(&be, LoadBalance::RoundRobin, &[]).unwrap().index).collect();
    assert!(picks.contains(&Some(0)), "{picks:?}");
    b.report(&be, Some(0), Attempt::ConnectFailed);
    let o = &b.outliers()[0];
    assert_eq!(o.ejections, 2);
    assert!(o.ejected_for.unwrap() > Duration::from_millis(30), "{o:?}");
    std::thread::sleep(Duration::from_millis(70));
    let _ = b.pick(&be, LoadBalance::RoundRobin, &[]);
    b.report(&be, Some(0), Attempt::Answered);
    assert!(b.outliers().is_empty(), "a success after the return clears the record");
}

#[test]
fn p2c_prefers_the_endpoint_with_fewer_in_flight() {
    let b = Balancer::new(Settings::default(), metrics());
    let be = backend(2);
    be.in_flight(0).store(5, Ordering::Relaxed);
    for _ in 0..20 {
        assert_eq!(b.pick(&be, LoadBalance::P2c, &[]).unwrap().index, Some(1));
    }
}

#[test]
fn the_budget_allows_a_share_of_requests() {
    let budget = Budget::new(20, 0);
    let mut allowed = 0;
    for _ in 0..1000 {
        budget.deposit();
        if budget.withdraw() {
            allowed += 1;
        }
    }
    // The saved-up cap, then one retry per five requests.
    assert!((200..=200 + BUDGET_CAP).contains(&allowed), "{allowed}");
    let quiet = Budget::new(20, 3);
    quiet.tokens.store(0, Ordering::Relaxed);
    assert_eq!((0..10).filter(|_| quiet.withdraw()).count(), 3, "the per-second allowance");
}

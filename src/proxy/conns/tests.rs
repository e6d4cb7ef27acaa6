//! Unit tests of `conns`.

use super::*;

fn registry(limit: usize) -> Arc<Connections> {
    registry_with(limit, Duration::from_secs(10), Duration::from_secs(10))
}

fn registry_with(limit: usize, head: Duration, response: Duration) -> Arc<Connections> {
    let shed = IntCounter::new("shed", "shed").expect("valid metric");
    Connections::new(limit, CancellationToken::new(), shed, head, response)
}

#[tokio::test]
async fn the_limit_sheds_the_oldest_idle_connection_first() {
    let conns = registry(2);
    let old = conns.acquire().await.expect("slot");
    let busy = Arc::new(conns.acquire().await.expect("slot"));
    let _working = busy.busy();
    // The idle one is `old`; the busy one must be spared.
    let waiter = tokio::spawn({
        let conns = conns.clone();
        async move { conns.acquire().await }
    });
    tokio::time::timeout(std::time::Duration::from_secs(5), old.signals.closed())
        .await
        .expect("the idle connection is asked to close");
    assert!(!busy.signals.close_requested(), "a busy connection is not shed");
    assert_eq!(conns.shed.get(), 1);
    drop(old);
    let new = waiter.await.expect("task").expect("slot after the shed one closed");
    assert_eq!(new.id, 2);
    assert_eq!(conns.open(), 2);
}

#[tokio::test]
async fn waiting_for_a_slot_ends_at_shutdown() {
    let conns = registry(1);
    let held = Arc::new(conns.acquire().await.expect("slot"));
    let _working = held.busy();
    conns.shutdown.cancel();
    assert!(conns.acquire().await.is_none());
}

#[tokio::test]
async fn shutdown_asks_every_connection_to_close_even_one_taken_during_it() {
    let conns = registry(4);
    let open = conns.acquire().await.expect("slot");
    assert!(!open.signals.close_requested());
    conns.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), open.signals.closed()).await.expect("asked to close");
    // A slot taken after the sweep is asked to close at once.
    let late = conns.acquire().await.expect("a permit is still free");
    assert!(late.signals.close_requested());
}

#[tokio::test]
async fn a_head_deadline_wakes_its_sleep_once_passed_and_not_after_the_head_arrived() {
    use hyper::rt::Timer;
    let conns = registry_with(4, Duration::from_millis(80), Duration::from_secs(60));
    let slot = conns.acquire().await.expect("slot");
    let timer = slot.head_timer();

    // A head that arrives in time: its sleep is dropped and nothing expires later.
    let arrived = timer.sleep(Duration::from_millis(30));
    drop(arrived);
    tokio::time::sleep(Duration::from_millis(60)).await;
    conns.expire_deadlines();
    assert_eq!(slot.signals.head.0.load(Ordering::Acquire), NONE, "a disarmed deadline never expires");

    // A head that never completes: the watcher wakes the sleep after its deadline.
    let started = Instant::now();
    let stalled = timer.sleep(Duration::from_millis(50));
    tokio::time::timeout(Duration::from_secs(5), stalled).await.expect("the watcher fires the deadline");
    assert!(started.elapsed() >= Duration::from_millis(50), "not before the deadline");

    // hyper's reset arms the new sleep before dropping the old: the new one stays armed.
    let old = timer.sleep(Duration::from_millis(10));
    let new = timer.sleep(Duration::from_secs(60));
    drop(old);
    tokio::time::sleep(Duration::from_millis(40)).await;
    conns.expire_deadlines();
    let head = slot.signals.head.0.load(Ordering::Acquire);
    assert!(head != NONE && head != EXPIRED, "the newer deadline is still armed");
    drop(new);
    assert_eq!(slot.signals.head.0.load(Ordering::Acquire), NONE);
}

#[tokio::test]
async fn an_upstream_answer_is_awaited_until_its_deadline_then_the_deadline_is_disarmed() {
    let conns = registry_with(4, Duration::from_secs(60), Duration::from_millis(80));
    let slot = conns.acquire().await.expect("slot");
    let answered = slot.within(Duration::from_millis(50), async { 7 }).await;
    assert_eq!(answered, Some(7));
    assert_eq!(slot.signals.response.0.load(Ordering::Acquire), NONE, "disarmed once answered");

    let started = Instant::now();
    let never = slot.within(Duration::from_millis(50), std::future::pending::<()>());
    let waited = tokio::time::timeout(Duration::from_secs(5), never).await.expect("the watcher fires it");
    assert_eq!(waited, None);
    assert!(started.elapsed() >= Duration::from_millis(50), "not before the deadline");
    assert_eq!(slot.signals.response.0.load(Ordering::Acquire), NONE, "disarmed once timed out");
    assert!(!slot.signals.head.expired(), "the head deadline is another one");
}

#[tokio::test]
async fn deadlines_armed_long_after_start_are_not_early() {
    let conns = registry_with(4, Duration::from_millis(80), Duration::from_secs(60));
    // The first client arrives well after the registry was made (a quiet start).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slot = conns.acquire().await.expect("slot");
    slot.arm_head();
    tokio::time::sleep(Duration::from_millis(20)).await;
    conns.expire_deadlines();
    assert!(!slot.signals.head.expired(), "80 ms from now, not from the start");
    tokio::time::sleep(Duration::from_millis(150)).await;
    conns.expire_deadlines();
    assert!(slot.signals.head.expired());
}

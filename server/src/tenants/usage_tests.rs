//! The usage counters' unit tests (a file of their own to keep `usage.rs` short).

use super::*;

const DAY_MS: i64 = 86_400_000;

#[test]
fn counts_roll_over_at_midnight_utc() {
    let clock = Clock::manual(10 * DAY_MS - 1_000);
    let usage = AppUsage::new(clock.clone(), 7);
    usage.count(3);
    assert_eq!(usage.messages_today(), 10);
    assert!(usage.messages_today() < 11);
    assert!(usage.messages_today() >= 10);
    clock.set_millis(10 * DAY_MS);
    assert_eq!(usage.messages_today(), 0);
    assert!(usage.messages_today() < 1);
    let batch = usage.take();
    // Yesterday's unflushed 3 messages are still written, to yesterday.
    assert!(batch.days.iter().any(|d| d.at == 9 && d.messages == 3));
}

#[test]
fn a_clock_stepped_back_keeps_the_current_day() {
    let clock = Clock::manual(10 * DAY_MS + 1_000);
    let usage = AppUsage::new(clock.clone(), 0);
    usage.count(5);
    clock.set_millis(10 * DAY_MS - 1_000);
    assert_eq!(usage.messages_today(), 5);
    assert!(usage.messages_today() >= 5);
}

#[test]
fn try_publish_checks_and_counts_at_once() {
    let clock = Clock::manual(3 * DAY_MS);
    let usage = AppUsage::new(clock, 0);
    assert!(usage.try_publish(Some(3), 2));
    assert!(usage.try_publish(Some(3), 2), "2 < 3: accepted, now 4");
    assert!(!usage.try_publish(Some(3), 1));
    assert_eq!(usage.messages_today(), 4);
    assert!(usage.try_publish(None, 1));
}

#[test]
fn the_allowance_admits_what_it_holds_and_everything_counted_comes_off_it() {
    let clock = Clock::manual(7 * DAY_MS);
    let usage = AppUsage::new(clock.clone(), 0);
    // Nothing granted yet: short, and nothing counted.
    assert_eq!(usage.try_publish_allowed(1, 0), None);
    let settled = usage.settle();
    assert_eq!((settled.day, settled.debt, settled.known), (7, 0, 0));
    assert_eq!(usage.grant(7, 3), 0);
    assert_eq!(usage.try_publish_allowed(2, 0), Some(1));
    // Deliveries after the admission take it below zero: a debt.
    usage.count(4);
    assert_eq!(usage.allowance(), -3);
    assert_eq!(
        usage.try_publish_allowed(1, 0),
        None,
        "no admission on a debt"
    );
    assert_eq!(
        usage.try_publish_allowed(1, 4),
        Some(-4),
        "within an overdraft"
    );
    let settled = usage.settle();
    assert_eq!(settled.debt, 4, "the debt is reported");
    assert_eq!(settled.known, 7, "2 + 4 + 1 counted, nothing held");
    assert_eq!(usage.allowance(), 0);
    usage.unsettle(&settled);
    assert_eq!(usage.allowance(), -4, "a report that failed is owed again");
    assert_eq!(usage.messages_today(), 7);
}

#[test]
fn a_past_days_allowance_is_handed_over_and_a_late_grant_goes_back() {
    let clock = Clock::manual(7 * DAY_MS);
    let usage = AppUsage::new(clock.clone(), 0);
    usage.settle();
    usage.grant(7, 10);
    assert_eq!(usage.try_publish_allowed(1, 0), Some(9));
    clock.set_millis(8 * DAY_MS);
    assert_eq!(usage.allowance(), 0, "a new day starts empty");
    usage.count(2);
    let settled = usage.settle();
    assert_eq!(settled.day, 8);
    assert_eq!(settled.debt, 2, "counted today before any grant");
    assert_eq!(
        settled.stale,
        vec![Allowance { day: 7, balance: 9 }],
        "yesterday's rest, to give back"
    );
    assert_eq!(usage.grant(7, 5), 5, "a grant for a past day goes back");
    assert_eq!(usage.grant(8, 5), 0);
    assert_eq!(
        usage.take_allowances(),
        vec![Allowance { day: 8, balance: 5 }]
    );
    assert_eq!(usage.allowance(), 0);
    usage.grant(8, 2);
    assert_eq!(
        usage.end_allowance(),
        vec![Allowance { day: 8, balance: 2 }]
    );
    usage.count(3);
    assert_eq!(
        usage.settle().debt,
        0,
        "an ended allowance collects no debt"
    );
}

#[test]
fn a_day_roll_keeps_an_unsettled_stale_allowance_and_a_failed_give_back_is_held_again() {
    let clock = Clock::manual(7 * DAY_MS);
    let usage = AppUsage::new(clock.clone(), 0);
    usage.settle();
    usage.grant(7, 10);
    usage.count(12);
    // Day 7 ends owing 2, not settled (Redis unreachable); day 8 ends holding 5.
    clock.set_millis(8 * DAY_MS);
    usage.grant(8, 5);
    clock.set_millis(9 * DAY_MS);
    let settled = usage.settle();
    assert_eq!(
        settled.stale,
        vec![
            Allowance {
                day: 7,
                balance: -2
            },
            Allowance { day: 8, balance: 5 }
        ],
        "the older debt is not overwritten"
    );
    // Giving back day 7 failed: it is held again, and settled by a later call.
    usage.keep_allowance(Allowance {
        day: 7,
        balance: -2,
    });
    assert_eq!(
        usage.settle().stale,
        vec![Allowance {
            day: 7,
            balance: -2
        }]
    );
    // Today's, given back after an idle period, failed: held again.
    usage.grant(9, 4);
    let ended = usage.end_allowance();
    assert_eq!(ended, vec![Allowance { day: 9, balance: 4 }]);
    usage.keep_allowance(ended[0]);
    assert_eq!(usage.allowance(), 4);
    // Bounded: days rolling with allowances never given back keep the last few.
    for day in 10..20 {
        clock.set_millis(day * DAY_MS);
        usage.grant(day, 1);
    }
    clock.set_millis(20 * DAY_MS);
    let stale = usage.settle().stale;
    assert_eq!(stale.len(), STALE_ALLOWANCES_KEPT);
    assert_eq!(
        stale.last(),
        Some(&Allowance {
            day: 19,
            balance: 1
        })
    );
}

#[test]
fn a_failed_flush_keeps_its_counts() {
    let clock = Clock::manual(5 * DAY_MS);
    let usage = AppUsage::new(clock, 0);
    usage.count(4);
    let batch = usage.take();
    assert_eq!(usage.messages_today(), 4, "in flight still counts");
    usage.restore(batch);
    assert_eq!(usage.messages_today(), 4);
    let batch = usage.take();
    assert_eq!(batch.day_messages, 4);
    usage.confirm(&batch, 4);
    assert_eq!(usage.messages_today(), 4);
    assert!(usage.take().is_empty());
}

#[tokio::test]
async fn a_flush_takes_its_counts_out_of_unflushed_before_it_writes_them() {
    let clock = Clock::manual(7 * DAY_MS);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&crate::config::sqlite_url(dir.path()), clock.clone())
        .await
        .unwrap();
    let usage = Usage::load(&store, clock.clone()).await.unwrap();
    usage.app("b").count(2);
    usage.app("a").count(5);
    assert_eq!(
        usage.unflushed_today(),
        (7, vec![("a".to_owned(), 5), ("b".to_owned(), 2)])
    );

    // In the hook the counts have left `unflushed` (still counted here, in flight) and are
    // not in the store yet: a reader adding the two never has them twice.
    let seen = std::sync::Mutex::new(None);
    let hook = || async {
        let stored = store.day_messages(7, &["a", "b"]).await.unwrap();
        *seen.lock_or_recover() = Some((
            usage.unflushed_today(),
            stored,
            usage.app("a").messages_today(),
        ));
    };
    assert_eq!(usage.flush_then(&store, hook).await.unwrap(), 2);
    assert_eq!(
        seen.lock_or_recover().take(),
        Some(((7, Vec::new()), vec![0, 0], 5))
    );
    assert_eq!(
        store.day_messages(7, &["b", "a", "c"]).await.unwrap(),
        vec![2, 5, 0]
    );
    assert_eq!(store.day_messages(7, &["a"]).await.unwrap(), vec![5]);
    assert_eq!(store.day_messages(6, &["a"]).await.unwrap(), vec![0]);
    assert_eq!(usage.app("a").unflushed(), 0);
    assert_eq!(usage.app("a").messages_today(), 5);

    // Counted after the take: unflushed again. Nothing new to write: no hook.
    usage.app("a").count(1);
    assert_eq!(usage.app("a").unflushed(), 1);
    usage.flush(&store).await.unwrap();
    let mut called = false;
    usage
        .flush_then(&store, || {
            called = true;
            async {}
        })
        .await
        .unwrap();
    assert!(!called, "no messages taken, no hook");
}

#[tokio::test]
async fn the_apps_lists_stored_counts_are_read_by_id_in_chunks() {
    let clock = Clock::manual(9 * DAY_MS);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&crate::config::sqlite_url(dir.path()), clock.clone())
        .await
        .unwrap();
    let usage = Usage::load(&store, clock.clone()).await.unwrap();
    usage.app("7").count(3);
    usage.app("1100").count(4);
    usage.app("not-listed").count(9);
    usage.flush(&store).await.unwrap();
    // More ids than one query takes: every chunk is read, in the order asked.
    let ids: Vec<String> = (0..1_200).map(|i| i.to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let counts = store.day_messages(9, &ids).await.unwrap();
    assert_eq!(counts.len(), 1_200);
    assert_eq!(counts[7], 3);
    assert_eq!(counts[1100], 4);
    assert_eq!(counts.iter().sum::<u64>(), 7, "only the listed apps' rows");
}

//! The vacate scripts against a real `redis-server` of the test's own: leases, comebacks, and the
//! delay of the vacates a re-registration or a dead node's cleanup causes.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::answers::{int, list, texts};
use super::state_scripts;
use super::vacate::{leased, Leased, Sweeper, PENDING_PER_APP};
use crate::cluster::test_redis::{redis_server, Server};
use crate::hub::{event_channel, Hub, Reported};

const NAME: &str = "t";
const P: &str = "t:st:";
const APP: &str = "app1";

async fn connect() -> (Server, MultiplexedConnection) {
    let server = redis_server().await;
    let client = redis::Client::open(server.url.as_str()).expect("a URL");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    (server, conn)
}

async fn run(conn: &mut MultiplexedConnection, script: &str, args: &[String]) -> Value {
    let script = redis::Script::new(script);
    let mut invocation = script.prepare_invoke();
    for arg in args {
        invocation.arg(arg);
    }
    invocation
        .invoke_async(conn)
        .await
        .expect("the script runs")
}

fn args(items: &[&dyn ToString]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

/// A subscribe on node `tag`: `{occupied, added}`.
async fn join(conn: &mut MultiplexedConnection, tag: u64, channel: &str, user: &str) -> [i64; 2] {
    let answer = list(
        run(
            conn,
            state_scripts::JOIN,
            &args(&[&P, &APP, &tag, &channel, &user, &"", &0]),
        )
        .await,
    );
    [int(&answer[0]), int(&answer[1])]
}

/// An unsubscribe on node `tag` with a vacate delay: `{vacated, removed}`.
async fn leave(
    conn: &mut MultiplexedConnection,
    tag: u64,
    channel: &str,
    user: &str,
    delay_ms: u64,
) -> [i64; 2] {
    let answer = list(
        run(
            conn,
            state_scripts::LEAVE,
            &args(&[&P, &APP, &tag, &channel, &user, &delay_ms]),
        )
        .await,
    );
    [int(&answer[0]), int(&answer[1])]
}

async fn due(conn: &mut MultiplexedConnection, limit: usize, apps: usize, lease_ms: u64) -> Leased {
    leased(
        run(
            conn,
            state_scripts::VACATE_DUE,
            &args(&[&P, &limit, &apps, &lease_ms]),
        )
        .await,
    )
}

/// Leases what is due, waiting (at most 5 s) until something is.
async fn take_when_due(conn: &mut MultiplexedConnection, lease_ms: u64) -> Leased {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let taken = due(conn, 1_000, 100, lease_ms).await;
        if !taken.entries.is_empty() {
            return taken;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing came due");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ack(conn: &mut MultiplexedConnection, taken: &Leased) -> i64 {
    let mut items = vec![P.to_owned(), taken.ends.to_string()];
    for (app, entry) in &taken.entries {
        items.push(app.clone());
        items.push(entry.clone());
    }
    int(&run(conn, state_scripts::VACATE_ACK, &items).await)
}

async fn count(conn: &mut MultiplexedConnection, command: &str, key: &str) -> i64 {
    redis::cmd(command)
        .arg(key)
        .query_async(conn)
        .await
        .expect("counts")
}

fn entries(taken: &Leased) -> Vec<(&str, &str)> {
    taken
        .entries
        .iter()
        .map(|(app, entry)| (app.as_str(), entry.as_str()))
        .collect()
}

#[tokio::test]
async fn a_leased_vacate_not_confirmed_is_taken_again_once_its_lease_runs_out() {
    let (_server, mut conn) = connect().await;
    join(&mut conn, 1, "c", "").await;
    assert_eq!(leave(&mut conn, 1, "c", "", 50).await, [2, 0], "pending");
    let first = take_when_due(&mut conn, 300).await;
    assert_eq!(entries(&first), [(APP, "c")]);
    let leased_at = tokio::time::Instant::now();
    assert!(
        due(&mut conn, 1_000, 100, 300).await.entries.is_empty(),
        "leased: no other node takes it meanwhile"
    );
    // The taker died (or lost the answer): nothing confirms it, and it comes due again.
    let again = take_when_due(&mut conn, 300).await;
    assert_eq!(entries(&again), [(APP, "c")]);
    assert!(
        leased_at.elapsed() >= Duration::from_millis(250),
        "{:?}",
        leased_at.elapsed()
    );
    assert_eq!(ack(&mut conn, &first).await, 0, "the first lease is over");
    assert_eq!(ack(&mut conn, &again).await, 1);
    assert_eq!(
        count(&mut conn, "ZCARD", &format!("{P}vacate-lease:{APP}")).await,
        0
    );
    assert_eq!(
        count(&mut conn, "ZCARD", &format!("{P}vacating:{APP}")).await,
        0
    );
    assert_eq!(
        count(&mut conn, "ZCARD", &format!("{P}vacating-apps")).await,
        0
    );
}

#[tokio::test]
async fn a_join_during_the_lease_is_no_comeback_and_a_later_vacate_outlives_the_confirmation() {
    let (_server, mut conn) = connect().await;
    join(&mut conn, 1, "c", "").await;
    leave(&mut conn, 1, "c", "", 20).await;
    let taken = take_when_due(&mut conn, 10_000).await;
    // The vacate is being fired: coming back now is a new occupied, not a cancelled vacate.
    assert_eq!(join(&mut conn, 1, "c", "").await, [1, 0]);
    assert_eq!(leave(&mut conn, 1, "c", "", 20).await, [2, 0]);
    assert_eq!(ack(&mut conn, &taken).await, 1);
    let later = take_when_due(&mut conn, 10_000).await;
    assert_eq!(
        entries(&later),
        [(APP, "c")],
        "the later vacate is still fired"
    );
}

#[tokio::test]
async fn one_sweep_takes_at_most_its_limits_across_all_apps() {
    let (_server, mut conn) = connect().await;
    for app in ["a1", "a2", "a3"] {
        for channel in ["x", "y"] {
            run(
                &mut conn,
                state_scripts::JOIN,
                &args(&[&P, &app, &1, &channel, &"", &"", &0]),
            )
            .await;
            run(
                &mut conn,
                state_scripts::LEAVE,
                &args(&[&P, &app, &1, &channel, &"", &1]),
            )
            .await;
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await; // All six are due.
    let one = due(&mut conn, 1_000, 1, 10_000).await;
    assert_eq!(one.entries.len(), 2, "one app's: {:?}", one.entries);
    assert_eq!(one.entries[0].0, one.entries[1].0);
    // Four are left, over two apps: a share of one each.
    let some = due(&mut conn, 1, 100, 10_000).await;
    assert_eq!(
        some.entries.len(),
        2,
        "one entry per app: {:?}",
        some.entries
    );
    assert_ne!(some.entries[0].0, some.entries[1].0);
    assert!(some.more, "more are due");
}

/// RESYNC on node `tag` registering `channels` (one subscription each) and `members`
/// (`channel, user`, one socket each) with a vacate delay of 10 s.
async fn resync(
    conn: &mut MultiplexedConnection,
    tag: u64,
    channels: &[&str],
    members: &[(&str, &str)],
) -> Vec<Vec<String>> {
    let mut items = args(&[&P, &APP, &tag, &channels.len(), &members.len(), &10_000]);
    for channel in channels {
        items.extend([channel.to_string(), "1".to_owned()]);
    }
    for (channel, user) in members {
        items.extend([
            channel.to_string(),
            user.to_string(),
            "1".to_owned(),
            String::new(),
        ]);
    }
    list(run(conn, state_scripts::RESYNC, &items).await)
        .into_iter()
        .map(texts)
        .collect()
}

#[tokio::test]
async fn a_re_registration_cancels_pending_vacates_and_delays_the_vacates_it_causes() {
    let (_server, mut conn) = connect().await;
    let pending = format!("{P}vacating:{APP}");
    join(&mut conn, 1, "c", "").await;
    join(&mut conn, 1, "presence-r", "u").await;
    leave(&mut conn, 1, "c", "", 10_000).await;
    leave(&mut conn, 1, "presence-r", "u", 10_000).await;
    assert_eq!(count(&mut conn, "ZCARD", &pending).await, 3);
    // Node 2 re-registers them: comebacks, with no webhook and no pending vacate left.
    let answer = resync(&mut conn, 2, &["c", "presence-r"], &[("presence-r", "u")]).await;
    assert_eq!(answer[0], Vec::<String>::new(), "no channel_occupied");
    assert_eq!(
        answer[2],
        ["presence-r", "u", "", "0"],
        "member_added frames, no webhook"
    );
    assert_eq!(count(&mut conn, "ZCARD", &pending).await, 0);
    // And drops them again: the vacates wait for the delay.
    let answer = resync(&mut conn, 2, &[], &[]).await;
    assert_eq!(answer[1], Vec::<String>::new(), "no channel_vacated now");
    assert_eq!(
        answer[3],
        ["presence-r", "u", "0"],
        "member_removed frames, no webhook now"
    );
    assert_eq!(count(&mut conn, "ZCARD", &pending).await, 3);
}

#[tokio::test]
async fn a_dead_nodes_vacates_wait_for_the_delay() {
    let (_server, mut conn) = connect().await;
    join(&mut conn, 9, "c", "").await;
    join(&mut conn, 9, "presence-r", "u").await;
    let answer = list(
        run(
            &mut conn,
            state_scripts::CLEANUP,
            &args(&[&P, &APP, &9, &10_000]),
        )
        .await,
    );
    let mut answer = answer.into_iter();
    assert_eq!(texts(answer.next().unwrap()), Vec::<String>::new());
    assert_eq!(texts(answer.next().unwrap()), ["presence-r", "u", "0"]);
    assert_eq!(
        int(&answer.next().unwrap()),
        2,
        "both channels' vacates pending"
    );
    assert_eq!(
        count(&mut conn, "ZCARD", &format!("{P}vacating:{APP}")).await,
        3
    );
    // Without a delay they are fired at once.
    join(&mut conn, 8, "d", "").await;
    let answer = list(
        run(
            &mut conn,
            state_scripts::CLEANUP,
            &args(&[&P, &APP, &8, &0]),
        )
        .await,
    );
    assert_eq!(texts(answer[0].clone()), ["d"]);
}

#[tokio::test]
async fn a_sweep_confirms_only_what_the_webhook_writer_handled_and_creates_no_app_state() {
    let (server, mut conn) = connect().await;
    let settings = crate::config::ClusterSettings::new(&server.url, NAME);
    let cluster = crate::cluster::Cluster::connect(settings, crate::clock::Clock::manual(0))
        .await
        .expect("connects");
    let mut sweeper = Sweeper::new(NAME, Duration::from_millis(300), Duration::from_secs(5));
    join(&mut conn, 1, "c", "").await;
    leave(&mut conn, 1, "c", "", 1).await;
    // Due after 1 ms.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A writer that is gone: nothing is confirmed, the vacate stays leased.
    let (events, gone) = event_channel(16);
    drop(gone);
    let hub = Hub::with_events(events);
    assert_eq!(sweeper.sweep(&cluster.inner, &hub).await, Ok(0));
    assert_eq!(
        count(&mut conn, "ZCARD", &format!("{P}vacate-lease:{APP}")).await,
        1
    );
    // A working writer, after the lease: fired and confirmed.
    let (events, mut writer) = event_channel(16);
    let hub = Hub::with_events(events);
    let written = tokio::spawn(async move {
        let mut written = Vec::new();
        while let Some(queued) = writer.recv_queued().await {
            match queued {
                Reported::Event(event) => written.push(event),
                Reported::Mark(mark) => {
                    mark.done();
                    return written;
                }
            }
        }
        written
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sweeper.sweep(&cluster.inner, &hub).await != Ok(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "taken again after the lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = written.await.expect("the writer ends");
    assert_eq!(written.len(), 1);
    assert_eq!(&*written[0].app_id, APP);
    assert_eq!(written[0].event.channel_name(), "c");
    assert!(hub.existing_app(APP).is_none(), "no app state made for it");
    assert_eq!(
        count(&mut conn, "ZCARD", &format!("{P}vacate-lease:{APP}")).await,
        0
    );
    assert_eq!(
        count(&mut conn, "ZCARD", &format!("{P}vacating-apps")).await,
        0
    );
}

/// Leaves `channel` of `app` on node 1 after joining it, with a vacate delay of `delay_ms`.
async fn vacate_in(conn: &mut MultiplexedConnection, app: &str, channel: &str, delay_ms: u64) {
    run(
        conn,
        state_scripts::JOIN,
        &args(&[&P, &app, &1, &channel, &"", &"", &0]),
    )
    .await;
    run(
        conn,
        state_scripts::LEAVE,
        &args(&[&P, &app, &1, &channel, &"", &delay_ms]),
    )
    .await;
}

#[tokio::test]
async fn an_app_with_many_due_vacates_takes_its_share_and_the_others_theirs() {
    let (_server, mut conn) = connect().await;
    for at in 0..150 {
        vacate_in(&mut conn, "big", &format!("c{at}"), 1).await;
    }
    vacate_in(&mut conn, "small", "c", 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await; // All are due.
    let run = due(&mut conn, 100, 100, 10_000).await;
    let small = run.entries.iter().filter(|(app, _)| app == "small").count();
    assert_eq!(small, 1, "the small app is not starved");
    assert_eq!(
        run.entries.len(),
        101,
        "the big app's share and the small one's"
    );
    assert!(run.more, "the big app has more due");
    // The big app is scored with its earliest due (its rest, due now), the small one with its
    // lease's end.
    let apps: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{P}vacating-apps"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("a ZSET");
    assert_eq!(apps, ["big", "small"]);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{P}vacating-apps"))
        .query_async(&mut conn)
        .await
        .expect("a TTL");
    assert!(ttl > 0, "the app list expires: {ttl}");
    let rest = due(&mut conn, 100, 100, 10_000).await;
    assert_eq!(rest.entries.len(), 50);
    assert!(!rest.more);
}

#[tokio::test]
async fn over_the_cap_a_vacate_is_fired_at_once_and_an_app_wanting_none_records_nothing() {
    assert!(
        state_scripts::LEAVE.contains(&format!("ZCARD', key) >= {PENDING_PER_APP}")),
        "the Lua's cap is PENDING_PER_APP"
    );
    let (_server, mut conn) = connect().await;
    let mut fill = redis::cmd("ZADD");
    fill.arg(format!("{P}vacating:{APP}"));
    for at in 0..PENDING_PER_APP {
        fill.arg(i64::MAX / 2).arg(format!("x{at}"));
    }
    let _: i64 = fill.query_async(&mut conn).await.expect("filled");
    join(&mut conn, 1, "c", "").await;
    assert_eq!(
        leave(&mut conn, 1, "c", "", 10_000).await,
        [1, 0],
        "fired now"
    );
    assert_eq!(
        count(&mut conn, "ZCARD", &format!("{P}vacating:{APP}")).await,
        i64::try_from(PENDING_PER_APP).expect("small")
    );
}

#[tokio::test]
async fn a_run_out_lease_of_a_vacate_pending_again_is_dropped_not_fired() {
    let (_server, mut conn) = connect().await;
    join(&mut conn, 1, "c", "").await;
    leave(&mut conn, 1, "c", "", 1).await;
    let taken = take_when_due(&mut conn, 50).await;
    assert_eq!(entries(&taken), [(APP, "c")]);
    // Not confirmed; the channel comes back and is vacated again, pending for 10 s.
    assert_eq!(join(&mut conn, 1, "c", "").await[0], 1);
    assert_eq!(leave(&mut conn, 1, "c", "", 10_000).await, [2, 0]);
    tokio::time::sleep(Duration::from_millis(100)).await; // The lease ran out.
    let again = due(&mut conn, 100, 100, 10_000).await;
    assert!(again.entries.is_empty(), "{:?}", again.entries);
    assert_eq!(
        count(&mut conn, "ZCARD", &format!("{P}vacate-lease:{APP}")).await,
        0,
        "the old lease is dropped"
    );
    assert_eq!(
        count(&mut conn, "ZCARD", &format!("{P}vacating:{APP}")).await,
        1,
        "the newer vacate is still pending"
    );
}

#[tokio::test]
async fn a_writer_behind_keeps_its_leases_renewed_and_writes_each_webhook_once() {
    let (server, mut conn) = connect().await;
    let settings = crate::config::ClusterSettings::new(&server.url, NAME);
    let cluster = crate::cluster::Cluster::connect(settings, crate::clock::Clock::manual(0))
        .await
        .expect("connects");
    let lease = Duration::from_millis(600);
    let mut sweeper = Sweeper::new(NAME, lease, Duration::from_millis(100));
    let mut other = Sweeper::new(NAME, lease, Duration::from_millis(100));
    join(&mut conn, 1, "c", "").await;
    leave(&mut conn, 1, "c", "", 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await; // Due.
                                                         // A writer that holds its first mark until told.
    let (events, mut writer) = event_channel(16);
    let hub = Hub::with_events(events);
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let written = tokio::spawn(async move {
        let mut written = Vec::new();
        let mut held = Some((held_tx, release_rx));
        while let Some(queued) = writer.recv_queued().await {
            match queued {
                Reported::Event(event) => written.push(event),
                Reported::Mark(mark) => match held.take() {
                    Some((held_tx, release_rx)) => {
                        let _ = held_tx.send(());
                        let _ = release_rx.await;
                        mark.done();
                    }
                    None => mark.done(),
                },
            }
            if written.len() > 1 {
                break;
            }
        }
        written
    });
    assert_eq!(sweeper.sweep(&cluster.inner, &hub).await, Ok(0));
    held_rx.await.expect("the mark is held");
    // Three leases long: this node renews, another node finds nothing due.
    let until = tokio::time::Instant::now() + lease * 3;
    while tokio::time::Instant::now() < until {
        assert_eq!(sweeper.sweep(&cluster.inner, &hub).await, Ok(0));
        assert_eq!(other.sweep(&cluster.inner, &hub).await, Ok(0));
    }
    release_tx.send(()).expect("the writer waits");
    assert_eq!(
        sweeper.sweep(&cluster.inner, &hub).await,
        Ok(1),
        "confirmed"
    );
    drop(hub);
    drop(sweeper);
    drop(other);
    let written = written.await.expect("the writer ends");
    assert_eq!(written.len(), 1, "written once");
    assert_eq!(
        count(&mut conn, "ZCARD", &format!("{P}vacate-lease:{APP}")).await,
        0
    );
}

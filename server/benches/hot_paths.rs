//! Hot-path micro-benchmarks: `cargo bench -p herald-server --bench hot_paths`.
//!
//! The fan-out benchmark carries its own baseline in the same run: serializing the event once and
//! sharing the bytes (what the hub does) against serializing it again for every subscriber.
//! The socket fan-out writes to real loopback sockets, with and without the `/metrics` bytes-out
//! counter (one relaxed add per `sendmsg`), in the same run.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use herald::auth::{self, RestRequest};
use herald::hub::{AppHub, Connection, DetachedOutbox, SubscribeOptions};
use herald::outbox::Outbox;
use herald::protocol::{server, ws, ChannelName, ClientFrame, SocketId};

fn decode(c: &mut Criterion) {
    let subscribe = r#"{"event":"pusher:subscribe","data":{"auth":"278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4","channel":"private-foobar"}}"#;
    c.bench_function("decode pusher:subscribe", |b| {
        b.iter(|| ClientFrame::decode(std::hint::black_box(subscribe)))
    });
}

fn verify(c: &mut Criterion) {
    let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    let params: Vec<herald::protocol::QueryPair<'_>> = [
        ("auth_key", "278d425bdf160c739803"),
        ("auth_timestamp", "1353088179"),
        ("auth_version", "1.0"),
        ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
        (
            "auth_signature",
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).into(), (*v).into()))
    .collect();
    c.bench_function("verify a signed REST trigger", |b| {
        b.iter(|| {
            let request = RestRequest {
                method: "POST",
                path: "/apps/3/events",
                params: &params,
                body,
            };
            auth::verify_rest(&request, "7ad3773142a6692b25b8", 1353088179)
        })
    });
}

fn fan_out(c: &mut Criterion) {
    let data = r#"{"message":"hello","user":{"id":42,"name":"someone"},"items":[1,2,3,4,5]}"#;
    let mut group = c.benchmark_group("fan-out to N subscribers");
    for subscribers in [100usize, 1000] {
        let hub = AppHub::default();
        let channel = ChannelName::parse("news", 200).unwrap();
        let mut outboxes = Vec::new();
        for i in 0..subscribers {
            let (conn, outbox) = Connection::new(SocketId::new(i as u64, 1), 4);
            hub.connect(&conn, None);
            hub.subscribe(&conn, &channel, None, SubscribeOptions::default())
                .unwrap();
            outboxes.push((conn, outbox));
        }
        let drain = |outboxes: &mut Vec<(Arc<Connection>, DetachedOutbox)>| {
            for (_, outbox) in outboxes.iter_mut() {
                while outbox.try_recv().is_some() {}
            }
        };
        drain(&mut outboxes);
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(
            BenchmarkId::new("hub: serialized once, bytes shared", subscribers),
            &subscribers,
            |b, _| {
                b.iter(|| {
                    hub.publish(&channel, "update", data, None);
                    drain(&mut outboxes);
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("baseline: serialized per subscriber", subscribers),
            &subscribers,
            |b, _| {
                b.iter(|| {
                    for (conn, _) in &outboxes {
                        conn.outbox()
                            .push(server::channel_event("update", "news", data));
                    }
                    drain(&mut outboxes);
                })
            },
        );
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let data = r#"{"message":"hello","user":{"id":42,"name":"someone"},"items":[1,2,3,4,5]}"#;
    c.bench_function(
        "encode a channel event (JSON frame and WebSocket header)",
        |b| {
            b.iter(|| {
                let frame = server::channel_event("update", "news", std::hint::black_box(data));
                let mut header = [0u8; ws::MAX_SERVER_HEADER];
                let used = ws::server_header(ws::opcode::TEXT, frame.len(), &mut header);
                (frame, header, used)
            })
        },
    );
    let mut masked = Vec::new();
    let text = br#"{"event":"pusher:subscribe","data":{"channel":"private-foobar","auth":"278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"}}"#;
    masked.extend_from_slice(&[0x81, 0x80 | 126]);
    masked.extend_from_slice(&(text.len() as u16).to_be_bytes());
    masked.extend_from_slice(&[1, 2, 3, 4]);
    let mut payload = text.to_vec();
    ws::unmask(&mut payload, [1, 2, 3, 4]);
    masked.extend_from_slice(&payload);
    c.bench_function("read a masked client frame (parse, unmask, UTF-8)", |b| {
        let mut reader = ws::Reader::default();
        b.iter(|| {
            let mut input = masked.clone();
            let mut seen = 0;
            reader
                .feed(&mut input, 64 * 1024, |_| {
                    seen += 1;
                    true
                })
                .unwrap();
            seen
        })
    });
}

/// A publish to 100 subscribers on loopback sockets (their peers drained after each), with
/// unmetered outboxes and with the bytes-out counter `/metrics` reads: the counter's cost per
/// delivery is the difference.
fn socket_fan_out(c: &mut Criterion) {
    use std::io::Read;
    use std::sync::atomic::AtomicU64;
    const SUBSCRIBERS: usize = 100;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let data = r#"{"message":"hello","user":{"id":42,"name":"someone"},"items":[1,2,3,4,5]}"#;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let mut group = c.benchmark_group("fan-out over loopback sockets");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    for metered in [false, true] {
        let hub = AppHub::default();
        let channel = ChannelName::parse("news", 200).unwrap();
        let bytes_out = Arc::new(AtomicU64::new(0));
        let mut peers = Vec::new();
        let mut conns = Vec::new();
        for i in 0..SUBSCRIBERS {
            let peer = std::net::TcpStream::connect(address).unwrap();
            let (server, _) = listener.accept().unwrap();
            server.set_nonblocking(true).unwrap();
            peer.set_nonblocking(true).unwrap();
            let server = Arc::new(tokio::net::TcpStream::from_std(server).unwrap());
            let outbox = if metered {
                Outbox::socket_metered(server, 64, bytes_out.clone())
            } else {
                Outbox::socket(server, 64)
            };
            let conn = Arc::new(Connection::with_outbox(
                SocketId::new(i as u64, 1),
                "key",
                outbox,
            ));
            hub.connect(&conn, None);
            hub.subscribe(&conn, &channel, None, SubscribeOptions::default())
                .unwrap();
            conns.push(conn);
            peers.push(peer);
        }
        let mut buffer = vec![0u8; 64 * 1024];
        // Until the runtime's driver has marked every new socket writable, a write may find it
        // not ready and leave its frame queued (for a connection task this benchmark does not
        // run): publish until every subscriber takes one at once.
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            for conn in &conns {
                conn.outbox().discard_backlog();
            }
            hub.publish(&channel, "update", data, None);
            for peer in &mut peers {
                while matches!(peer.read(&mut buffer), Ok(n) if n > 0) {}
            }
            if conns.iter().all(|c| c.outbox().backlog() == 0) {
                break;
            }
        }
        let name = if metered {
            "with the bytes-out counter"
        } else {
            "without"
        };
        group.bench_with_input(BenchmarkId::new(name, SUBSCRIBERS), &SUBSCRIBERS, |b, _| {
            b.iter(|| {
                hub.publish(&channel, "update", data, None);
                for peer in &mut peers {
                    while matches!(peer.read(&mut buffer), Ok(n) if n > 0) {}
                }
            })
        });
        assert!(
            conns.iter().all(|c| c.outbox().backlog() == 0),
            "every frame was written"
        );
        if metered {
            assert!(bytes_out.load(std::sync::atomic::Ordering::Relaxed) > 0);
        }
    }
    group.finish();
    let counter = AtomicU64::new(0);
    c.bench_function("the bytes-out add alone (relaxed fetch_add)", |b| {
        b.iter(|| {
            counter.fetch_add(
                std::hint::black_box(150),
                std::sync::atomic::Ordering::Relaxed,
            )
        })
    });
}

criterion_group!(benches, decode, encode, verify, fan_out, socket_fan_out);
criterion_main!(benches);

//! Stress tests through the public API: the kick / idle / cull protocol,
//! and the paths where a lost wakeup hides behind later events (cancelled
//! reads, timers moving between workers, wakes racing aborts, a shutdown
//! with everything in flight).
//!
//! Each runs under a watchdog: a lost wakeup or a stranded item shows up as
//! a stall, reported as a failure instead of a hung test. Sizes are bounded
//! so the whole file takes seconds on a 2-CPU machine.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use wq::{Runtime, Scope, Topology, WakeMode};

const WATCHDOG: Duration = Duration::from_secs(120);

/// Runs `f` under the shared watchdog with this file's limit.
fn within_watchdog(name: &str, f: impl FnOnce() + Send + 'static) {
    common::within_watchdog(name, WATCHDOG, f)
}

fn culling_runtime(topology: &str, mode: WakeMode) -> Runtime {
    Runtime::builder()
        .topology(Topology::synthetic(topology).unwrap())
        .wake_mode(mode)
        // 8 workers per pool (the layout's pods have 2 to 16 CPUs), even
        // on a smaller machine (the default caps pools at the CPUs the
        // process may use): a pool keeps 2 idle workers, and only those
        // over 2 are culled.
        .max_workers_per_pool(8)
        // Cull constantly.
        .idle_timeout(Duration::from_millis(1))
        .worker_spin(Duration::ZERO)
        .build()
        .unwrap()
}

/// A completion a producer thread parks on until its item ran.
fn run_one_at_a_time(rt: &Runtime, scope: Scope, items: usize) {
    let me = std::thread::current();
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..items {
        let (d, t) = (done.clone(), me.clone());
        drop(rt.spawn_on(scope, async move {
            d.store(i + 1, Ordering::Release);
            t.unpark();
        }));
        while done.load(Ordering::Acquire) != i + 1 {
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

#[test]
fn many_producers_one_item_at_a_time_while_culling() {
    for mode in WakeMode::ALL {
        within_watchdog("producers", move || {
            let rt = Arc::new(culling_runtime("pack:2 l3:2 core:2 pu:2", mode));
            let producers: Vec<_> = (0..8)
                .map(|p| {
                    let rt = rt.clone();
                    std::thread::spawn(move || {
                        let scope =
                            [Scope::System, Scope::Cache, Scope::CacheShard, Scope::Cpu][p % 4];
                        run_one_at_a_time(&rt, scope, 1500);
                        // Let workers idle past the timeout, then go again.
                        std::thread::sleep(Duration::from_millis(3));
                        run_one_at_a_time(&rt, scope, 500);
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            let m = rt.metrics();
            let culled: u64 = m.pools.iter().map(|p| p.counters.workers_culled).sum();
            let started: u64 = m.pools.iter().map(|p| p.counters.started).sum();
            // Counters are published when workers idle; most are by now.
            assert!(started > 0, "{m}");
            // Culling happened while work kept arriving.
            assert!(culled > 0, "{mode}: no worker was culled: {m}");
        });
    }
}

#[test]
fn live_topology_one_item_at_a_time_while_culling() {
    within_watchdog("live", || {
        let rt = Arc::new(
            Runtime::builder()
                .idle_timeout(Duration::from_millis(1))
                .build()
                .unwrap(),
        );
        let producers: Vec<_> = (0..4)
            .map(|_| {
                let rt = rt.clone();
                std::thread::spawn(move || run_one_at_a_time(&rt, Scope::System, 2000))
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
    });
}

fn tree(depth: u32) -> std::pin::Pin<Box<dyn std::future::Future<Output = usize> + Send>> {
    Box::pin(async move {
        if depth == 0 {
            return 1;
        }
        let scope = Scope::ALL[depth as usize % Scope::ALL.len()];
        let left = wq::spawn_on(scope, tree(depth - 1));
        let right = wq::spawn(tree(depth - 1));
        left.await.unwrap() + right.await.unwrap()
    })
}

#[test]
fn nested_and_cross_scope_spawns() {
    within_watchdog("nested", || {
        let rt = culling_runtime("pack:2 numa:2 l3:1 core:2 pu:1", WakeMode::Deferred);
        for _ in 0..5 {
            assert_eq!(rt.block_on(tree(9)), 512);
        }
    });
}

#[test]
fn yield_storm() {
    within_watchdog("yield", || {
        let rt = culling_runtime("core:4 pu:1", WakeMode::Deferred);
        let n = rt.block_on(async {
            let hs: Vec<_> = (0..100)
                .map(|i| {
                    wq::spawn_on(Scope::ALL[i % 6], async move {
                        for _ in 0..200 {
                            wq::task::yield_now().await;
                        }
                        1usize
                    })
                })
                .collect();
            let mut n = 0;
            for h in hs {
                n += h.await.unwrap();
            }
            n
        });
        assert_eq!(n, 100);
    });
}

#[test]
fn ping_pong_across_pods_and_threads() {
    within_watchdog("ping_pong", || {
        let rt = culling_runtime("pack:2 l3:2 core:1 pu:1", WakeMode::UnderLock);
        rt.block_on(async {
            let mut hs = Vec::new();
            for pair in 0..50 {
                let (tx1, mut rx1) = futures::channel::mpsc::channel::<u32>(1);
                let (mut tx2, rx2) = futures::channel::mpsc::channel::<u32>(1);
                let a = Scope::ALL[pair % 6];
                let b = Scope::ALL[(pair + 3) % 6];
                hs.push(wq::spawn_on(a, async move {
                    use futures::{SinkExt, StreamExt};
                    let mut tx1 = tx1;
                    let mut rx2 = rx2;
                    for i in 0..100 {
                        tx1.send(i).await.unwrap();
                        assert_eq!(rx2.next().await, Some(i + 1));
                    }
                }));
                hs.push(wq::spawn_on(b, async move {
                    use futures::{SinkExt, StreamExt};
                    while let Some(i) = rx1.next().await {
                        tx2.send(i + 1).await.unwrap();
                    }
                }));
            }
            for h in hs {
                h.await.unwrap();
            }
        });
    });
}

#[test]
fn runtimes_dropped_under_load_leak_nothing() {
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    struct Live;
    impl Drop for Live {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }
    within_watchdog("drop", || {
        for round in 0..50 {
            let rt = culling_runtime("pack:2 core:2 pu:1", WakeMode::ALL[round % 2]);
            for i in 0..100 {
                LIVE.fetch_add(1, Ordering::SeqCst);
                let live = Live;
                drop(rt.spawn_on(Scope::ALL[i % 6], async move {
                    let _live = live;
                    for _ in 0..(i % 4) {
                        wq::task::yield_now().await;
                    }
                    if i % 3 == 0 {
                        futures::future::pending::<()>().await;
                    }
                }));
            }
            drop(rt);
            assert_eq!(LIVE.load(Ordering::SeqCst), 0, "round {round}");
        }
    });
}

/// Timers fire in whichever worker's driver turn is due, into that
/// worker's own queue, while workers are culled every millisecond: a task
/// woken into a worker just culled must still run (it was once dropped
/// with the culled worker, its `JoinHandle` reporting it cancelled).
#[test]
fn tasks_woken_by_timers_survive_culling() {
    within_watchdog("timers-culling", || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 l3:1 core:8 pu:1").unwrap())
            // 8 workers even on a smaller machine: only those over the 2
            // idle ones a pool keeps are culled.
            .max_workers_per_pool(8)
            .idle_timeout(Duration::from_millis(1))
            .worker_spin(Duration::ZERO)
            .build()
            .unwrap();
        rt.block_on(async {
            for round in 0..20u64 {
                let tasks: Vec<_> = (0..64u64)
                    .map(|i| {
                        wq::spawn_on(Scope::System, async move {
                            for k in 0..3 {
                                let ms = 1 + (i + k + round) % 3;
                                wq::time::sleep(Duration::from_millis(ms)).await;
                            }
                            i
                        })
                    })
                    .collect();
                for (i, t) in tasks.into_iter().enumerate() {
                    match t.await {
                        Ok(got) => assert_eq!(got, i as u64),
                        Err(e) => panic!("round {round}: task {i} was lost: {e}"),
                    }
                }
                // Let workers idle past the timeout and be culled.
                wq::time::sleep(Duration::from_millis(3)).await;
            }
        });
        let m = rt.metrics();
        let culled: u64 = m.pools.iter().map(|p| p.counters.workers_culled).sum();
        assert!(
            culled > 0,
            "no worker was culled: the test proves nothing: {m}"
        );
    });
}

/// Long polls that spawn as they go, while the watchdog empties their
/// workers' LIFO slots (`pool/lifo.rs`): every child runs once, none is
/// lost, whether the worker or the watchdog takes it out.
#[test]
fn children_of_long_polls_run_once_while_the_watchdog_takes_them() {
    within_watchdog("lifo-steals", || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
            .default_scope(Scope::System)
            .max_workers_per_pool(2)
            .cpu_hog_threshold(Duration::from_millis(1))
            .build()
            .unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let mut spawned = 0;
        for round in 0..30usize {
            let parents: Vec<_> = (0..2)
                .map(|p| {
                    let ran = ran.clone();
                    rt.spawn(async move {
                        // A poll of a few ms, spawning a child (into this
                        // worker's LIFO slot, displacing the last one)
                        // every ~50-150 us.
                        let mut children = Vec::new();
                        let start = std::time::Instant::now();
                        let mut i = 0;
                        while start.elapsed() < Duration::from_millis(3) {
                            let ran = ran.clone();
                            children.push(wq::spawn(async move {
                                ran.fetch_add(1, Ordering::SeqCst);
                            }));
                            i += 1;
                            let pause =
                                Duration::from_micros(50 + 50 * ((i + p + round) % 3) as u64);
                            let t = std::time::Instant::now();
                            while t.elapsed() < pause {
                                std::hint::spin_loop();
                            }
                        }
                        for (k, c) in children.iter_mut().enumerate() {
                            if let Err(e) = c.await {
                                panic!("round {round}: child {k} of parent {p}: {e}");
                            }
                        }
                        children.len()
                    })
                })
                .collect();
            for p in parents {
                spawned += rt.block_on(p).unwrap();
            }
        }
        assert_eq!(
            ran.load(Ordering::SeqCst),
            spawned,
            "a child ran twice or never"
        );
        let pool = &rt.metrics().pools[0];
        assert!(
            pool.counters.lifo_stolen > 0,
            "the watchdog took no child: the test proves nothing: {pool:?}"
        );
    });
}

/// A runtime of 8-worker pools that spin for up to `spin`, watching the
/// injector only (`Some(false)`, and the default for pools wider than
/// four: `None`) or the deques too. No CPU-hog watchdog: its moves of a
/// blocked worker's deque would hide a task stranded there.
fn spinning_runtime(watch_deques: Option<bool>, spin: Duration) -> Runtime {
    let b = Runtime::builder()
        .topology(Topology::synthetic("pack:2 core:8 pu:1").unwrap())
        .max_workers_per_pool(8)
        .worker_spin(spin)
        .cpu_hog_threshold(Duration::ZERO)
        .idle_timeout(Duration::from_millis(5));
    match watch_deques {
        Some(w) => b.spin_watches_deques(w),
        None => b,
    }
    .build()
    .unwrap()
}

/// Work pushed on workers' deques (spawn trees, wakes between tasks), on
/// the injector (a thread outside), and by driver turns (timers), with
/// spinners watching either way: nothing is stranded (the re-checks
/// before parking find deque work the spinners do not watch).
#[test]
fn spinners_watching_either_way_strand_nothing() {
    for (watch_deques, spin) in [
        (None, wq::DEFAULT_WORKER_SPIN),
        (Some(false), Duration::from_millis(100)),
        (Some(true), wq::DEFAULT_WORKER_SPIN),
        (Some(true), Duration::from_millis(100)),
    ] {
        within_watchdog("spin watch", move || {
            let rt = spinning_runtime(watch_deques, spin);
            for _ in 0..3 {
                assert_eq!(rt.block_on(tree(9)), 512);
            }
            let h = rt.handle();
            // Timers firing in bursts: a driver turn wakes many at once.
            let n = rt.block_on(async {
                let hs: Vec<_> = (0..400)
                    .map(|i| {
                        wq::spawn(async move {
                            for _ in 0..3 {
                                wq::time::sleep(Duration::from_millis(1 + i % 3)).await;
                            }
                            1usize
                        })
                    })
                    .collect();
                let mut n = 0;
                for h in hs {
                    n += h.await.unwrap();
                }
                n
            });
            assert_eq!(n, 400);
            // From outside, one at a time: each item lands on the injector
            // while the workers spin or park.
            let done = Arc::new(AtomicUsize::new(0));
            for i in 0..2000 {
                let d = done.clone();
                h.block_on(h.spawn(async move {
                    d.store(i + 1, Ordering::Release);
                }))
                .unwrap();
            }
            assert_eq!(done.load(Ordering::Acquire), 2000);
        });
    }
}

/// A task queues children on its worker (its LIFO slot and deque), then
/// blocks in `block_in_place` until they ran: they run meanwhile (taken by
/// a spinner on the deque alert, a kicked worker, or the re-checks at a
/// spin's end), with no watchdog to move them, also with spins of 100 ms
/// that watch only the injector.
#[test]
fn children_of_a_blocked_task_run_while_it_blocks() {
    for (watch_deques, spin) in [
        (None, wq::DEFAULT_WORKER_SPIN),
        (Some(false), Duration::from_millis(100)),
        (Some(true), Duration::from_millis(100)),
    ] {
        within_watchdog("block with children", move || {
            let rt = spinning_runtime(watch_deques, spin);
            for round in 0..20 {
                let ran = rt.block_on(rt.spawn(async move {
                    let ran = Arc::new(AtomicUsize::new(0));
                    for _ in 0..4 {
                        let r = ran.clone();
                        drop(wq::spawn(async move {
                            r.fetch_add(1, Ordering::AcqRel);
                        }));
                    }
                    let r = ran.clone();
                    wq::block_in_place(move || {
                        let deadline = std::time::Instant::now() + Duration::from_secs(60);
                        while r.load(Ordering::Acquire) < 4 {
                            assert!(
                                std::time::Instant::now() < deadline,
                                "round {round}: the children of a blocked task did not run"
                            );
                            std::thread::sleep(Duration::from_micros(50));
                        }
                    });
                    ran.load(Ordering::Acquire)
                }));
                assert_eq!(ran.unwrap(), 4);
            }
        });
    }
}

/// A small xorshift generator: each connection's choices, fixed by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Reads cancelled at every point lose no readiness: on 64 loopback
/// connections written in bursts with pauses, each reader reads under
/// timeouts that often expire (the read future dropped after it
/// registered its waker), polls a read once and drops it, waits on
/// `readable` under a timeout, or reads plainly, and hands its half to a
/// new task now and then (its waker replaced by another task's). Half the
/// time the writer waits for the reader to have its chunk, so that the
/// chunk's readiness is the only event that can wake it. Every byte
/// arrives once, in order, and no reader stalls on data the kernel
/// holds.
#[test]
fn reads_cancelled_at_every_point_lose_no_readiness() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use std::task::Poll;
    use wq::net::tcp::OwnedReadHalf;
    use wq::net::{TcpListener, TcpStream};

    const CONNS: usize = 64;
    const BYTES: usize = 48 * 1024;
    fn byte(conn: usize, i: usize) -> u8 {
        (i * 31 + conn * 7) as u8
    }

    /// What a reader has read so far, carried from task to task.
    struct Reading {
        conn: usize,
        half: OwnedReadHalf,
        got: Vec<u8>,
        rng: Rng,
        cancelled: usize,
        /// How many bytes it has read, after each read, to the writer.
        progress: futures::channel::mpsc::UnboundedSender<usize>,
    }

    /// Reads until EOF, and hands itself to a new task every 16 reads.
    fn read_on(mut r: Reading) -> wq::JoinHandle<Reading> {
        wq::spawn(async move {
            let mut buf = [0u8; 4096];
            for _ in 0..16 {
                let len = 1 + r.rng.below(buf.len() as u64) as usize;
                let buf = &mut buf[..len];
                let n = match r.rng.below(4) {
                    0 => {
                        let wait = Duration::from_micros(50 + r.rng.below(1500));
                        match wq::time::timeout(wait, r.half.read(buf)).await {
                            Ok(n) => n.unwrap(),
                            Err(_) => {
                                r.cancelled += 1;
                                continue;
                            }
                        }
                    }
                    1 => {
                        let mut read = r.half.read(buf);
                        match futures::poll!(&mut read) {
                            Poll::Ready(n) => n.unwrap(),
                            Poll::Pending => {
                                drop(read);
                                r.cancelled += 1;
                                wq::task::yield_now().await;
                                continue;
                            }
                        }
                    }
                    2 => {
                        let wait = Duration::from_micros(50 + r.rng.below(1500));
                        if wq::time::timeout(wait, r.half.readable()).await.is_err() {
                            r.cancelled += 1;
                            continue;
                        }
                        match r.half.try_read(buf) {
                            Ok(n) => n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                            Err(e) => panic!("connection {}: {e}", r.conn),
                        }
                    }
                    _ => r.half.read(buf).await.unwrap(),
                };
                if n == 0 {
                    return r;
                }
                r.got.extend_from_slice(&buf[..n]);
                let _ = r.progress.unbounded_send(r.got.len());
            }
            read_on(r).await.unwrap()
        })
    }

    within_watchdog("cancelled reads", || {
        let rt = Runtime::builder().thread_name("cancel").build().unwrap();
        let cancelled = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut readers = Vec::new();
            let mut writers = Vec::new();
            for conn in 0..CONNS {
                let (client, accepted) =
                    futures::join!(TcpStream::connect(addr), listener.accept());
                let (mut client, (server, _)) = (client.unwrap(), accepted.unwrap());
                let (progress, mut read) = futures::channel::mpsc::unbounded();
                writers.push(wq::spawn(async move {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((conn as u64 + 1) * 0x2545_F491));
                    let data: Vec<u8> = (0..BYTES).map(|i| byte(conn, i)).collect();
                    let mut at = 0;
                    while at < BYTES {
                        let len = (1 + rng.below(2000) as usize).min(BYTES - at);
                        client.write_all(&data[at..at + len]).await.unwrap();
                        at += len;
                        // Half the time, until the reader has it all: the
                        // chunk's readiness is then the only event that
                        // can wake it, and one lost is a stall.
                        if rng.below(2) == 0 {
                            loop {
                                match futures::StreamExt::next(&mut read).await {
                                    Some(n) if n == at => break,
                                    Some(_) => {}
                                    None => panic!("connection {conn}: the reader ended early"),
                                }
                            }
                        }
                        match rng.below(4) {
                            0 | 1 => wq::time::sleep(Duration::from_micros(rng.below(2000))).await,
                            2 => wq::task::yield_now().await,
                            _ => {}
                        }
                    }
                    client.close().await.unwrap();
                }));
                let (half, _write) = server.into_split();
                readers.push(read_on(Reading {
                    conn,
                    half,
                    got: Vec::with_capacity(BYTES),
                    rng: Rng(0xD1B5_4A32_D192_ED03 ^ ((conn as u64 + 1) * 0x9E37)),
                    cancelled: 0,
                    progress,
                }));
            }
            for w in writers {
                w.await.unwrap();
            }
            let mut cancelled = 0;
            for r in readers {
                let r = r.await.unwrap();
                assert_eq!(
                    r.got.len(),
                    BYTES,
                    "connection {}: bytes lost or extra",
                    r.conn
                );
                let first_bad = (0..BYTES).find(|&i| r.got[i] != byte(r.conn, i));
                assert_eq!(first_bad, None, "connection {}: bytes out of order", r.conn);
                cancelled += r.cancelled;
            }
            cancelled
        });
        assert!(cancelled > 100, "only {cancelled} reads were cancelled");
        eprintln!("{cancelled} reads cancelled");
    });
}

/// Timers armed on one worker's shard and awaited, reset or dropped on
/// another's, while workers come and go (culled after 1 ms idle): 256
/// tasks over three scopes, each 30 rounds of a sleep, a sleep handed to a
/// task of another scope (reset there half the time), a timeout around a
/// sleep, three ticks of an interval, or a sleep dropped beside one to the
/// same instant. Nothing completes before its deadline; a timeout around a
/// sleep due before it gives the sleep's output; nothing stalls.
#[test]
fn timers_moved_between_workers_and_shards_never_fire_early_or_stall() {
    use wq::time::{Sleep, interval, sleep, sleep_until, timeout};

    /// Fails unless `at` has passed (read after the wait returned).
    fn not_early(what: &str, at: Instant) {
        let now = Instant::now();
        assert!(now >= at, "{what} completed {:?} early", at - now);
    }

    fn round(
        rng: &mut Rng,
        scopes: [Scope; 3],
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        let ms = |rng: &mut Rng, max: u64| Duration::from_micros(rng.below(max * 1000));
        let choice = rng.below(5);
        let (d1, d2) = (ms(rng, 4), ms(rng, 4));
        let other = scopes[rng.below(3) as usize];
        let reset = rng.below(2) == 0;
        Box::pin(async move {
            match choice {
                0 => {
                    let at = Instant::now() + d1;
                    sleep_until(at).await;
                    not_early("a sleep", at);
                }
                1 => {
                    // Armed here (the first poll), awaited or reset there.
                    let at = Instant::now() + d1;
                    let mut s: Sleep = sleep_until(at);
                    let first = futures::poll!(&mut s);
                    let at = if reset && first.is_pending() {
                        at + d2
                    } else {
                        at
                    };
                    wq::spawn_on(other, async move {
                        if reset {
                            s.reset(at);
                        }
                        s.await;
                        not_early("a sleep moved to another worker", at);
                    })
                    .await
                    .unwrap();
                }
                2 => {
                    // The sleep's deadline is set when it is made: before
                    // the timeout's. Unconstrained: a timeout that fires
                    // with its task's budget spent gives `Elapsed` without
                    // polling its future again (`wq::time::timeout`).
                    let start = Instant::now();
                    let inner = sleep(d2);
                    let out = wq::task::unconstrained(timeout(d1, async {
                        inner.await;
                        7
                    }))
                    .await;
                    match out {
                        Ok(7) => not_early("a sleep in a timeout", start + d2),
                        Ok(_) => unreachable!(),
                        Err(_) => {
                            not_early("a timeout", start + d1);
                            assert!(
                                d1 <= d2,
                                "a timeout of {d1:?} around a sleep of {d2:?} fired first"
                            );
                        }
                    }
                }
                3 => {
                    let period = Duration::from_micros(200 + d1.as_micros() as u64 / 4);
                    let start = Instant::now();
                    let mut every = interval(period);
                    for i in 0..3u32 {
                        let tick = every.tick().await;
                        assert!(tick >= start, "a tick before the interval began");
                        not_early("an interval's tick", start + period * i);
                    }
                }
                _ => {
                    let at = Instant::now() + d1;
                    // Both armed (a sleep is armed at its first poll),
                    // then one dropped.
                    let mut dropped = sleep_until(at);
                    let _ = futures::poll!(&mut dropped);
                    let (armed, kept_armed) = futures::channel::oneshot::channel();
                    let kept = wq::spawn_on(other, async move {
                        let mut kept = sleep_until(at);
                        let _ = futures::poll!(&mut kept);
                        let _ = armed.send(());
                        kept.await;
                        not_early("a sleep beside a dropped one", at);
                    });
                    kept_armed.await.unwrap();
                    drop(dropped);
                    kept.await.unwrap();
                }
            }
        })
    }

    within_watchdog("timers", || {
        let rt = culling_runtime("pack:2 l3:2 core:2 pu:1", WakeMode::Deferred);
        let scopes = [Scope::Cpu, Scope::Cache, Scope::System];
        rt.block_on(async move {
            let tasks: Vec<_> = (0..256u64)
                .map(|t| {
                    wq::spawn_on(scopes[t as usize % 3], async move {
                        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((t + 1) * 0x2545_F491));
                        for _ in 0..30 {
                            round(&mut rng, scopes).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
    });
}

/// Tasks woken from outside the runtime by several threads at once while
/// other threads abort them and the test awaits or drops their handles,
/// over every scope, workers culled after 1 ms idle: each task's future
/// is dropped exactly once; a handle gives `Ok` only for a task that
/// finished its rounds, and an error only for one aborted; nothing stalls.
#[test]
fn wakes_from_many_threads_racing_aborts_drop_every_future_once() {
    use futures::task::AtomicWaker;
    use std::sync::atomic::AtomicBool;

    const TASKS: usize = 512;
    const ROUNDS: usize = 40;

    /// A task's signal: a count of wakes sent, its waker, and what
    /// happened to the task.
    #[derive(Default)]
    struct Signal {
        sent: AtomicUsize,
        waker: AtomicWaker,
        dropped: AtomicUsize,
        finished: AtomicBool,
        aborted: AtomicBool,
    }

    /// Counts the future's drop.
    struct Dropped(Arc<Vec<Signal>>, usize);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0[self.1].dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    within_watchdog("wakes and aborts", || {
        let rt = culling_runtime("pack:2 l3:2 core:2 pu:1", WakeMode::Deferred);
        let signals: Arc<Vec<Signal>> = Arc::new((0..TASKS).map(|_| Signal::default()).collect());
        let handles: Vec<_> = (0..TASKS)
            .map(|t| {
                let signals = signals.clone();
                // Made outside the future, so that a task aborted before
                // its first poll counts its drop too.
                let dropped = Dropped(signals.clone(), t);
                rt.spawn_on(Scope::ALL[t % 6], async move {
                    let _dropped = dropped;
                    let s = &signals[t];
                    // Each round waits for one more wake than the last.
                    for round in 1..=ROUNDS {
                        std::future::poll_fn(|cx| {
                            s.waker.register(cx.waker());
                            if s.sent.load(Ordering::SeqCst) >= round {
                                std::task::Poll::Ready(())
                            } else {
                                std::task::Poll::Pending
                            }
                        })
                        .await;
                    }
                    s.finished.store(true, Ordering::SeqCst);
                })
            })
            .collect();
        let handles = std::sync::Mutex::new(handles.into_iter().map(Some).collect::<Vec<_>>());
        std::thread::scope(|scope| {
            // Wakers: each sends every task's wakes, in its own order.
            for w in 0..3usize {
                let signals = &signals;
                scope.spawn(move || {
                    for round in 0..ROUNDS {
                        for i in 0..TASKS {
                            let s = &signals[(i * (2 * w + 1) + round) % TASKS];
                            if s.sent.load(Ordering::SeqCst) < ROUNDS {
                                s.sent.fetch_add(1, Ordering::SeqCst);
                                s.waker.wake();
                            }
                        }
                        // Paced: the tasks wait between rounds.
                        std::thread::sleep(Duration::from_micros(300));
                    }
                });
            }
            // Aborters: one task in seven, while the wakes go on.
            for a in 0..2usize {
                let (signals, handles) = (&signals, &handles);
                scope.spawn(move || {
                    for i in (a * 7 + 3..TASKS).step_by(14) {
                        signals[i].aborted.store(true, Ordering::SeqCst);
                        if let Some(h) = &handles.lock().unwrap()[i] {
                            h.abort();
                        }
                        std::thread::sleep(Duration::from_micros(150));
                    }
                });
            }
        });
        // Any task still short of its wakes gets them (the senders stop
        // at ROUNDS in all).
        for s in signals.iter() {
            while s.sent.load(Ordering::SeqCst) < ROUNDS {
                s.sent.fetch_add(1, Ordering::SeqCst);
            }
            s.waker.wake();
        }
        let handles = handles.into_inner().unwrap();
        rt.block_on(async {
            for (t, h) in handles.into_iter().enumerate() {
                let h = h.unwrap();
                if t % 5 == 0 {
                    // Detached: the task still runs or ends.
                    drop(h);
                    continue;
                }
                let s = &signals[t];
                match h.await {
                    Ok(()) => assert!(s.finished.load(Ordering::SeqCst), "task {t}"),
                    Err(e) => assert!(
                        e.is_cancelled() && s.aborted.load(Ordering::SeqCst),
                        "task {t}: {e}"
                    ),
                }
            }
        });
        // Detached tasks end too: every future is dropped exactly once.
        common::wait_until("every task's future dropped", || {
            signals
                .iter()
                .all(|s| s.dropped.load(Ordering::SeqCst) >= 1)
        });
        for (t, s) in signals.iter().enumerate() {
            assert_eq!(s.dropped.load(Ordering::SeqCst), 1, "task {t}");
            if !s.aborted.load(Ordering::SeqCst) {
                assert!(s.finished.load(Ordering::SeqCst), "task {t} never finished");
            }
        }
        drop(rt);
    });
}

/// A runtime shut down with everything in flight: tasks waiting on
/// sockets, timers and timeouts, a named queue's running and waiting items
/// and a flush of it, blocking jobs, and two outside threads spawning
/// until refused; by a drop, a `shutdown_timeout(ZERO)` or a bounded one,
/// in turn. Every future and closure is dropped exactly once (a refused
/// one given back is the spawner's to drop), every handle resolves, and
/// nothing hangs.
#[test]
fn a_runtime_shut_down_with_everything_in_flight_drops_each_thing_once() {
    use wq::net::{TcpListener, TcpStream};

    static LIVE: AtomicUsize = AtomicUsize::new(0);
    /// Spawns the outside threads got accepted, per round.
    static ACCEPTED: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
    /// Counted from its making to its drop.
    struct Live;
    impl Live {
        fn new() -> Live {
            LIVE.fetch_add(1, Ordering::SeqCst);
            Live
        }
    }
    impl Drop for Live {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }

    within_watchdog("shutdown in flight", || {
        for round in 0..12 {
            let rt = culling_runtime("pack:2 l3:2 core:2 pu:1", WakeMode::ALL[round % 2]);
            let h = rt.handle().clone();
            let q = wq::Workqueue::builder("in-flight")
                .max_active(2)
                .build(&h)
                .unwrap();
            let mut handles = Vec::new();
            // Sockets with nothing to read, both ends held by the reader.
            let conns = rt.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let mut conns = Vec::new();
                for _ in 0..8 {
                    let (c, a) = futures::join!(TcpStream::connect(addr), listener.accept());
                    conns.push((c.unwrap(), a.unwrap().0));
                }
                conns
            });
            for (i, (client, mut server)) in conns.into_iter().enumerate() {
                let live = Live::new();
                handles.push(rt.spawn_on(Scope::ALL[i % 6], async move {
                    let _live = live;
                    let _client = client;
                    let mut buf = [0u8; 16];
                    let _ = futures::AsyncReadExt::read(&mut server, &mut buf).await;
                }));
            }
            for i in 0..40u64 {
                let live = Live::new();
                handles.push(rt.spawn_on(Scope::ALL[i as usize % 6], async move {
                    let _live = live;
                    if i % 2 == 0 {
                        wq::time::sleep(Duration::from_secs(3600)).await;
                    } else {
                        let pending = std::future::pending::<()>();
                        let _ = wq::time::timeout(Duration::from_secs(3600), pending).await;
                    }
                }));
            }
            // Two items hold the queue's slots; thirty wait behind them.
            for _ in 0..32 {
                let live = Live::new();
                handles.push(q.spawn(async move {
                    let _live = live;
                    std::future::pending::<()>().await;
                }));
            }
            let flush = {
                let q = q.clone();
                rt.spawn(async move { q.flush().await })
            };
            for _ in 0..4 {
                let live = Live::new();
                handles.push(rt.handle().spawn_blocking(move || {
                    let _live = live;
                    std::thread::sleep(Duration::from_millis(2));
                }));
            }
            let spawners: Vec<_> = (0..2)
                .map(|s| {
                    let (h, q) = (h.clone(), q.clone());
                    std::thread::spawn(move || {
                        loop {
                            let live = Live::new();
                            let item = async move {
                                let _live = live;
                                wq::task::yield_now().await;
                            };
                            let refused = if s == 0 {
                                h.try_spawn(item).map(drop).err().map(|e| e.is_shut_down())
                            } else {
                                q.try_spawn(item).map(drop).err().map(|e| e.is_shut_down())
                            };
                            match refused {
                                None => {
                                    ACCEPTED[s].fetch_add(1, Ordering::SeqCst);
                                    std::thread::yield_now();
                                }
                                Some(shut) => {
                                    assert!(shut, "refused, but not for the shutdown");
                                    return;
                                }
                            }
                        }
                    })
                })
                .collect();
            // Shut down while both spawn.
            common::wait_until("both outside threads spawning", || {
                ACCEPTED.iter().all(|a| a.swap(0, Ordering::SeqCst) > 0)
            });
            match round % 3 {
                0 => drop(rt),
                1 => drop(rt.shutdown_timeout(Duration::ZERO)),
                _ => assert!(rt.shutdown_timeout(Duration::from_secs(30))),
            }
            for s in spawners {
                s.join().unwrap();
            }
            for handle in handles {
                // Resolves: cancelled, or a blocking job's end.
                let _ = futures::executor::block_on(handle);
            }
            // Cancelled by the shutdown, or done: the items it waited for
            // were dropped, which ends them, and it may have been polled
            // once more after that.
            if let Err(e) = futures::executor::block_on(flush) {
                assert!(e.is_cancelled(), "{e}");
            }
            drop(q);
            common::wait_until("every future dropped", || LIVE.load(Ordering::SeqCst) == 0);
        }
    });
}

/// What [`datagram_receives_cancelled_at_every_point_lose_no_readiness`]
/// needs of a connected datagram socket.
trait Dgram: Send + Sync + 'static {
    fn send(&self, buf: &[u8]) -> impl Future<Output = std::io::Result<usize>> + Send;
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = std::io::Result<usize>> + Send;
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
    fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<usize>;
}

macro_rules! dgram {
    ($ty:ty) => {
        impl Dgram for $ty {
            fn send(&self, buf: &[u8]) -> impl Future<Output = std::io::Result<usize>> + Send {
                <$ty>::send(self, buf)
            }
            fn recv(&self, buf: &mut [u8]) -> impl Future<Output = std::io::Result<usize>> + Send {
                <$ty>::recv(self, buf)
            }
            fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
                <$ty>::readable(self)
            }
            fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
                <$ty>::try_recv(self, buf)
            }
        }
    };
}
dgram!(wq::net::UdpSocket);
dgram!(wq::net::UnixDatagram);

/// Receives cancelled at every point lose no readiness, on connected UDP
/// and Unix datagram sockets: as the stream test above, each receiver
/// receives under timeouts that often expire, polls a receive once and
/// drops it, waits on `readable` under a timeout, or receives plainly;
/// each sender waits for its receiver to have everything it sent at
/// least every eight datagrams, and half the time after each, so that a
/// datagram's readiness is the only event that can wake the receiver.
/// Every datagram arrives once, in order.
#[test]
fn datagram_receives_cancelled_at_every_point_lose_no_readiness() {
    use std::task::Poll;

    const PAIRS: usize = 16;
    const SENDS: u32 = 1000;

    async fn receive<D: Dgram>(
        sock: Arc<D>,
        mut rng: Rng,
        progress: futures::channel::mpsc::UnboundedSender<u32>,
    ) -> usize {
        let mut buf = vec![0u8; 2048];
        let (mut next, mut cancelled) = (0u32, 0);
        while next < SENDS {
            let got = match rng.below(4) {
                0 => {
                    let wait = Duration::from_micros(50 + rng.below(1500));
                    match wq::time::timeout(wait, sock.recv(&mut buf)).await {
                        Ok(n) => n.unwrap(),
                        Err(_) => {
                            cancelled += 1;
                            continue;
                        }
                    }
                }
                1 => {
                    let mut recv = std::pin::pin!(sock.recv(&mut buf));
                    match futures::poll!(recv.as_mut()) {
                        Poll::Ready(n) => n.unwrap(),
                        Poll::Pending => {
                            cancelled += 1;
                            wq::task::yield_now().await;
                            continue;
                        }
                    }
                }
                2 => {
                    let wait = Duration::from_micros(50 + rng.below(1500));
                    if wq::time::timeout(wait, sock.readable()).await.is_err() {
                        cancelled += 1;
                        continue;
                    }
                    match sock.try_recv(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
                _ => sock.recv(&mut buf).await.unwrap(),
            };
            assert!(got >= 4, "a datagram of {got} bytes");
            let seq = u32::from_le_bytes(buf[..4].try_into().unwrap());
            assert_eq!(seq, next, "datagrams lost or out of order");
            assert!(
                buf[4..got].iter().all(|&b| b == seq as u8),
                "datagram {seq} garbled"
            );
            next += 1;
            let _ = progress.unbounded_send(next);
        }
        cancelled
    }

    async fn send<D: Dgram>(
        sock: Arc<D>,
        mut rng: Rng,
        mut progress: futures::channel::mpsc::UnboundedReceiver<u32>,
    ) {
        let mut unacked = 0;
        for seq in 0..SENDS {
            let len = 4 + rng.below(1200) as usize;
            let mut msg = vec![seq as u8; len];
            msg[..4].copy_from_slice(&seq.to_le_bytes());
            assert_eq!(sock.send(&msg).await.unwrap(), len);
            unacked += 1;
            if unacked == 8 || rng.below(2) == 0 {
                // Until the receiver has them all.
                loop {
                    match futures::StreamExt::next(&mut progress).await {
                        Some(n) if n == seq + 1 => break,
                        Some(_) => {}
                        None => panic!("the receiver ended early"),
                    }
                }
                unacked = 0;
            }
            if rng.below(4) == 0 {
                wq::time::sleep(Duration::from_micros(rng.below(1000))).await;
            }
        }
    }

    within_watchdog("cancelled receives", || {
        let rt = Runtime::builder().thread_name("dgram").build().unwrap();
        let cancelled = rt.block_on(async {
            let (mut receivers, mut senders) = (Vec::new(), Vec::new());
            for pair in 0..PAIRS as u64 {
                let seed = |k: u64| Rng(0x9E37_79B9_7F4A_7C15 ^ ((pair * 2 + k + 1) * 0x2545_F491));
                let (tx, rx) = futures::channel::mpsc::unbounded();
                if pair % 2 == 0 {
                    let a = wq::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    let b = wq::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    a.connect(b.local_addr().unwrap()).await.unwrap();
                    b.connect(a.local_addr().unwrap()).await.unwrap();
                    receivers.push(wq::spawn(receive(Arc::new(b), seed(0), tx)));
                    senders.push(wq::spawn(send(Arc::new(a), seed(1), rx)));
                } else {
                    let (a, b) = wq::net::UnixDatagram::pair().unwrap();
                    receivers.push(wq::spawn(receive(Arc::new(b), seed(0), tx)));
                    senders.push(wq::spawn(send(Arc::new(a), seed(1), rx)));
                }
            }
            // A receiver's panic first (its sender's follows from it).
            let (received, sent) = futures::join!(
                futures::future::try_join_all(receivers),
                futures::future::try_join_all(senders)
            );
            let cancelled = received.unwrap().iter().sum::<usize>();
            sent.unwrap();
            cancelled
        });
        assert!(cancelled > 100, "only {cancelled} receives were cancelled");
        eprintln!("{cancelled} receives cancelled");
    });
}

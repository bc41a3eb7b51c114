//! Services beside tokio: timers, HTTP (hyper + `wrk`), TCP echo ping-pong.
//!
//! - `timers`: N timers (default 1,000,000) on one task, per operation:
//!   **insert** (create a sleep and poll it once, which arms it), **cancel**
//!   (drop armed sleeps), **fire** (N sleeps due at one instant `D`, polled
//!   through one `FuturesUnordered`: from `D` until all N completed, over
//!   N). Same code for both runtimes, each task wrapped whole in its
//!   runtime's `unconstrained` (see `timers_main`); only the sleep type
//!   differs. wq's runtime is one `system` pool of `--workers`, tokio's
//!   one pool of as many (default: the online CPUs).
//! - `http`: the same hyper 1.x HTTP/1.1 hello-world server on each runtime
//!   (hyper's own `http1` builder, a timer given on both sides), loaded by
//!   `wrk --latency` in another process on loopback; requests/s and wrk's
//!   p50/p99.
//! - `echo`: a TCP echo server on each runtime; the **same** client for
//!   both: `--conns` std threads each doing blocking 64-byte round trips
//!   for `--secs`, every round trip timed into one histogram.
//!
//! Runs are interleaved (wq, tokio, wq, tokio ...) and the tables give
//! medians over `--repeat` runs. On a 2-vCPU machine the load generator
//! shares the CPUs with the server under test.

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Command;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::args::Args;
use crate::stats::{self, Quantiles, median};
use crate::workqueue::Spin;

/// `wq-bench timers`.
pub fn timers_main(argv: &[String], command: &str) -> Result<(), String> {
    let a = Args::parse(argv.iter().cloned(), &[])?;
    a.check_known(&["timers", "repeat", "workers"])?;
    let n: usize = a.count("timers", 1_000_000)?;
    let repeat = a.rounds("repeat", 6, 2)?;
    let workers: usize = a.count("workers", crate::machine::online_cpus())?;
    if workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    // As `http` and `echo`: one `system` pool of `workers`, as tokio's one
    // pool of as many.
    let wq_rt = wq_builder(workers, Spin::default())
        .build()
        .map_err(|e| e.to_string())?;
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows: [Vec<[f64; 3]>; 2] = [Vec::new(), Vec::new()];
    let wq_run = || -> Result<[f64; 3], String> {
        // Unconstrained, both (the whole task, once): under the operation
        // budget a sleep polled by a FuturesUnordered of a million returns
        // Pending and re-wakes its task once the budget is spent, and on
        // tokio the fire phase never ended (seen here). A wrapper per sleep
        // cost tokio two thread-local accesses per poll in the timed loops.
        wq_rt
            .block_on(wq_rt.spawn(wq::task::unconstrained(timer_ops(n, |d| {
                Box::pin(wq::time::sleep_until(d)) as Pin<Box<dyn Future<Output = ()> + Send>>
            }))))
            .map_err(|e| e.to_string())?
    };
    let tokio_run = || -> Result<[f64; 3], String> {
        tokio_rt
            .block_on(tokio_rt.spawn(tokio::task::unconstrained(timer_ops(n, |d| {
                Box::pin(tokio::time::sleep_until(d.into()))
                    as Pin<Box<dyn Future<Output = ()> + Send>>
            }))))
            .map_err(|e| e.to_string())?
    };
    // One untimed round of each first: the first round of the process
    // pays the cold page faults of a million allocations, and it went to
    // wq every time.
    wq_run()?;
    tokio_run()?;
    for r in 0..repeat {
        // Each runtime goes first every other round.
        if r % 2 == 0 {
            rows[0].push(wq_run()?);
            rows[1].push(tokio_run()?);
        } else {
            rows[1].push(tokio_run()?);
            rows[0].push(wq_run()?);
        }
    }
    out!("{}", crate::machine::header(command));
    outln!(
        "# {n} timers per operation, medians of {repeat} interleaved runs (each runtime first in half) after an untimed one each; ns per timer; each runtime's timer task unconstrained (no operation budget)\n"
    );
    outln!(
        "{:<8} {:>10} {:>10} {:>10}",
        "runtime",
        "insert",
        "cancel",
        "fire"
    );
    for (name, runs) in ["wq", "tokio"].iter().zip(&rows) {
        let m = |i: usize| median(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
        outln!("{name:<8} {:>10.1} {:>10.1} {:>10.1}", m(0), m(1), m(2));
    }
    Ok(())
}

type BoxSleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Polls every sleep once (arming it) with the task's context.
async fn arm_all(v: &mut [BoxSleep]) {
    std::future::poll_fn(|cx: &mut Context<'_>| {
        for s in v.iter_mut() {
            let _ = s.as_mut().poll(cx);
        }
        Poll::Ready(())
    })
    .await
}

/// The longest `--secs` (a day): a run's end is an `Instant` that far
/// out, and a count near `u64::MAX` overflowed it (a panic).
const MAX_SECS: u64 = 86_400;

fn check_secs(secs: u64) -> Result<(), String> {
    if secs > MAX_SECS {
        return Err(format!("--secs {secs}: at most {MAX_SECS} (a day) per run"));
    }
    Ok(())
}

/// Insert, cancel and fire of `n` timers (module docs); ns per timer.
async fn timer_ops(n: usize, make: impl Fn(Instant) -> BoxSleep) -> Result<[f64; 3], String> {
    let per = |d: Duration| d.as_nanos() as f64 / n as f64;
    // Insert and cancel: deadlines 10 s out, spread over a second.
    let base = Instant::now() + Duration::from_secs(10);
    let mut v: Vec<BoxSleep> = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        v.push(make(base + Duration::from_micros((i % 1000) as u64 * 1000)));
    }
    arm_all(&mut v).await;
    let insert = per(start.elapsed());
    let start = Instant::now();
    drop(v);
    let cancel = per(start.elapsed());
    // Fire: all due at one instant, far enough out for the arming to end.
    let due = Instant::now() + Duration::from_millis(300 + n as u64 / 2000);
    let mut all: FuturesUnordered<BoxSleep> = (0..n).map(|_| make(due)).collect();
    let mut done = 0;
    // The first poll arms every sleep (each new future is polled once).
    // Timed from `due`, the fire phase must start after it: an arming that
    // ran past `due` would count in one runtime's fire time.
    let first = std::future::poll_fn(|cx| Poll::Ready(all.poll_next_unpin(cx))).await;
    if Instant::now() >= due {
        return Err(format!(
            "timers: arming {n} timers took past their deadline ({} ms out): the fire time would include it; give fewer --timers",
            300 + n / 2000
        ));
    }
    if let Poll::Ready(Some(())) = first {
        done += 1;
    }
    while all.next().await.is_some() {
        done += 1;
    }
    assert_eq!(done, n);
    let fire = per(Instant::now().saturating_duration_since(due));
    Ok([insert, cancel, fire])
}

const HELLO: &[u8] = b"Hello, World!";

async fn hello(
    _: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    Ok(hyper::Response::new(http_body_util::Full::new(
        bytes::Bytes::from_static(HELLO),
    )))
}

/// One `wrk` run's figures.
#[derive(Clone, Copy, Debug, Default)]
struct WrkRun {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Requests completed in the run (wrk's `N requests in`).
    requests: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx
    /// responses wrk reported. wrk counts failed responses in its
    /// requests/s and its latencies, and a timed-out request in requests/s
    /// but not the latencies: a run with any is left out of the medians.
    errors: u64,
    /// The server's CPU time (user + system, every thread of this process:
    /// the server is all that runs in it meanwhile) per request.
    cpu_us_per_req: f64,
    /// Of that, in the kernel.
    sys_us_per_req: f64,
    /// The process's context switches per request.
    switches_per_req: f64,
    /// Of those, preemptions.
    preempted_per_req: f64,
}

/// `wq-bench http`.
pub fn http_main(argv: &[String], command: &str) -> Result<(), String> {
    let a = Args::parse(argv.iter().cloned(), &[])?;
    a.check_known(&[
        "repeat",
        "threads",
        "conns",
        "secs",
        "workers",
        "spin-us",
        "spinners",
        "spin-watch",
        "runtimes",
    ])?;
    let spin = crate::workqueue::spin_arg(&a)?;
    // One runtime alone: a profile of it (perf record) with no other
    // server in the process.
    let runtimes: Vec<String> = a.list("runtimes", vec!["wq".to_owned(), "tokio".to_owned()])?;
    let mut chosen = [false; 2];
    for rt in &runtimes {
        match rt.as_str() {
            "wq" => chosen[0] = true,
            "tokio" => chosen[1] = true,
            other => {
                return Err(format!(
                    "--runtimes: unknown runtime {other:?}; known: wq,tokio"
                ));
            }
        }
    }
    let repeat = a.rounds("repeat", 4, chosen.iter().filter(|c| **c).count())?;
    let threads: usize = a.count("threads", 1)?;
    let conns: usize = a.count("conns", 64)?;
    let secs: u64 = a.count("secs", 10)?;
    check_secs(secs)?;
    let workers: usize = a.count("workers", crate::machine::online_cpus())?;
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("wrk is not installed: run scripts/setup-bench (apt-get install wrk)".into());
    }
    let mut runs: [Vec<WrkRun>; 2] = [Vec::new(), Vec::new()];
    for r in 0..repeat {
        // Each runtime goes first every other round (an order effect on a
        // shared VM).
        for i in [r % 2, 1 - r % 2].into_iter().filter(|&i| chosen[i]) {
            let rt = &["wq", "tokio"][i];
            let run = match *rt {
                "wq" => {
                    let server = WqHttp::start(workers, spin)?;
                    let run = timed_wrk(server.addr, threads, conns, secs);
                    drop(server);
                    run?
                }
                _ => {
                    let server = TokioHttp::start(workers)?;
                    let run = timed_wrk(server.addr, threads, conns, secs);
                    drop(server);
                    run?
                }
            };
            crate::progress!(
                "run {r} {rt}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, server CPU {:.1} us/req ({:.1} in the kernel), {:.3} context switches/req ({:.3} preemptions){}",
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.cpu_us_per_req,
                run.sys_us_per_req,
                run.switches_per_req,
                run.preempted_per_req,
                if run.errors > 0 {
                    format!(
                        ", {} ERRORS (the round is left out of both runtimes' medians)",
                        run.errors
                    )
                } else {
                    String::new()
                }
            );
            runs[i].push(run);
        }
    }
    out!("{}", crate::machine::header(command));
    outln!(
        "# hyper http1 hello world, {workers} workers per runtime; wrk -t{threads} -c{conns} -d{secs}s --latency on loopback (sharing the CPUs); medians of the rounds without errors (on either side) of {repeat} interleaved (each runtime first in half)"
    );
    outln!(
        "# cpu us/req: the server process's CPU time (user + system, getrusage) over wrk's request count; sys: of it, in the kernel; cs/req: the process's context switches (voluntary and not) per request\n"
    );
    outln!(
        "{:<8} {:>10} {:>9} {:>9} {:>12} {:>8} {:>8} {:>8} {:>6}",
        "runtime",
        "req/s",
        "p50 ms",
        "p99 ms",
        "cpu us/req",
        "sys",
        "cs/req",
        "errors",
        "runs"
    );
    // A round with errors on either side is left out on both: the runs
    // dropped are those where a runtime stalled (wrk's timeouts), and
    // dropping one side's alone made its medians look better and broke
    // the balance of which runtime went first.
    let rounds = runs.iter().map(Vec::len).max().unwrap_or(0);
    let clean_round: Vec<bool> = (0..rounds)
        .map(|r| {
            runs.iter()
                .all(|rs| rs.get(r).is_none_or(|run| run.errors == 0))
        })
        .collect();
    for ((name, rs), _) in ["wq", "tokio"]
        .iter()
        .zip(&runs)
        .zip(chosen)
        .filter(|(_, chosen)| *chosen)
    {
        let clean: Vec<&WrkRun> = rs
            .iter()
            .zip(&clean_round)
            .filter(|(_, clean)| **clean)
            .map(|(r, _)| r)
            .collect();
        let errors = rs.iter().map(|r| r.errors).sum::<u64>();
        if clean.is_empty() {
            outln!(
                "{name:<8} {:>10} {:>9} {:>9} {:>12} {:>8} {:>8} {errors:>8} {:>6}",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                format!("0/{}", rs.len())
            );
            continue;
        }
        let m = |f: fn(&WrkRun) -> f64| median(&clean.iter().map(|r| f(r)).collect::<Vec<_>>());
        outln!(
            "{name:<8} {:>10.0} {:>9.2} {:>9.2} {:>12.1} {:>8.1} {:>8.3} {errors:>8} {:>6}",
            m(|r| r.rps),
            m(|r| r.p50_ms),
            m(|r| r.p99_ms),
            m(|r| r.cpu_us_per_req),
            m(|r| r.sys_us_per_req),
            m(|r| r.switches_per_req),
            format!("{}/{}", clean.len(), rs.len())
        );
    }
    if runs.iter().flatten().any(|r| r.errors > 0) {
        outln!(
            "\n(errors: wrk's socket errors and non-2xx/3xx responses over all runs; wrk counts them in its requests/s, so a round with any, on either side, is left out of both medians: runs = clean/all)"
        );
    }
    Ok(())
}

/// [`wrk`], with this process's CPU time over the run.
fn timed_wrk(addr: SocketAddr, threads: usize, conns: usize, secs: u64) -> Result<WrkRun, String> {
    let before = crate::machine::process_usage();
    let mut run = wrk(addr, threads, conns, secs)?;
    let used = crate::machine::process_usage().since(before);
    run.cpu_us_per_req = (used.user_secs + used.sys_secs) * 1e6 / run.requests;
    run.sys_us_per_req = used.sys_secs * 1e6 / run.requests;
    run.switches_per_req = used.switches / run.requests;
    run.preempted_per_req = used.preempted / run.requests;
    Ok(run)
}

fn wrk(addr: SocketAddr, threads: usize, conns: usize, secs: u64) -> Result<WrkRun, String> {
    let out = crate::neighbours::die_with_parent(&mut Command::new("wrk"))
        .args([
            format!("-t{threads}"),
            format!("-c{conns}"),
            format!("-d{secs}s"),
            "--latency".into(),
            format!("http://{addr}/"),
        ])
        .output()
        .map_err(|e| format!("could not run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("could not read wrk's output:\n{text}"))
}

/// Reads `Requests/sec:`, `N requests in` and the `50%` / `99%` lines of
/// `--latency`.
fn parse_wrk(text: &str) -> Option<WrkRun> {
    let ms = |v: &str| -> Option<f64> {
        let v = v.trim();
        if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>().ok().map(|x| x / 1000.0)
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse().ok()
        } else if let Some(x) = v.strip_suffix('s') {
            x.parse::<f64>().ok().map(|x| x * 1000.0)
        } else {
            None
        }
    };
    let mut run = WrkRun::default();
    let (mut p50, mut p99) = (false, false);
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            run.rps = v.trim().parse().ok()?;
        } else if let Some(v) = l.strip_prefix("50%") {
            run.p50_ms = ms(v)?;
            p50 = true;
        } else if let Some(v) = l.strip_prefix("99%") {
            run.p99_ms = ms(v)?;
            p99 = true;
        } else if let Some((n, _)) = l.split_once(" requests in ") {
            run.requests = n.trim().parse().ok()?;
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 12"
            for part in v.split(',') {
                run.errors += part.split_whitespace().last()?.parse::<u64>().ok()?;
            }
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            run.errors += v.trim().parse::<u64>().ok()?;
        }
    }
    // Without `--latency`'s lines the percentiles would read 0.
    (run.rps > 0.0 && run.requests > 0.0 && p50 && p99).then_some(run)
}

/// A wq runtime of one pool of `workers` (the system scope), as tokio's
/// one pool, with the worker spin given by `--spin-us` and `--spinners`
/// if any.
fn wq_builder(workers: usize, spin: Spin) -> wq::Builder {
    spin.apply(
        wq::Runtime::builder()
            .default_scope(wq::Scope::System)
            .max_workers_per_pool(workers),
    )
}

/// The hello-world server on wq.
struct WqHttp {
    addr: SocketAddr,
    _rt: wq::Runtime,
}

impl WqHttp {
    fn start(workers: usize, spin: Spin) -> Result<WqHttp, String> {
        // One pool of `workers` (the system scope), as tokio's one pool.
        let rt = wq_builder(workers, spin)
            .build()
            .map_err(|e| e.to_string())?;
        let l = rt
            .block_on(wq::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| e.to_string())?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        let timer = rt.block_on(async { wq::hyper::WqTimer::new() });
        drop(rt.spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    // Out of fds: back off rather than spin a worker.
                    wq::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let _ = s.set_nodelay(true);
                let timer = timer.clone();
                drop(wq::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(timer)
                        .serve_connection(
                            wq::hyper::WqIo::new(s),
                            hyper::service::service_fn(hello),
                        )
                        .await;
                }));
            }
        }));
        Ok(WqHttp { addr, _rt: rt })
    }
}

/// The same server on tokio.
struct TokioHttp {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl TokioHttp {
    fn start(workers: usize) -> Result<TokioHttp, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| e.to_string())?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        rt.spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    // Out of fds: back off rather than spin a worker.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(tokio_glue::Timer)
                        .serve_connection(tokio_glue::Io(s), hyper::service::service_fn(hello))
                        .await;
                });
            }
        });
        Ok(TokioHttp { addr, _rt: rt })
    }
}

/// hyper's rt traits over tokio, written here (not hyper-util's `tokio`
/// feature: it would be unified into every workspace build of hyper-util,
/// and the examples must show hyper-util without it).
mod tokio_glue {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    pub struct Io(pub tokio::net::TcpStream);

    impl hyper::rt::Read for Io {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            mut buf: hyper::rt::ReadBufCursor<'_>,
        ) -> Poll<std::io::Result<()>> {
            // As hyper-util's TokioIo: a tokio ReadBuf over the cursor's
            // uninitialised part, advanced by what was filled.
            // SAFETY: the ReadBuf only writes initialised bytes into the
            // cursor's memory, and we advance by the bytes it filled.
            let n = unsafe {
                let mut tbuf = ReadBuf::uninit(buf.as_mut());
                match Pin::new(&mut self.get_mut().0).poll_read(cx, &mut tbuf) {
                    Poll::Ready(Ok(())) => tbuf.filled().len(),
                    other => return other,
                }
            };
            // SAFETY: `n` bytes were filled (initialised) by the read.
            unsafe { buf.advance(n) };
            Poll::Ready(Ok(()))
        }
    }

    impl hyper::rt::Write for Io {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
        }

        fn is_write_vectored(&self) -> bool {
            self.0.is_write_vectored()
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
        }
    }

    #[derive(Clone, Copy)]
    pub struct Timer;

    /// tokio's sleep held in place: one allocation per sleep (hyper's
    /// box), as hyper-util's `TokioSleep` and wq's `WqTimer`; it was boxed
    /// twice, an allocation more per request than wq's side.
    struct Sleep(tokio::time::Sleep);

    impl Sleep {
        fn inner(self: Pin<&mut Self>) -> Pin<&mut tokio::time::Sleep> {
            // SAFETY: structural pinning: the field is never moved out of a
            // pinned `Sleep`, and `Sleep` has no `Drop` or `Unpin` impl of
            // its own.
            unsafe { self.map_unchecked_mut(|s| &mut s.0) }
        }
    }

    impl std::future::Future for Sleep {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.inner().poll(cx)
        }
    }

    impl hyper::rt::Sleep for Sleep {}

    impl hyper::rt::Timer for Timer {
        fn sleep(&self, d: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
            Box::pin(Sleep(tokio::time::sleep(d)))
        }

        fn sleep_until(&self, at: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
            Box::pin(Sleep(tokio::time::sleep_until(at.into())))
        }

        /// In place, as `WqTimer` and hyper-util's `TokioTimer` do (the
        /// default makes a new sleep).
        fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, at: Instant) {
            match sleep.as_mut().downcast_mut_pin::<Sleep>() {
                Some(s) => s.inner().reset(at.into()),
                None => *sleep = self.sleep_until(at),
            }
        }
    }
}

/// The largest `echo --size`: well inside Linux's default loopback socket
/// buffers (a client writes its whole message, then reads the echo).
pub const MAX_ECHO_SIZE: usize = 1 << 20;

/// `wq-bench echo`.
pub fn echo_main(argv: &[String], command: &str) -> Result<(), String> {
    let a = Args::parse(argv.iter().cloned(), &[])?;
    a.check_known(&[
        "repeat",
        "conns",
        "secs",
        "workers",
        "size",
        "spin-us",
        "spinners",
        "spin-watch",
    ])?;
    let spin = crate::workqueue::spin_arg(&a)?;
    let repeat = a.rounds("repeat", 4, 2)?;
    let conns: usize = a.count("conns", 8)?;
    let secs: u64 = a.count("secs", 5)?;
    check_secs(secs)?;
    let size: usize = a.count("size", 64)?;
    if size > MAX_ECHO_SIZE {
        return Err(format!(
            "--size {size}: at most {MAX_ECHO_SIZE} bytes (a client writes its whole message before it reads the echo: one larger than the loopback socket buffers would stall both ends)"
        ));
    }
    let workers: usize = a.count("workers", crate::machine::online_cpus())?;
    let mut runs: [Vec<(f64, Quantiles)>; 2] = [Vec::new(), Vec::new()];
    for r in 0..repeat {
        // Each runtime goes first every other round.
        for i in [r % 2, 1 - r % 2] {
            let name = &["wq", "tokio"][i];
            let run = if i == 0 {
                // One pool of `workers` (the system scope), as tokio's one
                // pool: on a machine with several cache shards, the default
                // scope would give each shard `workers`.
                let rt = wq_builder(workers, spin)
                    .build()
                    .map_err(|e| e.to_string())?;
                let addr = rt.block_on(wq_echo_server()).map_err(|e| e.to_string())?;
                ping_pong(addr, conns, size, Duration::from_secs(secs))?
            } else {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let addr = rt
                    .block_on(tokio_echo_server())
                    .map_err(|e| e.to_string())?;
                ping_pong(addr, conns, size, Duration::from_secs(secs))?
            };
            crate::progress!(
                "run {r} {name}: {:.0} round trips/s, p50 {}, p99 {}",
                run.0,
                stats::fmt_ns(run.1.p50),
                stats::fmt_ns(run.1.p99)
            );
            runs[i].push(run);
        }
    }
    out!("{}", crate::machine::header(command));
    outln!(
        "# TCP echo, {conns} connections x {size}-byte blocking round trips from std threads (the same client for both), {secs} s, {workers} workers per runtime; medians of {repeat} interleaved runs (each runtime first in half)\n"
    );
    outln!(
        "{:<8} {:>14} {:>10} {:>10}",
        "runtime",
        "round trips/s",
        "p50",
        "p99"
    );
    for (name, rs) in ["wq", "tokio"].iter().zip(&runs) {
        let rps = median(&rs.iter().map(|r| r.0).collect::<Vec<_>>());
        let q = Quantiles::median_of(&rs.iter().map(|r| r.1).collect::<Vec<_>>());
        outln!(
            "{name:<8} {rps:>14.0} {:>10} {:>10}",
            stats::fmt_ns(q.p50),
            stats::fmt_ns(q.p99)
        );
    }
    Ok(())
}

async fn wq_echo_server() -> std::io::Result<SocketAddr> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let l = wq::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    drop(wq::spawn(async move {
        loop {
            // An accept error (out of fds) must not end the server quietly
            // mid-benchmark: back off, go on.
            let Ok((mut s, _)) = l.accept().await else {
                wq::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let _ = s.set_nodelay(true);
            drop(wq::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }));
        }
    }));
    Ok(addr)
}

async fn tokio_echo_server() -> std::io::Result<SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// The client: `conns` std threads of blocking round trips for `length`.
fn ping_pong(
    addr: SocketAddr,
    conns: usize,
    size: usize,
    length: Duration,
) -> Result<(f64, Quantiles), String> {
    let start = Instant::now();
    let end = start + length;
    let clients = (0..conns)
        .map(|i| {
            std::thread::Builder::new()
                .spawn(
                    move || -> Result<(u64, hdrhistogram::Histogram<u64>), String> {
                        let mut s =
                            std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
                        s.set_nodelay(true).map_err(|e| e.to_string())?;
                        // A server that stalls (a lost wake) fails the run
                        // instead of hanging it, reading or writing.
                        for set in [
                            std::net::TcpStream::set_read_timeout,
                            std::net::TcpStream::set_write_timeout,
                        ] {
                            set(&s, Some(std::time::Duration::from_secs(10)))
                                .map_err(|e| e.to_string())?;
                        }
                        let msg = vec![7u8; size];
                        let mut back = vec![0u8; size];
                        let mut h = stats::histogram();
                        let mut n = 0;
                        while Instant::now() < end {
                            let t = Instant::now();
                            s.write_all(&msg).map_err(|e| e.to_string())?;
                            s.read_exact(&mut back).map_err(|e| e.to_string())?;
                            h.saturating_record(t.elapsed().as_nanos() as u64);
                            n += 1;
                        }
                        Ok((n, h))
                    },
                )
                .map_err(|e| {
                    format!(
                        "could not start client thread {} of --conns {conns}: {e} (give fewer)",
                        i + 1
                    )
                })
        })
        // The clients started before a refusal end at `end` by themselves.
        .collect::<Result<Vec<_>, String>>()?;
    let mut total = 0;
    let mut all = stats::histogram();
    for c in clients {
        let (n, h) = c
            .join()
            .map_err(|_| "a client thread panicked".to_owned())??;
        total += n;
        all.add(&h).map_err(|e| e.to_string())?;
    }
    Ok((
        total as f64 / start.elapsed().as_secs_f64(),
        Quantiles::of(&all),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 10s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n  Latency Distribution\n     50%  750.00us\n     75%    1.20ms\n     90%    2.00ms\n     99%    6.50ms\n  543000 requests in 10.00s, 50.00MB read\nRequests/sec:  54300.12\nTransfer/sec:      5.00MB\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.rps, 54300.12);
        assert!((r.p50_ms - 0.75).abs() < 1e-9);
        assert!((r.p99_ms - 6.5).abs() < 1e-9);
        assert_eq!(r.requests, 543000.0);
        assert_eq!(r.errors, 0);
        let with_errors = format!(
            "{out}  Socket errors: connect 0, read 2, write 0, timeout 12\n  Non-2xx or 3xx responses: 3\n"
        );
        assert_eq!(parse_wrk(&with_errors).unwrap().errors, 17);
        assert!(parse_wrk("garbage").is_none());
        // Without --latency's lines the percentiles would read 0.
        let no_latency = out.replace("     50%  750.00us\n", "");
        assert!(parse_wrk(&no_latency).is_none());
    }
}

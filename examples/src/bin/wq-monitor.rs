//! `wq-monitor`: a wq service's pools, refreshed, as the kernel's
//! `tools/workqueue/wq_monitor.py` shows workqueues; it reads the
//! service's dashboard (`wq::dashboard`), `/api/snapshot`.
//!
//! ```text
//! cargo run -p wq-examples --bin http_service &           # dashboard on 127.0.0.1:8089
//! cargo run -p wq-examples --bin wq-monitor               # terminal UI (q quits)
//! cargo run -p wq-examples --bin wq-monitor -- -i 1       # a table a second
//! cargo run -p wq-examples --bin wq-monitor -- --json     # one snapshot, for scripts
//! ```
//!
//! Exit status: 0, 1 when the service cannot be read, 2 for bad arguments.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use wq_examples::monitor::{self, Options};

const TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let opts = match monitor::parse_args(wq_examples::args()) {
        Ok(o) => o,
        Err(msg) => {
            let help = msg.starts_with("usage:");
            if help {
                // A closed stdout ends it quietly, status 0 (`say!`).
                wq_examples::say!("{}", msg.trim_end_matches('\n'));
            } else {
                eprint!("{msg}");
            }
            return if help {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let result = if opts.json || opts.interval.is_some() || !std::io::stdout().is_terminal() {
        lines(&opts)
    } else {
        tui(&opts)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wq-monitor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `-i` / `--json` (and whenever stdout is not a terminal): a report per
/// interval (one without `-i`), then exit after `-c` reports. A fetch that
/// fails after the first one is reported on stderr and retried at the next
/// interval (a service restarting, a busy dashboard).
fn lines(o: &Options) -> Result<(), String> {
    use std::io::Write;
    let mut prev = None;
    // Intervals done, a failed fetch's too: `-c` ends a script's run
    // whether or not the service answers (failures alone retried for
    // ever).
    let mut reports = 0u64;
    loop {
        match monitor::fetch(&o.addr, TIMEOUT) {
            Ok(now) => {
                let text = if o.json {
                    let out = match &prev {
                        Some(p) => now.delta(p),
                        None => now.clone(),
                    };
                    serde_json::to_string(&out).map_err(|e| e.to_string())? + "\n"
                } else {
                    monitor::line_table(
                        &monitor::title(&o.addr, &now, prev.as_ref()),
                        &monitor::rows(prev.as_ref(), &now),
                    ) + "\n"
                };
                // A reader that went away (`| head -1`) ends the run
                // quietly, as `wq-dump`'s does (`println!` panicked on
                // the broken pipe: exit 101).
                let mut out = std::io::stdout().lock();
                match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    r => r.map_err(|e| format!("writing stdout: {e}"))?,
                }
                prev = Some(now);
            }
            Err(e) if prev.is_some() && o.interval.is_some() => {
                // Not `eprintln!`: a closed stderr (`2>&1 | head`) panicked
                // here; the run goes on, and ends quietly at its next
                // write to a closed stdout.
                let _ = writeln!(std::io::stderr(), "wq-monitor: {e} (retrying)");
            }
            Err(e) => return Err(e),
        }
        reports += 1;
        let Some(secs) = o.interval else {
            return Ok(());
        };
        if o.count.is_some_and(|c| reports >= c) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
}

/// The termination signal that asked the screen to close, 0 while none has.
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(sig, Ordering::Relaxed);
}

/// While the screen is up, SIGTERM and SIGINT (a `kill`, Ctrl-C sent by
/// another process) close it as `q` does, so the terminal is given back
/// (raw mode off, the main screen back) before the process ends; they
/// killed it with the terminal left raw. SIGHUP (a closed terminal
/// window, a dropped ssh session) keeps its default: there is no
/// terminal left to give back, and caught, the process lived on, reading
/// the hung-up terminal in a loop at full CPU (crossterm's read never
/// returns there), a later `kill` caught the same way.
fn catch_stop_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed `sigaction` is valid (no flags, empty fields),
        // and so is reading the current one into it; the mask is
        // initialised by `sigemptyset`; the handler only stores an atomic.
        unsafe {
            // A signal the process was started ignoring stays ignored
            // (`nohup wq-monitor` outlives its terminal).
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Ends the process by the signal that stopped the screen, as it would
/// have ended without the handler (its parent sees "killed by SIGTERM").
fn die_by(sig: libc::c_int) -> ! {
    // SAFETY: restoring the default action and raising a signal are
    // plain syscalls; the default action of these signals ends the process.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}

/// The refreshing terminal table: every second, until q, Esc, Ctrl-C or
/// a termination signal.
/// Snapshots are fetched on a thread of their own, so the keys are read
/// while a slow or silent service keeps a fetch waiting (up to its
/// timeout).
fn tui(o: &Options) -> Result<(), String> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
    // Fail before taking the terminal over if nothing is there.
    let mut prev = monitor::fetch(&o.addr, TIMEOUT)?;
    let mut now = prev.clone();
    let mut status = String::from("q quits · refreshed every second");
    // Bounded: a screen that stopped reading (stuck in the terminal)
    // holds the fetcher, not a growing queue of snapshots.
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    let addr = o.addr.clone();
    // Left running when the screen quits: the process exits.
    std::thread::spawn(move || {
        loop {
            let started = Instant::now();
            if tx.send(monitor::fetch(&addr, TIMEOUT)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
        }
    });
    catch_stop_signals();
    // A stop signal the screen does not act on within a second (its loop
    // stuck in a terminal read): ended by the signal anyway.
    std::thread::spawn(|| {
        let mut since = None;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let sig = STOP.load(Ordering::Relaxed);
            if sig != 0 && since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1)
            {
                // The shell gets its line discipline back (a `tcsetattr`,
                // no write: it cannot block on a stuck terminal); the
                // alternate screen is the terminal's to leave.
                let _ = ratatui::crossterm::terminal::disable_raw_mode();
                die_by(sig);
            }
        }
    });
    let mut terminal = ratatui::try_init().map_err(|e| {
        // Raw mode may be on already (a later step failed): undone.
        ratatui::restore();
        format!("cannot take the terminal over: {e}")
    })?;
    let result = (|| -> Result<(), String> {
        let mut redraw = true;
        // The first pool shown, and how many the last frame showed (a
        // page); `draw` clamps the first.
        let mut scroll = 0usize;
        let mut page = 1usize;
        loop {
            if STOP.load(Ordering::Relaxed) != 0 {
                return Ok(());
            }
            while let Ok(fetched) = rx.try_recv() {
                match fetched {
                    Ok(s) => {
                        prev = std::mem::replace(&mut now, s);
                        status = String::from("q quits · refreshed every second");
                    }
                    Err(e) => status = format!("{e} (retrying)"),
                }
                redraw = true;
            }
            if redraw {
                let shown_prev = (now.uptime > prev.uptime && now.follows(&prev)).then_some(&prev);
                let title = monitor::title(&o.addr, &now, shown_prev);
                let rows = monitor::rows(shown_prev, &now);
                terminal
                    .draw(|f| {
                        page = usize::from(f.area().height.saturating_sub(5)).max(1);
                        monitor::draw(f, &title, &status, &rows, &mut scroll);
                    })
                    .map_err(|e| e.to_string())?;
                redraw = false;
            }
            let ready = match event::poll(Duration::from_millis(100)) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
                other => other.map_err(|e| e.to_string())?,
            };
            if ready {
                match event::read().map_err(|e| e.to_string())? {
                    Event::Key(k) => {
                        let ctrl_c = k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL);
                        if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                            return Ok(());
                        }
                        let was = scroll;
                        scroll = match k.code {
                            KeyCode::Down | KeyCode::Char('j') => scroll.saturating_add(1),
                            KeyCode::Up | KeyCode::Char('k') => scroll.saturating_sub(1),
                            KeyCode::PageDown | KeyCode::Char(' ') => scroll.saturating_add(page),
                            KeyCode::PageUp => scroll.saturating_sub(page),
                            KeyCode::Home | KeyCode::Char('g') => 0,
                            KeyCode::End | KeyCode::Char('G') => usize::MAX,
                            _ => scroll,
                        };
                        redraw |= scroll != was;
                    }
                    Event::Resize(..) => redraw = true,
                    _ => {}
                }
            }
        }
    })();
    ratatui::restore();
    match STOP.load(Ordering::Relaxed) {
        0 => result,
        sig => die_by(sig),
    }
}

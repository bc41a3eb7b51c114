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
use std::time::{Duration, Instant};

use wq_examples::monitor::{self, Options};

const TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let opts = match monitor::parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(msg) => {
            let help = msg.starts_with("usage:");
            eprint!("{msg}");
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
/// interval (one without `-i`), then exit after `-c` reports.
fn lines(o: &Options) -> Result<(), String> {
    let mut prev = None;
    let mut reports = 0u64;
    loop {
        let now = monitor::fetch(&o.addr, TIMEOUT)?;
        if o.json {
            let out = match &prev {
                Some(p) => now.delta(p),
                None => now.clone(),
            };
            println!(
                "{}",
                serde_json::to_string(&out).map_err(|e| e.to_string())?
            );
        } else {
            print!(
                "{}",
                monitor::line_table(
                    &monitor::title(&o.addr, &now, prev.as_ref()),
                    &monitor::rows(prev.as_ref(), &now)
                )
            );
            println!();
        }
        reports += 1;
        let Some(secs) = o.interval else {
            return Ok(());
        };
        if o.count.is_some_and(|c| reports >= c) {
            return Ok(());
        }
        prev = Some(now);
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
}

/// The refreshing terminal table: every second, until q, Esc or Ctrl-C.
fn tui(o: &Options) -> Result<(), String> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
    // Fail before taking the terminal over if nothing is there.
    let mut prev = monitor::fetch(&o.addr, TIMEOUT)?;
    let mut now = prev.clone();
    let mut status = String::from("q quits · refreshed every second");
    let mut terminal = ratatui::init();
    let result = (|| -> Result<(), String> {
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                match monitor::fetch(&o.addr, TIMEOUT) {
                    Ok(s) => {
                        prev = std::mem::replace(&mut now, s);
                        status = String::from("q quits · refreshed every second");
                    }
                    Err(e) => status = format!("{e} (retrying)"),
                }
                let shown_prev = (now.uptime > prev.uptime).then_some(&prev);
                let title = monitor::title(&o.addr, &now, shown_prev);
                let rows = monitor::rows(shown_prev, &now);
                terminal
                    .draw(|f| monitor::draw(f, &title, &status, &rows))
                    .map_err(|e| e.to_string())?;
                next = Instant::now() + Duration::from_secs(1);
            }
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait).map_err(|e| e.to_string())?
                && let Event::Key(k) = event::read().map_err(|e| e.to_string())?
            {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                    return Ok(());
                }
            }
        }
    })();
    ratatui::restore();
    result
}

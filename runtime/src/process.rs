//! Child processes: [`Command`], [`Child`] and its pipes, awaited without
//! blocking a worker.
//!
//! # Protocol
//!
//! - **Spawn.** std's `Command::spawn` runs on the calling thread (a
//!   `fork`/`exec`, or `posix_spawn`: as tokio's), after a check that a
//!   runtime is current and has its driver: otherwise the spawn is an
//!   error and nothing is started. The piped ends the child was given are
//!   made non-blocking and registered with the runtime's driver
//!   ([`AsyncFd`] over the pipe); if that fails, the child is killed and
//!   a task reaps it. [`Command::output`] and [`Command::status`] start
//!   the child when called, as tokio's, and give a future that does not
//!   borrow the command.
//! - **Exit.** A pidfd (`pidfd_open`, Linux 5.3) of the child, registered
//!   with the driver, turns readable when the child exits, and stays so.
//!   [`Child::wait`] waits for that readiness, then reaps the child with
//!   `waitpid` (std's `try_wait`). A `try_wait` that finds it running says
//!   `WouldBlock`, which clears the readiness seen: correct, because the
//!   pidfd is readable only once the child has exited, so no event was
//!   pending (the [`AsyncFd`] contract); an exit between the look and the
//!   clear moves the readiness's tick, and the clear leaves it. Kernels
//!   from 5.3 until a 2020 fix could miss the edge, so a wait also looks
//!   every second. Where `pidfd_open` fails (`ENOSYS` before 5.3, `EPERM`
//!   under a seccomp filter), `wait` polls `try_wait` on a timer, 1 ms
//!   doubling to 50 ms between looks: the exit is seen up to 50 ms late,
//!   and no thread is held. The timers are the child's runtime's, so a
//!   wait may be polled from any thread; after that runtime's shutdown a
//!   wait is an error.
//! - **Reaping.** A child is reaped once, by `wait`, `try_wait` or
//!   `kill`; its status is kept and given again, and [`Child::id`] says
//!   `None` from then on (its pid may belong to another process).
//!   `start_kill` signals through the pidfd, so never a process that
//!   reused the id. A `Child` dropped unreaped is killed first if
//!   [`kill_on_drop`](Command::kill_on_drop) asked for it; then it is
//!   reaped at once if it has exited, or else handed to a task of its
//!   runtime that waits for its exit and reaps it, so a service that drops
//!   its children leaves no zombies while its runtime lives. A child whose
//!   runtime has shut down stays a zombie until this process exits (as
//!   std's).
//! - **Pipes.** [`ChildStdin`] is a `futures` `AsyncWrite`, [`ChildStdout`]
//!   and [`ChildStderr`] are `AsyncRead`s (one waker per direction: the
//!   last task to poll). [`Child::wait`] drops the child's stdin first, as
//!   tokio's does: a child reading its input to the end would otherwise
//!   wait for it while its parent waits for the child. Each pipe converts
//!   into a [`Stdio`] (deregistered, blocking again) to feed another child.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use std::process::{ExitStatus, Output, Stdio};

use crate::io::AsyncFd;

/// A process to start: std's [`Command`](std::process::Command), with a
/// [`spawn`](Command::spawn) whose [`Child`] is awaited, and
/// [`output`](Command::output) and [`status`](Command::status) that
/// wait without blocking a worker.
///
/// ```
/// use wq::process::Command;
///
/// #[wq::main]
/// async fn main() -> std::io::Result<()> {
///     let out = Command::new("sh").arg("-c").arg("echo hello; exit 3").output().await?;
///     assert_eq!(out.stdout, b"hello\n");
///     assert_eq!(out.status.code(), Some(3));
///     Ok(())
/// }
/// ```
pub struct Command {
    std: std::process::Command,
    kill_on_drop: bool,
    /// Which of stdin, stdout and stderr the caller set: `output` pipes
    /// the other two outputs and gives a null stdin, as std's.
    set: [bool; 3],
}

impl Command {
    /// A command running `program` (a path, or a name looked up in `PATH`),
    /// with no arguments, this process's environment and working
    /// directory, and its stdin, stdout and stderr inherited by
    /// [`spawn`](Command::spawn) and [`status`](Command::status).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command::from(std::process::Command::new(program))
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.std.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.std.args(args);
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Command {
        self.std.env(key, value);
        self
    }

    /// Sets environment variables for the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.std.envs(vars);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.std.env_remove(key);
        self
    }

    /// Starts the child with an empty environment (and then what `env`
    /// adds).
    pub fn env_clear(&mut self) -> &mut Command {
        self.std.env_clear();
        self
    }

    /// The child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.std.current_dir(dir);
        self
    }

    /// The child's stdin: [`Stdio::piped`] gives [`Child::stdin`], a
    /// [`ChildStdout`] or [`ChildStderr`] of another child feeds it that
    /// child's output (`try_into()?`).
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdin(cfg);
        self.set[0] = true;
        self
    }

    /// The child's stdout: [`Stdio::piped`] gives [`Child::stdout`].
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdout(cfg);
        self.set[1] = true;
        self
    }

    /// The child's stderr: [`Stdio::piped`] gives [`Child::stderr`].
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stderr(cfg);
        self.set[2] = true;
        self
    }

    /// Whether dropping the [`Child`] before it was reaped kills it
    /// (`SIGKILL`); off by default: a dropped child runs on (and is
    /// reaped when it exits: module docs).
    pub fn kill_on_drop(&mut self, kill: bool) -> &mut Command {
        self.kill_on_drop = kill;
        self
    }

    /// std's command, for what this type does not forward
    /// (`std::os::unix::process::CommandExt`: `uid`, `process_group`,
    /// `pre_exec`...).
    pub fn as_std(&self) -> &std::process::Command {
        &self.std
    }

    /// std's command, to change (see [`as_std`](Command::as_std)). Stdio
    /// set here counts as not set for [`output`](Command::output) (as for
    /// a command made `From` std's): set it with this type's methods.
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.std
    }

    /// Starts the child.
    ///
    /// # Errors
    /// No wq runtime is current on this thread (nothing is started then:
    /// call it from a task, or inside `block_on` or `Handle::enter`), or
    /// std's `spawn` fails (a program not found, no permission...), or the
    /// child's pipes cannot be registered with the runtime's driver (the
    /// runtime shut down, no descriptors left: the child is killed and
    /// reaped then).
    pub fn spawn(&mut self) -> io::Result<Child> {
        self.spawn_watching(true)
    }

    fn spawn_watching(&mut self, pidfd: bool) -> io::Result<Child> {
        let Some(runtime) = crate::Handle::try_current() else {
            return Err(io::Error::other(
                "wq::process::Command::spawn outside a wq runtime: nothing was started (spawn \
                 from a task, or inside Runtime::block_on or Handle::enter)",
            ));
        };
        // Before the child starts: no driver (the runtime shut down before
        // it made one, no descriptors left), no child.
        let driver = crate::scheduler::services::current_driver("wq::process::Command::spawn")?;
        Child::new(
            self.std.spawn()?,
            (runtime, driver),
            self.kill_on_drop,
            pidfd,
        )
    }

    /// Starts the child with its stdout and stderr piped (unless set) and
    /// a null stdin (unless set), and gives a future of what it wrote and
    /// its status. The child starts in this call, as tokio's (two calls
    /// awaited later run their children at once); the future does not
    /// borrow the command (`wq::spawn(cmd.output())`).
    ///
    /// # Errors
    /// As [`spawn`](Command::spawn) (the future gives it), or reading its
    /// output failed.
    pub fn output(&mut self) -> impl Future<Output = io::Result<Output>> + Send + use<> {
        self.unset_stdio(|i| {
            if i == 0 {
                Stdio::null()
            } else {
                Stdio::piped()
            }
        });
        let child = self.spawn();
        // The command as the caller set it, for its next use.
        self.restore();
        async move { child?.wait_with_output().await }
    }

    /// Starts the child (stdin, stdout and stderr inherited unless set),
    /// closes the pipes set with [`Stdio::piped`] (a child writing to one
    /// would otherwise fill it and wait for good), and gives a future of
    /// its status. The child starts in this call, as
    /// [`output`](Command::output)'s.
    ///
    /// # Errors
    /// As [`spawn`](Command::spawn) (the future gives it).
    pub fn status(&mut self) -> impl Future<Output = io::Result<ExitStatus>> + Send + use<> {
        let child = self.spawn().map(|mut child| {
            drop(child.stdout.take());
            drop(child.stderr.take());
            child
        });
        async move { child?.wait().await }
    }

    /// Undoes `output`'s defaults: stdio the caller did not set goes back
    /// to inherited.
    fn restore(&mut self) {
        self.unset_stdio(|_| Stdio::inherit());
    }

    /// Sets what the caller did not set of stdin, stdout and stderr (0, 1
    /// and 2) to `make`'s.
    fn unset_stdio(&mut self, make: impl Fn(usize) -> Stdio) {
        for (i, _) in self.set.into_iter().enumerate().filter(|(_, set)| !set) {
            let cfg = make(i);
            match i {
                0 => self.std.stdin(cfg),
                1 => self.std.stdout(cfg),
                _ => self.std.stderr(cfg),
            };
        }
    }
}

impl From<std::process::Command> for Command {
    /// A std command as wq's. Its stdio counts as not set for
    /// [`output`](Command::output), which std's command cannot tell:
    /// `output` pipes its stdout and stderr and gives it a null stdin, and
    /// leaves all three inherited afterwards; set them on the wq command.
    fn from(std: std::process::Command) -> Command {
        Command {
            std,
            kill_on_drop: false,
            set: [false; 3],
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.std, f)
    }
}

/// How a child's exit is seen (module docs, "Exit").
enum Watch {
    /// Its pidfd, registered with the driver.
    Pidfd(AsyncFd<OwnedFd>),
    /// `try_wait` on a timer: `pidfd_open` failed.
    Timer,
}

/// A child as a [`Child`] holds it until it is reaped.
struct Proc {
    /// Its stdio taken.
    child: std::process::Child,
    watch: Watch,
    /// The driver of its runtime, for its timers: a wait polled from a
    /// thread of no runtime works, and one after the shutdown is an error.
    driver: crate::driver::Handle,
    /// Its runtime, which reaps it if it is dropped running.
    runtime: crate::Handle,
}

/// A started child process ([`Command::spawn`]).
///
/// Await its exit with [`wait`](Child::wait); its piped stdio are the
/// public fields. Dropping it unreaped does not kill it unless
/// [`Command::kill_on_drop`] said so; the runtime reaps it when it exits
/// (module docs).
pub struct Child {
    /// `None` only while it is handed to its reaping task at the drop.
    proc: Option<Proc>,
    /// Its status, once reaped.
    status: Option<ExitStatus>,
    kill_on_drop: bool,
    /// Its stdin, if piped ([`Stdio::piped`]).
    pub stdin: Option<ChildStdin>,
    /// Its stdout, if piped.
    pub stdout: Option<ChildStdout>,
    /// Its stderr, if piped.
    pub stderr: Option<ChildStderr>,
}

/// How long a wait through the pidfd goes before it looks with `try_wait`
/// anyway: kernels from 5.3 until a 2020 fix ("pidfd: fix a poll race
/// when setting exit_state") could report a pidfd not readable to the
/// edge-triggered epoll as the child exited, and no second edge came.
const PIDFD_BACKSTOP: Duration = Duration::from_secs(1);

impl Child {
    /// Takes `child`'s pipes and watches its exit. On an error the child
    /// is killed, and reaped by a task (not waited for here: a child in
    /// uninterruptible sleep would hold this worker).
    fn new(
        mut child: std::process::Child,
        (runtime, driver): (crate::Handle, crate::driver::Handle),
        kill_on_drop: bool,
        pidfd: bool,
    ) -> io::Result<Child> {
        match Child::watch(&mut child, pidfd) {
            Ok((watch, [stdin, stdout, stderr])) => Ok(Child {
                proc: Some(Proc {
                    child,
                    watch,
                    driver,
                    runtime,
                }),
                status: None,
                kill_on_drop,
                stdin: stdin.map(|io| ChildStdin { io }),
                stdout: stdout.map(|io| ChildStdout { io }),
                stderr: stderr.map(|io| ChildStderr { io }),
            }),
            Err(e) => {
                drop(Child {
                    proc: Some(Proc {
                        child,
                        watch: Watch::Timer,
                        driver,
                        runtime,
                    }),
                    status: None,
                    kill_on_drop: true,
                    stdin: None,
                    stdout: None,
                    stderr: None,
                });
                Err(e)
            }
        }
    }

    /// `child`'s pipes, registered, and its exit's watch.
    fn watch(
        child: &mut std::process::Child,
        pidfd: bool,
    ) -> io::Result<(Watch, [Option<Pipe>; 3])> {
        let stdin = child.stdin.take().map(|p| pipe(p.into())).transpose()?;
        let stdout = child.stdout.take().map(|p| pipe(p.into())).transpose()?;
        let stderr = child.stderr.take().map(|p| pipe(p.into())).transpose()?;
        let watch = match pidfd.then(|| pidfd_open(child.id())) {
            Some(Ok(fd)) => Watch::Pidfd(AsyncFd::new(fd)?),
            // No pidfds (`ENOSYS`, `EPERM`), or the child is gone already:
            // reaped by the kernel (`SIGCHLD` ignored), which `try_wait`
            // will say (`ESRCH`).
            Some(Err(e))
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::EPERM | libc::ESRCH)
                ) =>
            {
                return Err(e);
            }
            _ => Watch::Timer,
        };
        Ok((watch, [stdin, stdout, stderr]))
    }

    /// The child's process id, until it is reaped (then `None`: the id may
    /// be another process's).
    pub fn id(&self) -> Option<u32> {
        match (&self.proc, self.status) {
            (Some(proc), None) => Some(proc.child.id()),
            _ => None,
        }
    }

    /// Waits for the child to exit, reaps it, and gives its status (again,
    /// if it was reaped before). Drops [`stdin`](Child::stdin) first (module
    /// docs). Cancel-safe: dropped before it is done, the child is not
    /// reaped and a later call waits again. It may be polled from any
    /// thread, in a runtime or not.
    ///
    /// # Errors
    /// `waitpid` failed (the child was reaped by someone else: a
    /// `waitpid(-1)` of this process's, a `SIGCHLD` set to be ignored), or
    /// the child's runtime shut down before it exited.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        if let Some(status) = self.status {
            return Ok(status);
        }
        let proc = self.proc.as_mut().expect("a child is held until its drop");
        let status = proc.exited().await?;
        self.status = Some(status);
        Ok(status)
    }

    /// Reaps the child if it has exited, without waiting: its status, or
    /// `None` while it runs.
    ///
    /// # Errors
    /// `waitpid` failed, as for [`wait`](Child::wait).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            let proc = self.proc.as_mut().expect("a child is held until its drop");
            self.status = proc.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Sends the child `SIGKILL`, without waiting for it to exit; through
    /// its pidfd where it has one (never another process that reused its
    /// id). Does nothing once it is reaped, or if it has exited.
    ///
    /// # Errors
    /// The signal could not be sent.
    pub fn start_kill(&mut self) -> io::Result<()> {
        match (&mut self.proc, self.status) {
            (Some(proc), None) => proc.kill(),
            _ => Ok(()),
        }
    }

    /// Kills the child (`SIGKILL`) and waits for it to exit (it is reaped).
    ///
    /// # Errors
    /// As [`start_kill`](Child::start_kill) and [`wait`](Child::wait).
    pub async fn kill(&mut self) -> io::Result<()> {
        self.start_kill()?;
        self.wait().await.map(drop)
    }

    /// Waits for the child to exit while reading all of its piped stdout
    /// and stderr (those not piped, or taken, give nothing), and gives
    /// them with its status. Drops its stdin first.
    ///
    /// # Errors
    /// As [`wait`](Child::wait), or a read of its output failed.
    pub async fn wait_with_output(mut self) -> io::Result<Output> {
        async fn read_all(pipe: Option<impl futures::AsyncRead + Unpin>) -> io::Result<Vec<u8>> {
            use futures::AsyncReadExt;
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_end(&mut out).await?;
            }
            Ok(out)
        }
        let (stdout, stderr) = (self.stdout.take(), self.stderr.take());
        let (status, stdout, stderr) =
            futures::join!(self.wait(), read_all(stdout), read_all(stderr));
        Ok(Output {
            status: status?,
            stdout: stdout?,
            stderr: stderr?,
        })
    }
}

impl Proc {
    /// Waits for the child to exit and reaps it (module docs, "Exit").
    async fn exited(&mut self) -> io::Result<ExitStatus> {
        let child = &mut self.child;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            let mut sleep = match &self.watch {
                Watch::Pidfd(_) => crate::time::sleep_on(self.driver.clone(), PIDFD_BACKSTOP),
                Watch::Timer => {
                    let sleep = crate::time::sleep_on(self.driver.clone(), pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                    sleep
                }
            };
            // The exit (a readable pidfd), or the timer's end: then a look.
            let exit = std::future::poll_fn(|cx| {
                if let Watch::Pidfd(fd) = &self.watch
                    && let Poll::Ready(r) = fd.poll_read_with(cx, |_| {
                        // Not exited: no event is pending (a pidfd is
                        // readable only once its process has exited), so
                        // this clears a readiness that was never there.
                        child
                            .try_wait()?
                            .ok_or_else(|| io::ErrorKind::WouldBlock.into())
                    })
                {
                    return Poll::Ready(Some(r));
                }
                sleep.poll_unless_shut_down(cx).map(|r| {
                    r.err()
                        .map(|_| Err(crate::driver::scheduled_io::shutdown_error()))
                })
            })
            .await;
            if let Some(r) = exit {
                return r;
            }
        }
    }

    /// `SIGKILL`, through the pidfd where there is one.
    fn kill(&mut self) -> io::Result<()> {
        let Watch::Pidfd(fd) = &self.watch else {
            return self.child.kill();
        };
        // SAFETY: pidfd_send_signal takes a pidfd this process holds open,
        // a signal number, a null siginfo and no flags.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.get_ref().as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match sent {
            0 => Ok(()),
            // Exited (a zombie): as std's `kill` of an exited child.
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let Some(mut proc) = self.proc.take() else {
            return;
        };
        if self.kill_on_drop {
            let _ = proc.kill();
        }
        // Exited: reaped now. Running: a task of its runtime reaps it when
        // it exits (the task given up if the runtime has shut down).
        if !matches!(proc.child.try_wait(), Ok(None)) {
            return;
        }
        let runtime = proc.runtime.clone();
        drop(runtime.spawn(async move {
            let _ = proc.exited().await;
        }));
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("id", &self.id())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A piped end, registered with the driver.
type Pipe = AsyncFd<File>;

/// `fd` (a pipe end whose other end the child was given), non-blocking
/// and registered.
fn pipe(fd: OwnedFd) -> io::Result<Pipe> {
    set_blocking(&fd, false)?;
    AsyncFd::new(File::from(fd))
}

/// Sets or clears `O_NONBLOCK` (`FIONBIO`) on a descriptor this process
/// alone holds (the pipe's other end is another open file, the child's).
fn set_blocking(fd: &impl AsRawFd, blocking: bool) -> io::Result<()> {
    let on: libc::c_int = (!blocking).into();
    // SAFETY: FIONBIO reads the int it is pointed at, on an open
    // descriptor the caller owns.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONBIO, &on) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd of the child `pid` (close-on-exec, as `pidfd_open` makes them).
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: a descriptor the kernel just gave, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

macro_rules! pipe_end {
    ($name:ident, $what:literal) => {
        #[doc = concat!(
                            "The child's ", $what,
                            " ([`Child::", $what, "`]): a pipe end, registered with the driver."
                        )]
        pub struct $name {
            io: Pipe,
        }

        impl $name {
            /// The pipe end as a descriptor of its own: deregistered, and
            /// blocking again (to give to another child, or to blocking
            /// code).
            ///
            /// # Errors
            /// Its mode could not be changed (it is closed then).
            pub fn into_owned_fd(self) -> io::Result<OwnedFd> {
                let fd = OwnedFd::from(self.io.into_inner());
                set_blocking(&fd, true)?;
                Ok(fd)
            }
        }

        impl TryFrom<$name> for Stdio {
            type Error = io::Error;

            /// For another child's stdio (`command.stdin(out.try_into()?)`),
            /// through `into_owned_fd`.
            fn try_from(end: $name) -> io::Result<Stdio> {
                end.into_owned_fd().map(Stdio::from)
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.io.get_ref().as_fd()
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.io.get_ref().as_raw_fd()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("fd", &self.as_raw_fd())
                    .finish()
            }
        }
    };
}

pipe_end!(ChildStdin, "stdin");
pipe_end!(ChildStdout, "stdout");
pipe_end!(ChildStderr, "stderr");

impl futures::AsyncWrite for ChildStdin {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io.poll_write_with(cx, |f| (&*f).write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io.poll_write_with(cx, |f| (&*f).write_vectored(bufs))
    }

    /// Nothing is buffered: ready at once.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Ready at once; the child reads end-of-file once this end is
    /// dropped (a pipe has no half-close).
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

macro_rules! read_end {
    ($name:ident) => {
        impl futures::AsyncRead for $name {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                self.io.poll_read_with(cx, |f| (&*f).read(buf))
            }
        }
    };
}

read_end!(ChildStdout);
read_end!(ChildStderr);

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Command, Stdio, Watch};
    use std::time::{Duration, Instant};

    /// Whether `pid` is gone: reaped (not a zombie waiting for its parent).
    fn reaped(pid: u32) -> bool {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    async fn until_reaped(pid: u32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reaped(pid) {
            assert!(Instant::now() < deadline, "{pid} never reaped");
            crate::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Without a pidfd (`pidfd_open` refused: an old kernel, seccomp), a
    /// wait polls on a timer and still sees the exit and its status; a
    /// child dropped running is still reaped.
    #[test]
    fn without_a_pidfd_waits_poll_until_the_exit() {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            // Runs until its stdin reads end-of-file (the wait drops it).
            let mut child = Command::new("sh")
                .args(["-c", "read x; exit 4"])
                .stdin(Stdio::piped())
                .spawn_watching(false)
                .unwrap();
            assert!(matches!(
                child.proc,
                Some(super::Proc {
                    watch: Watch::Timer,
                    ..
                })
            ));
            assert_eq!(child.try_wait().unwrap(), None);
            assert_eq!(child.wait().await.unwrap().code(), Some(4));
            assert_eq!(child.id(), None);

            let child = Command::new("sh")
                .args(["-c", "read x"])
                .stdin(Stdio::piped())
                .spawn_watching(false)
                .unwrap();
            let pid = child.id().unwrap();
            drop(child);
            until_reaped(pid).await;
        });
    }

    /// A child whose pipes cannot be registered with the driver: the
    /// spawn is an error, and the child, started already, is killed and
    /// reaped: no child of the spawning thread (`/proc/thread-self/children`,
    /// which lists it until it is reaped) is left.
    #[test]
    fn a_refused_registration_kills_and_reaps_the_child() {
        fn children() -> Vec<u32> {
            std::fs::read_to_string("/proc/thread-self/children")
                .expect("/proc/thread-self/children (CONFIG_PROC_CHILDREN)")
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect()
        }
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            let before = children();
            crate::driver::REFUSE_REGISTER.set(true);
            let spawned = Command::new("sleep")
                .arg("1000")
                .stdout(Stdio::piped())
                .spawn();
            crate::driver::REFUSE_REGISTER.set(false);
            assert!(spawned.is_err());
            let new: Vec<u32> = children()
                .into_iter()
                .filter(|p| !before.contains(p))
                .collect();
            // Reaped already (killed, and found exited by the drop), or
            // soon, by its reaping task; not left running.
            assert!(new.len() <= 1, "the spawned child: {new:?}");
            for pid in new {
                until_reaped(pid).await;
            }
        });
    }
}

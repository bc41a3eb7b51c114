//! Child processes: [`Command`], [`Child`] and its pipes, awaited without
//! blocking a worker.
//!
//! # Protocol
//!
//! - **Spawn.** std's `Command::spawn` runs on the calling thread (a
//!   `fork`/`exec`, or `posix_spawn`: as tokio's), after a check that a
//!   runtime is current: outside one, the spawn is an error and nothing is
//!   started. The piped ends the child was given are made non-blocking and
//!   registered with the runtime's driver ([`AsyncFd`] over the pipe).
//! - **Exit.** A pidfd (`pidfd_open`, Linux 5.3) of the child, registered
//!   with the driver, turns readable when the child exits, and stays so.
//!   [`Child::wait`] waits for that readiness, then reaps the child with
//!   `waitpid` (std's `try_wait`). A `try_wait` that finds it running says
//!   `WouldBlock`, which clears the readiness seen: correct, because the
//!   pidfd is readable only once the child has exited, so no event was
//!   pending (the [`AsyncFd`] contract). Where `pidfd_open` fails (`ENOSYS`
//!   before 5.3, `EPERM` under a seccomp filter), `wait` polls `try_wait`
//!   on a timer, 1 ms doubling to 50 ms between looks: the child's exit is
//!   seen up to 50 ms late, and no thread is held.
//! - **Reaping.** A child is reaped once, by `wait`, `try_wait` or
//!   `kill`; its status is kept and given again, and [`Child::id`] says
//!   `None` from then on (its pid may belong to another process). A
//!   `Child` dropped unreaped is killed first if
//!   [`kill_on_drop`](Command::kill_on_drop) asked for it; then it is
//!   reaped at once if it has exited, or else handed to a task of the
//!   runtime that waits for its exit and reaps it, so a service that
//!   drops its children leaves no zombies while its runtime lives. A
//!   child dropped outside any runtime, or whose reaping task the
//!   runtime's shutdown drops, stays a zombie until this process exits
//!   (as std's).
//! - **Pipes.** [`ChildStdin`] is a `futures` `AsyncWrite`, [`ChildStdout`]
//!   and [`ChildStderr`] are `AsyncRead`s (one waker per direction: the
//!   last task to poll). [`Child::wait`] drops the child's stdin first, as
//!   tokio's does: a child reading its input to the end would otherwise
//!   wait for it while its parent waits for the child. Each pipe converts
//!   into a [`Stdio`] (deregistered, blocking again) to feed another child.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
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

    /// std's command, to change (see [`as_std`](Command::as_std)).
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
        if crate::Handle::try_current().is_none() {
            return Err(io::Error::other(
                "wq::process::Command::spawn outside a wq runtime: nothing was started (spawn \
                 from a task, or inside Runtime::block_on or Handle::enter)",
            ));
        }
        Child::new(self.std.spawn()?, self.kill_on_drop, pidfd)
    }

    /// Starts the child with its stdout and stderr piped (unless set) and
    /// a null stdin (unless set), waits for it, and gives what it wrote
    /// and its status.
    ///
    /// # Errors
    /// As [`spawn`](Command::spawn), or reading its output failed.
    pub async fn output(&mut self) -> io::Result<Output> {
        if !self.set[0] {
            self.std.stdin(Stdio::null());
        }
        if !self.set[1] {
            self.std.stdout(Stdio::piped());
        }
        if !self.set[2] {
            self.std.stderr(Stdio::piped());
        }
        let child = self.spawn();
        // The command as the caller set it, for its next use.
        self.restore();
        child?.wait_with_output().await
    }

    /// Starts the child (stdin, stdout and stderr inherited unless set) and
    /// waits for it; pipes set with [`Stdio::piped`] are closed at once.
    ///
    /// # Errors
    /// As [`spawn`](Command::spawn).
    pub async fn status(&mut self) -> io::Result<ExitStatus> {
        let mut child = self.spawn()?;
        drop(child.stdout.take());
        drop(child.stderr.take());
        child.wait().await
    }

    /// Undoes `output`'s defaults: stdio the caller did not set goes back
    /// to inherited.
    fn restore(&mut self) {
        if !self.set[0] {
            self.std.stdin(Stdio::inherit());
        }
        if !self.set[1] {
            self.std.stdout(Stdio::inherit());
        }
        if !self.set[2] {
            self.std.stderr(Stdio::inherit());
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

/// A started child process ([`Command::spawn`]).
///
/// Await its exit with [`wait`](Child::wait); its piped stdio are the
/// public fields. Dropping it unreaped does not kill it unless
/// [`Command::kill_on_drop`] said so; the runtime reaps it when it exits
/// (module docs).
pub struct Child {
    /// The child (its stdio taken) and how its exit is seen; `None` only
    /// while it is handed to its reaping task at the drop.
    proc: Option<(std::process::Child, Watch)>,
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

impl Child {
    /// Takes `child`'s pipes and watches its exit; on an error, kills and
    /// reaps it first.
    fn new(mut child: std::process::Child, kill_on_drop: bool, pidfd: bool) -> io::Result<Child> {
        match Child::watch(&mut child, pidfd) {
            Ok((watch, [stdin, stdout, stderr])) => Ok(Child {
                proc: Some((child, watch)),
                status: None,
                kill_on_drop,
                stdin: stdin.map(|io| ChildStdin { io }),
                stdout: stdout.map(|io| ChildStdout { io }),
                stderr: stderr.map(|io| ChildStderr { io }),
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
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
            Some(Err(e)) if !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
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
            (Some((child, _)), None) => Some(child.id()),
            _ => None,
        }
    }

    /// Waits for the child to exit, reaps it, and gives its status (again,
    /// if it was reaped before). Drops [`stdin`](Child::stdin) first (module
    /// docs). Cancel-safe: dropped before it is done, the child is not
    /// reaped and a later call waits again.
    ///
    /// # Errors
    /// `waitpid` failed (the child was reaped by someone else: a
    /// `waitpid(-1)` of this process's, a `SIGCHLD` set to be ignored).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        if let Some(status) = self.status {
            return Ok(status);
        }
        let (child, watch) = self.proc.as_mut().expect("a child is held until its drop");
        let status = exited(child, watch).await?;
        self.status = Some(status);
        Ok(status)
    }

    /// Reaps the child if it has exited, without waiting: its status, or
    /// `None` while it runs.
    ///
    /// # Errors
    /// As [`wait`](Child::wait).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            let (child, _) = self.proc.as_mut().expect("a child is held until its drop");
            self.status = child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Sends the child `SIGKILL`, without waiting for it to exit. Does
    /// nothing once it is reaped (and std's `kill` says `Ok` for a child
    /// that has exited).
    ///
    /// # Errors
    /// `kill` failed.
    pub fn start_kill(&mut self) -> io::Result<()> {
        match (&mut self.proc, self.status) {
            (Some((child, _)), None) => child.kill(),
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

/// Waits for `child` to exit and reaps it (module docs, "Exit").
async fn exited(child: &mut std::process::Child, watch: &Watch) -> io::Result<ExitStatus> {
    match watch {
        Watch::Pidfd(fd) => {
            fd.read_with(|_| {
                child
                    .try_wait()?
                    .ok_or_else(|| io::ErrorKind::WouldBlock.into())
            })
            .await
        }
        Watch::Timer => {
            let mut pause = Duration::from_millis(1);
            loop {
                if let Some(status) = child.try_wait()? {
                    return Ok(status);
                }
                crate::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let Some((mut child, watch)) = self.proc.take() else {
            return;
        };
        if self.kill_on_drop {
            let _ = child.kill();
        }
        // Exited: reaped now. Running: a task reaps it when it exits.
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(handle) = crate::Handle::try_current() {
            drop(handle.spawn(async move {
                let _ = exited(&mut child, &watch).await;
            }));
        }
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

impl futures::AsyncRead for ChildStdout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.io.poll_read_with(cx, |f| (&*f).read(buf))
    }
}

impl futures::AsyncRead for ChildStderr {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.io.poll_read_with(cx, |f| (&*f).read(buf))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Command;

    /// Without a pidfd (`pidfd_open` refused: an old kernel, seccomp), a
    /// wait polls on a timer and still sees the exit and its status.
    #[test]
    fn a_wait_without_a_pidfd_polls_until_the_exit() {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            let mut child = Command::new("sh")
                .args(["-c", "sleep 0.1; exit 4"])
                .spawn_watching(false)
                .unwrap();
            assert!(matches!(child.proc, Some((_, super::Watch::Timer))));
            assert_eq!(child.try_wait().unwrap(), None);
            assert_eq!(child.wait().await.unwrap().code(), Some(4));
            assert_eq!(child.id(), None);
        });
    }
}

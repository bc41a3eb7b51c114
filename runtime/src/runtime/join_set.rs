//! `JoinSet`'s spawns: the runtime's `spawn`, `spawn_on` and
//! `spawn_blocking`, their handles pushed into the set (the set itself is
//! `task/join_set.rs`, a layer below the runtime).

use std::future::Future;

use crate::Scope;
use crate::scheduler::context;
use crate::task::JoinSet;

/// Panics, naming `what`, outside a runtime (the spawn it calls would name
/// itself: `wq::spawn`, a call the user did not make).
fn in_a_runtime(what: &str) {
    if !context::with_current(|s| s.is_some()) {
        context::outside(what);
    }
}

impl<T: Send + 'static> JoinSet<T> {
    /// Spawns `future` into the set, at the runtime's default scope (as
    /// [`crate::spawn`]).
    ///
    /// # Panics
    /// Outside a runtime, as [`crate::spawn`].
    pub fn spawn<F>(&mut self, future: F)
    where
        F: Future<Output = T> + Send + 'static,
    {
        in_a_runtime("JoinSet::spawn");
        self.push(crate::spawn(future));
    }

    /// Spawns `future` into the set, on the pool of the `scope` pod that
    /// holds the calling thread's CPU (as [`crate::spawn_on`]).
    ///
    /// # Panics
    /// Outside a runtime, as [`crate::spawn_on`].
    pub fn spawn_on<F>(&mut self, scope: Scope, future: F)
    where
        F: Future<Output = T> + Send + 'static,
    {
        in_a_runtime("JoinSet::spawn_on");
        self.push(crate::spawn_on(scope, future));
    }

    /// Runs `f` on the runtime's blocking pool, its result joined through
    /// the set (as [`crate::spawn_blocking`]). An abort stops it only if
    /// it has not started.
    ///
    /// # Panics
    /// Outside a runtime, as [`crate::spawn_blocking`].
    pub fn spawn_blocking<F>(&mut self, f: F)
    where
        F: FnOnce() -> T + Send + 'static,
    {
        in_a_runtime("JoinSet::spawn_blocking");
        self.push(crate::spawn_blocking(f));
    }
}

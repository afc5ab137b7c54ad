//! What the master tells a service manager (`NOTIFY_SOCKET`,
//! `notify.rs`) for the whole server: the workers never speak to it.
//!
//! | the master's state | sent when it is reached |
//! | --- | --- |
//! | every slot has a worker that said `ready` | `READY=1` (the sockets were live since `bind`; now someone accepts on every slot) |
//! | a rolling restart (SIGHUP) under way | `RELOADING=1`; `READY=1` again once every slot is replaced |
//! | stopping (SIGINT/SIGTERM) or failed | `STOPPING=1` |
//!
//! Each is sent once per change, with a `STATUS=` line, after the
//! master's page is updated, so that a client told "ready" finds the
//! page saying so too.

use super::Supervisor;

/// The last state the service manager was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Told {
    /// Nothing yet: workers are starting.
    #[default]
    Starting,
    Ready,
    Reloading,
    Stopping,
}

impl Supervisor {
    /// Tells the service manager, if there is one, what changed since it
    /// was last told.
    pub(super) fn tell_manager(&mut self) {
        let Some(notifier) = self.notifier.as_ref() else {
            return;
        };
        let now = if self.stops > 0 || self.failed {
            Told::Stopping
        } else if self.rolling.is_some() {
            Told::Reloading
        } else if self.slots.iter().all(|slot| slot.ever_ready) {
            Told::Ready
        } else {
            Told::Starting
        };
        if now == self.told {
            return;
        }
        let workers = self.slots.len();
        match now {
            Told::Starting => return,
            Told::Ready => notifier.ready(&format!("serving with {workers} workers")),
            Told::Reloading => {
                notifier.reloading(&format!("replacing {workers} workers one at a time"))
            }
            Told::Stopping => notifier.stopping(&format!(
                "stopping: draining {} workers",
                self.workers.len()
            )),
        }
        self.told = now;
    }
}

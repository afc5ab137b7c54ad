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

impl Told {
    /// What the manager is to be told: stopping, reloading, or ready once
    /// every slot has had a worker say `ready`.
    fn now(stopping: bool, rolling: bool, mut slots_ready: impl Iterator<Item = bool>) -> Told {
        if stopping {
            Told::Stopping
        } else if rolling {
            Told::Reloading
        } else if slots_ready.all(|ready| ready) {
            Told::Ready
        } else {
            Told::Starting
        }
    }
}

impl Supervisor {
    /// Tells the service manager, if there is one, what changed since it
    /// was last told.
    pub(super) fn tell_manager(&mut self) {
        let Some(notifier) = self.notifier.as_ref() else {
            return;
        };
        let now = Told::now(
            self.stops > 0 || self.failed,
            self.rolling.is_some(),
            self.slots.iter().map(|slot| slot.ever_ready),
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_waits_for_every_slot_and_stopping_comes_first() {
        let now =
            |stopping, rolling, slots: &[bool]| Told::now(stopping, rolling, slots.iter().copied());
        assert_eq!(now(false, false, &[true, false]), Told::Starting);
        assert_eq!(now(false, false, &[false, true]), Told::Starting);
        assert_eq!(now(false, false, &[true, true]), Told::Ready);
        assert_eq!(now(false, true, &[true, true]), Told::Reloading);
        assert_eq!(now(true, true, &[true, false]), Told::Stopping);
    }
}

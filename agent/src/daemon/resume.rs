//! Edge autonomy, first part (issue #14): a worker keeps the last
//! assignment set it acted on in its store (sealed under its data key,
//! fsynced before it acts on the set), and a worker that starts with no
//! manager in reach runs from it: after [`RESUME_WAIT_MS`] with no session
//! to a manager, its last assigned tasks are started again in place (the
//! same task ids; see `worker`'s resume invariant), global services first,
//! from local images. Fresh assignments from a manager always win: they
//! replace the persisted set and end the resume.
//!
//! Persist before acting: a set that cannot be persisted (a full data dir)
//! is not acted on. The worker keeps running the set it last persisted,
//! logs why once, and persists the newest set it was sent as soon as the
//! store takes writes again ([`Daemon::retry_persist_assignments`]), then
//! acts on it.
//!
//! On-disk record: `local_blobs["assignments"]` (manager/src/schema.rs),
//! sealed with associated data [`AAD`]; inside, `Assignments::to_record`
//! (a version byte, then postcard). A record that
//! does not open or decode (another version, another data key) is logged
//! and ignored: the node then waits for a manager, as before.

use super::swarm::Mode;
use super::Daemon;
use shoal_shared::assignments::Assignments;

/// The record's key in `local_blobs`.
const ASSIGNMENTS_BLOB: &str = "assignments";
/// Associated data the record is sealed with.
const AAD: &[u8] = b"shoal local_blobs assignments v1";
/// How long a worker that starts with persisted assignments waits for a
/// manager's before it runs from them.
pub(crate) const RESUME_WAIT_MS: u64 = 3_000;

/// A worker's persisted assignments, waiting to be used or replaced.
#[derive(Default)]
pub(crate) struct Resume {
    persisted: Option<Assignments>,
    /// When (mono ms) the persisted set may be used.
    due_ms: u64,
    /// The worker plans from the persisted set now.
    pub(crate) active: bool,
    /// The record last written, to skip rewriting an unchanged set.
    last_record: Option<Vec<u8>>,
    /// The newest set a manager sent that could not be persisted (not acted on).
    pub(crate) unpersisted: Option<Assignments>,
}

impl Daemon {
    /// Keeps `a`, the assignment set a manager sent, for a restart with no
    /// manager in reach (sealed, fsynced), then acts on it; a set that
    /// cannot be persisted is not acted on (see the module header).
    pub(crate) fn persist_and_act(&mut self, a: Assignments) {
        let record = a.to_record();
        // Unchanged (a resend): no write, no fsync.
        if self.resume.last_record.as_deref() != Some(record.as_slice()) {
            let sealed = self.sealing.key.seal(AAD, &record);
            if let Err(e) = self.store.set_blob(ASSIGNMENTS_BLOB, &sealed) {
                if self.resume.unpersisted.is_none() {
                    crate::log!(
                        "ERROR",
                        "cannot persist this node's assignments ({e}): the new set of {} tasks is not acted on (persist before acting); \
                         this node keeps running the set it last persisted until it can",
                        a.tasks.len()
                    );
                }
                self.resume.unpersisted = Some(a);
                return;
            }
            self.resume.last_record = Some(record);
        }
        if self.resume.unpersisted.take().is_some() {
            crate::log!("INFO", "persisted this node's assignments again: acting on the {} tasks of the newest set", a.tasks.len());
        }
        if self.resume.active {
            crate::log!("INFO", "a manager answered: planning from its assignments again");
        }
        self.resume = Resume { last_record: self.resume.last_record.take(), ..Resume::default() };
        self.worker.set_resume(false);
        self.act_on_assignments(a);
    }

    /// Persists (and then acts on) the newest set that could not be
    /// persisted, once the store takes writes again.
    pub(crate) fn retry_persist_assignments(&mut self) {
        if self.store.halted().is_some() || self.swarm.mode != Mode::Worker {
            return;
        }
        if let Some(a) = self.resume.unpersisted.take() {
            self.resume.unpersisted = Some(a.clone());
            self.persist_and_act(a);
        }
    }

    /// Forgets the persisted set (this node leaves, or becomes a manager).
    pub(crate) fn forget_persisted_assignments(&mut self) {
        if let Err(e) = self.store.remove_blob(ASSIGNMENTS_BLOB) {
            crate::log!("ERROR", "cannot remove this node's persisted assignments: {e}");
        }
        self.resume = Resume::default();
        self.worker.set_resume(false);
    }

    /// At start: a worker reads the set it last acted on.
    pub(crate) fn load_persisted_assignments(&mut self) {
        if self.swarm.mode != Mode::Worker {
            return;
        }
        let sealed = match self.store.blob(ASSIGNMENTS_BLOB) {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                crate::log!("ERROR", "cannot read this node's persisted assignments: {e}");
                return;
            }
        };
        let decoded = self.sealing.key.open(AAD, &sealed).map_err(|e| e.to_string()).and_then(|b| Assignments::from_record(&b));
        match decoded {
            Ok(a) if a.node_id == self.node_id => {
                crate::log!(
                    "INFO",
                    "found the {} tasks last assigned to this node; they run again if no manager answers within {} s",
                    a.tasks.len(),
                    RESUME_WAIT_MS / 1000
                );
                self.resume = Resume { persisted: Some(a), due_ms: self.mono_ms() + RESUME_WAIT_MS, active: false, ..Resume::default() };
            }
            Ok(_) => crate::log!("WARN", "the persisted assignments are another node's; ignored"),
            Err(e) => crate::log!("WARN", "the persisted assignments do not open ({e}); waiting for a manager"),
        }
    }

    /// Runs from the persisted set once it is due and no manager has
    /// answered (no assignments, no session waiting for them).
    pub(crate) fn resume_if_due(&mut self) {
        if self.resume.persisted.is_none() || self.swarm.mode != Mode::Worker || self.swarm.assigned.is_some() {
            return;
        }
        if self.mono_ms() < self.resume.due_ms || self.swarm.session_waiting() {
            return;
        }
        let a = self.resume.persisted.take().expect("checked above");
        crate::log!(
            "WARN",
            "no manager answered within {} s of the start: running the {} tasks last assigned to this node from its data dir",
            RESUME_WAIT_MS / 1000,
            a.tasks.len()
        );
        self.swarm.assigned = Some(a);
        self.resume.active = true;
        self.worker.set_resume(true);
    }
}

//! Bugs a simulator can switch on, to show that its checkers catch them
//! (TigerBeetle's VOPR practice: a checker that never fires proves nothing).
//!
//! Owns the per-thread set of switched-on [`Bug`]s. Compiled only for tests
//! and the `sim` feature: the shipped binary has neither this module nor
//! the hooks that read it. Per thread, so parallel tests do not see each
//! other's bugs.

use std::cell::Cell;

/// One injectable bug. Each names the invariant it breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The scheduler places tasks on nodes that fail their constraints.
    IgnoreConstraints,
    /// A removed node's key is let in and given a session (admission and
    /// the dispatcher both forget to check the state).
    SessionsForStrangers,
    /// A new leader decides from its state before it holds every earlier
    /// commit (slots get a second task).
    DecideBeforeCaughtUp,
    /// The disk says a sync made writes durable when it did not (seven in
    /// eight: acknowledged writes are lost at a power cut).
    LyingDisk,
}

impl Bug {
    fn bit(self) -> u32 {
        match self {
            Bug::IgnoreConstraints => 1,
            Bug::SessionsForStrangers => 2,
            Bug::DecideBeforeCaughtUp => 4,
            Bug::LyingDisk => 8,
        }
    }
}

thread_local! {
    static ON: Cell<u32> = const { Cell::new(0) };
}

/// Switches exactly `bugs` on for this thread.
pub fn set(bugs: &[Bug]) {
    ON.with(|on| on.set(bugs.iter().fold(0, |acc, b| acc | b.bit())));
}

/// Whether `bug` is on for this thread.
pub fn on(bug: Bug) -> bool {
    ON.with(|on| on.get() & bug.bit() != 0)
}

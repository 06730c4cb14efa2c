//! The task state machine: states that only move forward.
//!
//! Follows swarmkit's `design/task_model.md`. `desired_state` is written only
//! by managers; the observed `status.state` only by the agent running the
//! task. Both move forward only, through [`TaskState::advance`]; the agent
//! asserts it before reporting and the manager's `apply` asserts it again
//! (a pair assertion), dropping any update that would go backwards.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A task's lifecycle state. The order of the variants is the order of the
/// lifecycle and is part of the on-disk and wire format: append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Ready,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

/// An attempt to move a task state backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task state cannot move backwards from {from} to {to}")]
pub struct Backwards {
    pub from: TaskState,
    pub to: TaskState,
}

impl TaskState {
    /// Moves to `to` if that is not backwards. Staying put is allowed.
    pub fn advance(self, to: TaskState) -> Result<TaskState, Backwards> {
        if to < self {
            return Err(Backwards { from: self, to });
        }
        Ok(to)
    }

    /// Past `Running`: the task's container is gone or going for good.
    pub fn is_terminal(self) -> bool {
        self > TaskState::Running
    }

    /// Swarm's capitalised name, as shown in `service ps`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "New",
            TaskState::Pending => "Pending",
            TaskState::Assigned => "Assigned",
            TaskState::Accepted => "Accepted",
            TaskState::Preparing => "Preparing",
            TaskState::Ready => "Ready",
            TaskState::Starting => "Starting",
            TaskState::Running => "Running",
            TaskState::Complete => "Complete",
            TaskState::Shutdown => "Shutdown",
            TaskState::Failed => "Failed",
            TaskState::Rejected => "Rejected",
            TaskState::Remove => "Remove",
            TaskState::Orphaned => "Orphaned",
        }
    }

    /// The lowercase form used in progress bars (`1/3: running`).
    pub fn as_lower(self) -> String {
        self.as_str().to_ascii_lowercase()
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::*;
    use super::*;

    #[test]
    fn states_only_move_forward() {
        assert_eq!(New.advance(Pending), Ok(Pending));
        assert_eq!(Running.advance(Running), Ok(Running));
        assert_eq!(Running.advance(Failed), Ok(Failed));
        assert_eq!(Running.advance(Starting), Err(Backwards { from: Running, to: Starting }));
        assert_eq!(Shutdown.advance(Running).unwrap_err().to_string(), "task state cannot move backwards from Shutdown to Running");
    }

    #[test]
    fn terminal_states() {
        assert!(!Running.is_terminal());
        assert!(Complete.is_terminal());
        assert!(Failed.is_terminal());
        assert!(!Ready.is_terminal());
    }
}

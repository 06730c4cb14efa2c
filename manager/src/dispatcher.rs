//! The dispatcher's decisions: what each node must run.
//!
//! [`assignments`] is the one function that turns the replicated state into
//! a node's [`Assignments`]: the leader sends them to workers, and a manager
//! builds its own worker's from its replica with the same function, so a
//! task runs the same way wherever it was placed. Pure: no I/O, no clock.

use crate::state::State;
use shoal_shared::assignments::Assignments;
use std::collections::BTreeSet;

/// Everything node `node_id` must run, per `state`.
pub fn assignments(state: &State, node_id: &str) -> Assignments {
    let tasks: Vec<_> = state.tasks.values().filter(|t| t.node_id == node_id).cloned().collect();
    let used: BTreeSet<&str> = tasks.iter().map(|t| t.service_id.as_str()).collect();
    let services: Vec<_> = used.iter().filter_map(|id| state.services.get(*id)).cloned().collect();
    Assignments::new(node_id, tasks, services)
}

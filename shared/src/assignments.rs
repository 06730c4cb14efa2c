//! [`Assignments`]: everything one node must run, and the only input the
//! worker plans from.
//!
//! The leader builds a node's assignments from the replicated state
//! (`shoal_manager::dispatcher::assignments`, one function for the local
//! worker and remote ones alike) and sends them to workers in
//! `Wire::Assignments`; a manager builds its own from its replica. The
//! worker never sees the manager's `State`.

use crate::types::{Service, Task};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The tasks bound to one node (history included: a task's log and
/// container are kept while its record is) and the services they belong to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Assignments {
    /// The node these are for.
    pub node_id: String,
    /// Every task whose `node_id` is this node, by task id.
    pub tasks: BTreeMap<String, Task>,
    /// The services of those tasks, by service id.
    pub services: BTreeMap<String, Service>,
}

impl Assignments {
    /// Assignments for `node_id` from its tasks and their services; tasks
    /// bound elsewhere and services without a task here are dropped, so the
    /// result never says more than the node must know.
    pub fn new(node_id: &str, tasks: impl IntoIterator<Item = Task>, services: impl IntoIterator<Item = Service>) -> Assignments {
        let tasks: BTreeMap<String, Task> = tasks.into_iter().filter(|t| t.node_id == node_id).map(|t| (t.id.clone(), t)).collect();
        let used: BTreeSet<&str> = tasks.values().map(|t| t.service_id.as_str()).collect();
        let services = services.into_iter().filter(|s| used.contains(s.id.as_str())).map(|s| (s.id.clone(), s)).collect();
        Assignments { node_id: node_id.to_string(), tasks, services }
    }

    /// The name of a service of these tasks ("" when unknown).
    pub fn service_name(&self, service_id: &str) -> &str {
        self.services.get(service_id).map(|s| s.spec.name.as_str()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskState;
    use crate::types::{ServiceSpec, TaskStatus};

    #[test]
    fn only_this_nodes_tasks_and_their_services() {
        let spec = ServiceSpec::new("web", "busybox");
        let svc =
            |id: &str| Service { id: id.into(), meta: Default::default(), spec: spec.clone(), previous_spec: None, update_status: None };
        let task = |id: &str, service: &str, node: &str| Task {
            id: id.into(),
            meta: Default::default(),
            service_id: service.into(),
            slot: 1,
            node_id: node.into(),
            spec: spec.task.clone(),
            service_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, 1, "assigned"),
            not_before: 0,
            attempt: 0,
        };
        let a = Assignments::new("n1", [task("t1", "s1", "n1"), task("t2", "s2", "n2")], [svc("s1"), svc("s2")]);
        assert_eq!(a.tasks.keys().collect::<Vec<_>>(), ["t1"]);
        assert_eq!(a.services.keys().collect::<Vec<_>>(), ["s1"]);
        assert_eq!(a.service_name("s1"), "web");
        assert_eq!(a.service_name("s2"), "");
    }
}

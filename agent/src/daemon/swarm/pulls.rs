//! The image pulls of tasks waiting for their image, for `service
//! create|update`'s progress (issue #16): each node reads its runtime's
//! progress of the pulls of its tasks that are not started yet about once
//! a second (`TASK_PULLS_REPORT_MS`) and sends it to the leader
//! (`Wire::TaskPulls`), which keeps it in memory for
//! `TASK_PULLS_KEPT_MS` and hands it out with `service ps`'s task list
//! (`Reply::Tasks::pulls`). Volatile by design: never replicated, lost with
//! the leader (a new one hears it within a second).
//!
//! Limits: `TASK_PULLS_MAX` tasks per report and `PULL_LAYERS_MAX` layers
//! per pull; the leader keeps at most `TASK_PULLS_HELD_MAX` tasks' pulls,
//! and only a node's own tasks'.

use crate::daemon::{Daemon, Event};
use shoal_shared::api::PullProgress;
use shoal_shared::task::TaskState;
use shoal_shared::types::Task;
use shoal_shared::wire::{Wire, PULL_LAYERS_MAX, TASK_PULLS_MAX};
use std::collections::BTreeMap;

/// How often a node reads and reports its tasks' pulls.
pub const TASK_PULLS_REPORT_MS: u64 = 1_000;
/// How long the leader keeps a report.
pub const TASK_PULLS_KEPT_MS: u64 = 5_000;
/// Tasks' pulls the leader keeps at most.
pub const TASK_PULLS_HELD_MAX: usize = 4_096;

/// The loop's memory of task pulls (part of [`super::Swarm`]).
#[derive(Default)]
pub(crate) struct TaskPulls {
    /// Leader: each task's pull as its node last reported it, with when (mono ms).
    heard: BTreeMap<String, (PullProgress, u64)>,
    /// When this node last read its own (mono ms), and whether a read runs.
    read_at_ms: u64,
    reading: bool,
}

impl Daemon {
    /// Forgets old reports; reads this node's pulls when due.
    pub(super) fn pulls_tick(&mut self, now_ms: u64) {
        self.swarm.pulls.heard.retain(|_, (_, at)| now_ms.saturating_sub(*at) < TASK_PULLS_KEPT_MS);
        if self.swarm.pulls.reading || now_ms.saturating_sub(self.swarm.pulls.read_at_ms) < TASK_PULLS_REPORT_MS {
            return;
        }
        let Some(a) = self.swarm.assigned_ref() else { return };
        // Tasks to run here that have not started: their image may be on its way.
        let waiting: Vec<(String, String)> = a
            .tasks
            .values()
            .filter(|t| t.node_id == self.node_id && t.desired_state == TaskState::Running)
            .filter(|t| (TaskState::Assigned..TaskState::Starting).contains(&t.status.state))
            .map(|t| (t.id.clone(), t.spec.container.image.clone()))
            .take(TASK_PULLS_MAX)
            .collect();
        if waiting.is_empty() {
            return;
        }
        self.swarm.pulls.reading = true;
        self.swarm.pulls.read_at_ms = now_ms;
        let rt = self.runtime.clone();
        self.io.read(Box::new(move || {
            let pulls = waiting
                .into_iter()
                .filter_map(|(task, image)| rt.pull_progress(&image).map(|p| (task, p)))
                .map(|(task, mut p)| {
                    p.layers.truncate(PULL_LAYERS_MAX);
                    (task, p)
                })
                .collect();
            Event::TaskPullsRead { pulls }
        }));
    }

    /// This node's pulls were read: kept here on the leader, sent to it otherwise.
    pub(crate) fn on_task_pulls_read(&mut self, pulls: Vec<(String, PullProgress)>) {
        self.swarm.pulls.reading = false;
        if pulls.is_empty() {
            return;
        }
        if self.leads() {
            let me = self.node_id.clone();
            self.take_task_pulls(&me, pulls);
        } else if let Some(conn) = self.leader_conn() {
            self.swarm.send(conn, &Wire::TaskPulls { pulls });
        }
    }

    /// A node's report (kept by the leader only).
    pub(super) fn on_task_pulls(&mut self, peer: &str, pulls: Vec<(String, PullProgress)>) {
        if self.leads() {
            self.take_task_pulls(peer, pulls);
        }
    }

    fn take_task_pulls(&mut self, node: &str, pulls: Vec<(String, PullProgress)>) {
        let now_ms = self.mono_ms();
        let state = self.store.state();
        for (task, mut p) in pulls.into_iter().take(TASK_PULLS_MAX) {
            // A node speaks for its own tasks only.
            if state.tasks.get(&task).is_none_or(|t| t.node_id != node) {
                continue;
            }
            let heard = &mut self.swarm.pulls.heard;
            if heard.len() >= TASK_PULLS_HELD_MAX && !heard.contains_key(&task) {
                continue;
            }
            p.layers.truncate(PULL_LAYERS_MAX);
            heard.insert(task, (p, now_ms));
        }
    }

    /// The pulls heard of `tasks` (for `Reply::Tasks`).
    pub(crate) fn task_pulls_of(&self, tasks: &[Task]) -> Vec<(String, PullProgress)> {
        tasks.iter().filter_map(|t| self.swarm.pulls.heard.get(&t.id).map(|(p, _)| (t.id.clone(), p.clone()))).collect()
    }
}

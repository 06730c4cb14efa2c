//! `service update`, `service rollback` and `node update` in the daemon.
//!
//! Kept apart from the event loop: validation and ops come from the pure
//! [`control`] functions; a changed image is resolved off the loop through
//! the same [`super::service::resolve_image`] as at creation (digest pinned,
//! `Placement.Platforms` refreshed), and the update is committed when the
//! answer comes back as [`Event::ResolvedUpdate`].

use super::router::Outcome;
use super::{service, Daemon, Event};
use async_channel::Sender;
use shoal_manager::control;
use shoal_shared::api::{ErrorKind, RegistryAuth, Reply};
use shoal_shared::ops::Op;
use shoal_shared::types::{Availability, ServiceSpec};

impl Daemon {
    /// Starts a `service update` (or rollback); answers now, after the
    /// commit, or (a new image) later, once the image is resolved.
    pub(super) fn service_update(
        &mut self,
        service: String,
        spec: Box<ServiceSpec>,
        rollback: bool,
        registry_auth: Option<RegistryAuth>,
        reply: &Sender<Reply>,
    ) -> Outcome {
        let now = self.now();
        if rollback {
            return self.write(control::rollback_service(self.store.state(), &service, now).map(|ops| (ops, updated(Vec::new()))));
        }
        // Validate first so bad input fails at once and changes nothing.
        if let Err(e) = control::update_service(self.store.state(), &service, (*spec).clone(), now) {
            return Outcome::Now(Reply::error(e.kind(), e.to_string()));
        }
        let old_image = self.store.state().find_service(&service).map(|s| s.spec.task.container.image.clone()).unwrap_or_default();
        if spec.task.container.image == old_image {
            return self.finish_update(service, Ok((spec, Vec::new())), registry_auth);
        }
        if let Err(e) = shoal_image::reference::Reference::parse(&spec.task.container.image) {
            return Outcome::Now(Reply::error(ErrorKind::InvalidArgument, e.to_string()));
        }
        let mut spec = spec;
        // A new image brings its own platforms.
        spec.task.placement.platforms.clear();
        let only_node = self.store.state().nodes.len() <= 1;
        let reply = reply.clone();
        let auth = registry_auth.as_ref().map(shoal_image::Credentials::from);
        self.spawn_runtime(
            move |rt| service::resolve_image(rt, spec, only_node, auth.as_ref()),
            move |result| Event::ResolvedUpdate { service, result, registry_auth, reply },
        );
        Outcome::Later
    }

    /// Commits an update once its image is resolved (re-validated: the state may have moved on).
    pub(super) fn finish_update(
        &mut self,
        service: String,
        result: Result<(Box<ServiceSpec>, Vec<String>), Box<Reply>>,
        registry_auth: Option<RegistryAuth>,
    ) -> Outcome {
        match result {
            Ok((spec, mut warnings)) => {
                let now = self.now();
                warnings.extend(service::network_warnings(&spec));
                let state = self.store.state();
                let id = state.find_service(&service).map(|s| s.id.clone()).unwrap_or_default();
                self.write(control::update_service(state, &service, *spec, now).map(|mut ops| {
                    if let Some(auth) = registry_auth {
                        ops.push(Op::SetRegistryAuth { service_id: id, auth: Some(auth) });
                    }
                    (ops, updated(warnings))
                }))
            }
            Err(r) => Outcome::Now(*r),
        }
    }

    /// `node update`.
    pub(super) fn node_update(
        &mut self,
        node: String,
        availability: Option<Availability>,
        label_add: Vec<(String, String)>,
        label_rm: Vec<String>,
    ) -> Outcome {
        let result = control::update_node(self.store.state(), &self.node_id, &node, availability, &label_add, &label_rm);
        self.write(result.map(|ops| (ops, Reply::Ok)))
    }
}

fn updated(warnings: Vec<String>) -> Reply {
    Reply::ServiceUpdated { warnings }
}

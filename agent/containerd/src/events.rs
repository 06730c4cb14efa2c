//! The exit-event feed: one `Events.Subscribe` stream per driver, filtered
//! to this namespace's `/tasks/exit` events, resubscribed with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use containerd_client::events::TaskExit;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::{PublishRequest, SubscribeRequest};
use containerd_client::types::Envelope;
use prost::Message;

use crate::rpc::{ts_nanos, Ctx};
use crate::{Driver, ExitEvent};

/// Topic of the probe event published to learn the subscription is live.
pub const PROBE_TOPIC: &str = "/shoal/probe";
/// Topic of task exits.
pub const EXIT_TOPIC: &str = "/tasks/exit";
/// First and largest delay between resubscriptions.
pub const RESUBSCRIBE_BACKOFF_MIN_MS: u64 = 100;
pub const RESUBSCRIBE_BACKOFF_MAX_MS: u64 = 5_000;
/// How long `connect` waits for the subscription to go live (not fatal).
pub const SUBSCRIBE_LIVE_WAIT_MS: u64 = 2_000;

fn filters(ns: &str) -> Vec<String> {
    vec![format!("namespace=={ns},topic==\"{EXIT_TOPIC}\""), format!("namespace=={ns},topic==\"{PROBE_TOPIC}\"")]
}

/// Starts the subscription loop and waits (bounded) until it is live.
pub(crate) fn start(driver: &Driver, tx: async_channel::Sender<ExitEvent>, live: Arc<AtomicBool>) {
    let ctx = driver.ctx().clone();
    driver.inner_handle().spawn(exit_loop(ctx, tx, live.clone()));
    let _ = driver.block("Events.Subscribe", SUBSCRIBE_LIVE_WAIT_MS, async move {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(SUBSCRIBE_LIVE_WAIT_MS);
        while !live.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    });
}

/// Publishes probes until the subscription sees one (or gives up after
/// [`SUBSCRIBE_LIVE_WAIT_MS`]): `Events.Subscribe` only answers with its
/// first event, and a seen probe proves later exits will be seen too.
async fn probe(ctx: Ctx, live: Arc<AtomicBool>) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SUBSCRIBE_LIVE_WAIT_MS);
    while !live.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
        let mut c = EventsClient::new(ctx.channel.clone());
        let req = PublishRequest {
            topic: PROBE_TOPIC.into(),
            event: Some(prost_types::Any { type_url: "types.shoal.io/probe".into(), value: Vec::new() }),
        };
        let _ = ctx.call("Events.Publish", c.publish(ctx.req(req, None))).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn exit_loop(ctx: Ctx, tx: async_channel::Sender<ExitEvent>, live: Arc<AtomicBool>) {
    let mut backoff_ms = RESUBSCRIBE_BACKOFF_MIN_MS;
    loop {
        live.store(false, Ordering::SeqCst);
        let prober = tokio::spawn(probe(ctx.clone(), live.clone()));
        let mut c = EventsClient::new(ctx.channel.clone());
        let req = ctx.req(SubscribeRequest { filters: filters(&ctx.ns) }, None);
        if let Ok(resp) = c.subscribe(req).await {
            let mut stream = resp.into_inner();
            while let Ok(Some(env)) = stream.message().await {
                backoff_ms = RESUBSCRIBE_BACKOFF_MIN_MS;
                if env.topic == PROBE_TOPIC {
                    live.store(true, Ordering::SeqCst);
                    continue;
                }
                if let Some(ev) = decode_exit(&env) {
                    // Full channel: drop; list() reconciliation catches up.
                    if let Err(async_channel::TrySendError::Closed(_)) = tx.try_send(ev) {
                        prober.abort();
                        return;
                    }
                }
            }
        }
        prober.abort();
        live.store(false, Ordering::SeqCst);
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
        backoff_ms = (backoff_ms * 2).min(RESUBSCRIBE_BACKOFF_MAX_MS);
    }
}

/// The exit of a container's init process, or `None` (exec processes,
/// other payloads).
fn decode_exit(env: &Envelope) -> Option<ExitEvent> {
    if env.topic != EXIT_TOPIC {
        return None;
    }
    let any = env.event.as_ref()?;
    if !any.type_url.ends_with("containerd.events.TaskExit") {
        return None;
    }
    let te = TaskExit::decode(any.value.as_slice()).ok()?;
    if !te.id.is_empty() && te.id != te.container_id {
        return None;
    }
    Some(ExitEvent { exited_unix_nanos: ts_nanos(&te.exited_at).unwrap_or(0), id: te.container_id, exit_code: te.exit_status as i32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_init_exits_only() {
        let mk = |id: &str| Envelope {
            timestamp: None,
            namespace: "n".into(),
            topic: EXIT_TOPIC.into(),
            event: Some(prost_types::Any {
                type_url: "containerd.events.TaskExit".into(),
                value: TaskExit {
                    container_id: "c".into(),
                    id: id.into(),
                    pid: 1,
                    exit_status: 3,
                    exited_at: Some(prost_types::Timestamp { seconds: 2, nanos: 5 }),
                }
                .encode_to_vec(),
            }),
        };
        assert_eq!(decode_exit(&mk("c")), Some(ExitEvent { id: "c".into(), exit_code: 3, exited_unix_nanos: 2_000_000_005 }));
        assert_eq!(decode_exit(&mk("exec1")), None);
        // Driver::exec's processes (health probes) are not the container's exit.
        assert_eq!(decode_exit(&mk(&format!("{}1-2-3", crate::EXEC_ID_PREFIX))), None);
        // An empty process id is taken as the init process.
        assert_eq!(decode_exit(&mk("")).map(|e| e.id), Some("c".to_string()));
    }
}

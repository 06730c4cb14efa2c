//! The seam between the resolver core and whatever moves datagrams: the
//! daemon's smol loop, a blocking thread, or a test. The shell owns the
//! sockets (one per listener in its task's namespace, one forwarding socket
//! in the host namespace) and a monotonic clock; after every input it calls
//! [`drain`], and it wakes for [`crate::resolver::Resolver::poll_timeout`].
//!
//! One loop step, in any runtime:
//!
//! ```text
//! datagram on listener L from A  -> resolver.handle_query(L, bytes, A, now_ms)
//! datagram on forwarding socket  -> resolver.handle_upstream_reply(from, bytes, now_ms)
//! clock passed poll_timeout()    -> resolver.handle_timeout(now_ms)
//! then                           -> drain(&mut resolver, &mut io)
//! ```
//!
//! Sends are fire-and-forget: a datagram that cannot be sent is lost, which
//! DNS clients and the core's deadlines already handle.

use std::net::SocketAddr;

use crate::resolver::{Effect, ListenerId, Resolver};

/// What the shell does for the core's effects.
pub trait Io {
    /// Sends a reply from listener `listener`'s socket to `to`.
    fn send_reply(&mut self, listener: ListenerId, to: SocketAddr, bytes: &[u8]);
    /// Sends a forwarded query to `upstream` from the forwarding socket.
    fn send_forward(&mut self, upstream: SocketAddr, bytes: &[u8]);
}

/// Executes every pending effect; returns how many.
pub fn drain(resolver: &mut Resolver, io: &mut impl Io) -> usize {
    let mut count = 0;
    while let Some(effect) = resolver.poll_effect() {
        match effect {
            Effect::Reply { listener, to, bytes } => io.send_reply(listener, to, &bytes),
            Effect::Forward { upstream, bytes, .. } => io.send_forward(upstream, &bytes),
        }
        count += 1;
    }
    count
}

//! Swarm's embedded DNS server (the resolver at 127.0.0.11:53 in every task's
//! network namespace), as a sans-IO core the daemon drives.
//!
//! - [`message`]: the DNS wire format (RFC 1035), decoded fallibly with
//!   bounded names, pointers and counts, encoded with or without name
//!   compression and truncated (TC) to the client's UDP size.
//! - [`view`]: what the node knows, per network: service names and aliases
//!   to VIPs (or task IPs with `--endpoint-mode dnsrr`), `tasks.NAME` to the
//!   running tasks' IPs, task names, and the reverse (PTR) names.
//! - [`resolver`]: the core. Queries in (`handle_query`), upstream replies in
//!   (`handle_upstream_reply`), deadlines in (`handle_timeout`); replies and
//!   forwards out as [`resolver::Effect`]s (`poll_effect`). No sockets, clocks
//!   or OS randomness: time is `now_ms`, randomness a seed.
//! - [`resolv_conf`]: the node's upstream resolvers from `/etc/resolv.conf`.
//! - [`shell`]: the seam the daemon implements ([`shell::Io`]) and the one
//!   loop step that executes effects ([`shell::drain`]).
//!
//! Behaviour follows Docker's embedded DNS (moby `libnetwork/resolver.go`):
//! local answers carry TTL 600, addresses are shuffled per answer, a name the
//! swarm does not know is forwarded (never answered NXDOMAIN locally), an
//! AAAA query for a swarm name without IPv6 addresses gets an empty NOERROR
//! answer, and an upstream that fails (SERVFAIL, REFUSED, non-authoritative
//! NXDOMAIN, silence) makes the query move on to the next upstream.
//!
//! How the daemon runs it (the shell, not in this crate):
//! - one UDP socket per task namespace bound to 127.0.0.11:53 (created with
//!   `setns` into the task's namespace; a socket keeps its namespace), each a
//!   [`resolver::ListenerId`] registered with the networks the task is
//!   attached to (`Resolver::set_listener`);
//! - forwards are sent from one UDP socket in the *host* namespace. This is
//!   required, not a shortcut: the node's resolvers are often on loopback
//!   (systemd-resolved's 127.0.0.53, a local dnsmasq), which a task's
//!   namespace cannot reach; Docker dials those from the host namespace too;
//! - the task's `/etc/resolv.conf` says `nameserver 127.0.0.11` and
//!   `options ndots:0` (as Docker writes it), so single-label names reach
//!   this resolver unchanged.
//!
//! TCP is not served: an answer that does not fit the client's UDP size has
//! TC set and as many whole records as fit.

pub mod message;
pub mod resolv_conf;
pub mod resolver;
pub mod shell;
pub mod view;

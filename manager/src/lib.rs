//! Shoal's manager role: the replicated log, the store it feeds, and the
//! cores that decide what should run where.

pub mod raft;

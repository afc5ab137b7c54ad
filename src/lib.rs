//! echo-reactor: a single-threaded, readiness-based event-loop server.
pub mod bench;

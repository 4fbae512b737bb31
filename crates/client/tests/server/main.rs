//! The client against a real `keyward` server process (no mocks): one
//! server per test, on a free loopback port, state in memory.

mod errors;
mod keyspace;
mod kit;
mod lease;
mod part2;
mod pool;
mod retry;

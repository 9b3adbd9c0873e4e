//! The cache's one integration-test binary, one module per topic. Some tests re-run this
//! binary as child processes (see `common::run_child`).

mod common;
mod concurrency;
mod corruption;
mod failures;
mod limits;
mod roundtrip;
mod security;

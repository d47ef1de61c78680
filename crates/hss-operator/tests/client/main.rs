//! Tier 1, no Kubernetes: the HSS client, the simulator, `submit` (its CI formats checked
//! against their published schemas) and the admin server, over real loopback HTTP (and the
//! property tests on hostile input). One test binary: `cargo test -p hss-operator --test client`.

mod admin;
mod affected;
mod ci_formats;
mod credential_sources;
mod fuzz;
mod key_guard;
mod over_http;
mod proxies;
mod simulator;
mod submit_cli;

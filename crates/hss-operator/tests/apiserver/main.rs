//! Tier 2, a real kube-apiserver: the operator's controllers, leader election, RBAC, claims,
//! tenants, findings, credential sources and the metrics server's auth, against the control plane this binary starts on
//! first use (`hss_testkit::cluster::control_plane`). Every test works in namespaces of its
//! own; `scripts/apiserver-tests.sh` runs this tier (and `install`, `chaos`) on another
//! kube-apiserver.

mod claims;
mod controller;
mod credentials;
mod findings;
mod leader;
mod lease;
mod metrics_auth;
mod rbac;
mod reports;
mod self_cluster;
mod slots;
mod tenant;
mod triggers;

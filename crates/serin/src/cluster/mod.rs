//! serin's own objects in a Kubernetes cluster: the `Rollout` custom
//! resource (`resource.rs`), its spec (the rollout file without `name`)
//! and the status a controller writes, and the CRD generated from them.
//! The resource's spec is checked by the rollout file's checks
//! ([`crate::spec::check_resource`]); nothing here talks to a cluster.

pub mod lease;
pub mod rbac;
pub mod resource;

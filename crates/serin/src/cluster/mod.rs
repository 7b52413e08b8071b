//! serin's own objects in a Kubernetes cluster: the `Rollout` custom
//! resource (`resource.rs`), its spec (the rollout file without `name`)
//! and the status a controller writes, and the CRD generated from them.
//! Operators' requests from the command line (`requests.rs`) are an
//! annotation on the Rollout and an answer in its status.
//! The resource's spec is checked by the rollout file's checks
//! ([`crate::spec::check_resource`]); nothing here talks to a cluster.

pub mod requests;
pub mod resource;

//! serin's own objects in a Kubernetes cluster: the `Rollout` custom
//! resource (`resource.rs`), its spec (the rollout file without `name`)
//! and the status a controller writes, and the CRD generated from them.
//! Operators' requests from the command line (`requests.rs`) are an
//! annotation on the Rollout and an answer in its status.
//! The resource's spec is checked by the rollout file's checks
//! ([`crate::spec::check_resource`]). `status.rs` is the Rollout's status
//! subresource as the durable store of a run (the driver's
//! [`crate::controller::seams::RolloutStore`]), with its Events;
//! `controller.rs` is `serin serve --kubernetes`: kube-runtime watches of
//! Rollouts and their Deployments, a driver per run, acting only while
//! `lease.rs` says this replica leads; `rbac.rs` lists every API call it
//! makes, which deploy/kubernetes/rbac.yaml grants. `view.rs` is every
//! replica's read-only view of the Rollouts, for the daemon's API,
//! dashboard and `/metrics`.

pub mod controller;
pub mod lease;
pub mod rbac;
pub mod requests;
pub mod resource;
pub mod status;
pub mod view;

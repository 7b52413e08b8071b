//! Prints the `Rollout` CRD generated from `serin::cluster::resource`, as
//! `deploy/kubernetes/crd.yaml` holds it (a test compares the two):
//! `cargo run -p serin --example crd > deploy/kubernetes/crd.yaml`.

fn main() {
    print!("{}", serin::cluster::resource::crd_yaml());
}

//! Leader election: of the replicas of `serin serve --kubernetes`, only the
//! one holding the coordination.k8s.io/v1 Lease `serin` acts.
//!
//! kube 5's kube-runtime has no lease elector, so this is the client-go
//! scheme, a get/replace loop in which every write carries the
//! resourceVersion it read (a 409 means someone else wrote; nothing is
//! ever overwritten):
//!
//! - A replica that does not lead reads the Lease every `retry_period`
//!   (2 s). It takes the Lease when nobody holds it, when it holds this
//!   process' own last write, or when the record has not changed for the holder's
//!   `leaseDurationSeconds` (15 s) *as measured on this replica's own
//!   monotonic clock from when it saw the record change*: no two clocks are
//!   ever compared, so a skewed wall clock cannot cut a lease short.
//! - The leader renews every `retry_period`. When no renewal has succeeded
//!   for `renew_deadline` (10 s) since the *start* of the last one that
//!   did, it stops leading at once, whatever its requests are doing.
//!   Another replica can only take over `lease_duration` after it *saw*
//!   that renewal, which is later than its start: the old leader has
//!   stopped at least `lease_duration - renew_deadline` (5 s) before
//!   anyone else may start.
//! - The holder identity alone never makes a Lease ours: a record naming
//!   this replica's identity counts as this process' only when its
//!   `renewTime` is one this process wrote. Any other (this container
//!   restarted, or a second process with the same `POD_NAME`) is another
//!   holder's, waited out for its lease duration; a leader whose renewal
//!   meets such a record (a 409, then a renewal it did not write) logs an
//!   error naming the identity and stops leading. Of two processes with
//!   one name, at most one leads.
//! - On shutdown the leader stops leading first, then releases the Lease
//!   (no holder, `leaseDurationSeconds: 1`) so a successor takes over at
//!   its next read instead of after 15 s.
//!
//! The controller reads [`Leadership::leading`], a watch that is `true`
//! exactly while this replica may act; it turns `false` on every way the
//! election ends (lost, not renewed in time, released, the task aborted
//! or panicking). Every transition is logged.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::Error;

/// The Lease's name.
pub const LEASE_NAME: &str = "serin";

/// Where a pod finds its own namespace (the service account's volume).
pub const IN_CLUSTER_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How the election is timed, and which Lease it uses and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's name (`serin`).
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's name in `holderIdentity`.
    pub identity: String,
    /// How long others wait, from when they saw the Lease last change,
    /// before taking it (written as `leaseDurationSeconds`: whole seconds).
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and the others read.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// 15 s, as client-go's controllers use.
    pub const LEASE_DURATION: Duration = Duration::from_secs(15);
    /// 10 s.
    pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
    /// 2 s.
    pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
    /// Another holder's `leaseDurationSeconds` is honoured up to this many
    /// times this process' own lease duration (60 s with the defaults): a
    /// Lease written with a huge duration by hand or by another program,
    /// whose holder never renews, is taken over after that bound instead of
    /// stopping every replica for as long as it says.
    pub const HONOURED_LEASE_FACTOR: u32 = 4;

    /// The longest lease this replica waits out without a change:
    /// [`LeaseSettings::HONOURED_LEASE_FACTOR`] times `lease_duration`.
    pub fn honoured_lease(&self) -> Duration {
        self.lease_duration
            .saturating_mul(LeaseSettings::HONOURED_LEASE_FACTOR)
    }

    /// The Lease `serin` with the default timings, in the namespace and
    /// under the identity this process is given ([`pick_namespace`],
    /// [`pick_identity`]).
    pub fn from_environment(client: &kube::Client) -> LeaseSettings {
        let file = std::fs::read_to_string(IN_CLUSTER_NAMESPACE).ok();
        LeaseSettings::with_defaults(
            pick_namespace(
                std::env::var("POD_NAMESPACE").ok().as_deref(),
                file.as_deref(),
                client.default_namespace(),
            ),
            own_identity(),
        )
    }

    /// The Lease `serin` in `namespace` held as `identity`, default timings.
    pub fn with_defaults(namespace: String, identity: String) -> LeaseSettings {
        LeaseSettings {
            name: LEASE_NAME.to_string(),
            namespace,
            identity,
            lease_duration: LeaseSettings::LEASE_DURATION,
            renew_deadline: LeaseSettings::RENEW_DEADLINE,
            retry_period: LeaseSettings::RETRY_PERIOD,
        }
    }

    /// The timings are safe: `retry_period < renew_deadline <
    /// lease_duration`, the lease a whole number of seconds; names given.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::invalid(format!("leader election: {what}")));
        if self.name.is_empty() || self.namespace.is_empty() || self.identity.is_empty() {
            return bad("the Lease's name, namespace and holder identity must not be empty");
        }
        if self.lease_duration.subsec_nanos() != 0
            || self.lease_duration.is_zero()
            || i32::try_from(self.lease_duration.as_secs()).is_err()
        {
            return bad(&format!(
                "the lease duration must be a whole number of seconds (leaseDurationSeconds), not {:?}",
                self.lease_duration
            ));
        }
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return bad(&format!(
                "expected retry period < renew deadline < lease duration, got {:?} / {:?} / {:?}",
                self.retry_period, self.renew_deadline, self.lease_duration
            ));
        }
        Ok(())
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn place(&self) -> String {
        format!("lease {}/{}", self.namespace, self.name)
    }
}

/// The Lease's namespace: `$POD_NAMESPACE` (the Downward API), else the
/// in-cluster service account's namespace file, else the kubeconfig
/// context's namespace (the client's default). Blank values do not count.
pub fn pick_namespace(
    pod_namespace: Option<&str>,
    in_cluster: Option<&str>,
    kubeconfig: &str,
) -> String {
    [pod_namespace, in_cluster]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or(kubeconfig)
        .to_string()
}

/// This machine's host name, if it can be read.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// This process' identity ([`pick_identity`] from `$POD_NAME`, the host
/// name and the process id): the Lease's holder, Events'
/// reportingInstance, the status' writer.
pub fn own_identity() -> String {
    pick_identity(
        std::env::var("POD_NAME").ok().as_deref(),
        hostname().as_deref(),
        std::process::id(),
    )
}

/// The holder identity: `$POD_NAME`, else `HOSTNAME-PID`.
pub fn pick_identity(pod_name: Option<&str>, hostname: Option<&str>, pid: u32) -> String {
    if let Some(pod) = pod_name.map(str::trim).filter(|s| !s.is_empty()) {
        return pod.to_string();
    }
    let host = hostname
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("serin");
    format!("{host}-{pid}")
}

/// Who holds a Lease record, as this replica judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    /// Nobody (never held, or released).
    Free,
    /// This process: the record is one it wrote (its identity and a
    /// renewTime it wrote), so no one else has written since.
    Me,
    /// Another replica, which may hold it until `until` on this replica's
    /// clock unless the record changes before. `twin`: it holds it under
    /// this replica's own identity, in a record this process did not write
    /// (this container restarted, or another process runs under the same
    /// name): never taken as ours, it is waited out as any other holder.
    Other {
        holder: String,
        until: Instant,
        twin: bool,
    },
}

/// The renewTimes this process wrote (or tried to) under its identity,
/// the newest few: a Lease record naming this identity is this process'
/// own only when its renewTime is one of them.
#[derive(Debug, Default, Clone)]
struct Written(std::collections::VecDeque<MicroTime>);

impl Written {
    /// How many are kept: more than the writes that can be on their way.
    const KEEP: usize = 16;

    fn note(&mut self, spec: &LeaseSpec) {
        if let Some(t) = &spec.renew_time {
            if self.0.len() == Written::KEEP {
                self.0.pop_front();
            }
            self.0.push_back(t.clone());
        }
    }

    /// Whether `spec` is a record this process wrote as `me`.
    fn mine(&self, spec: &LeaseSpec, me: &str) -> bool {
        spec.holder_identity.as_deref() == Some(me)
            && spec.renew_time.as_ref().is_some_and(|t| self.0.contains(t))
    }
}

/// The record as this replica last read it, and when (on its monotonic
/// clock) it saw the record change last.
#[derive(Debug, Clone)]
struct Observed {
    spec: LeaseSpec,
    since: Instant,
}

impl Observed {
    /// What is known after reading `spec` at `now`: the time runs from
    /// `now` only if the record differs from the one seen before.
    fn after(previous: Option<Observed>, spec: LeaseSpec, now: Instant) -> Observed {
        match previous {
            Some(p) if p.spec == spec => p,
            _ => Observed { spec, since: now },
        }
    }

    /// The holder's lease as written (`leaseDurationSeconds`), `default`
    /// when missing or not positive.
    fn written_duration(&self, default: Duration) -> Duration {
        self.spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(default, Duration::from_secs)
    }

    /// Who holds the record; another holder's lease runs for its written
    /// duration, at most `cap` ([`LeaseSettings::honoured_lease`]).
    fn holder(&self, me: &str, written: &Written, default: Duration, cap: Duration) -> Holder {
        match self.spec.holder_identity.as_deref() {
            None | Some("") => Holder::Free,
            Some(h) if h == me && written.mine(&self.spec, me) => Holder::Me,
            Some(h) => {
                let duration = self.written_duration(default).min(cap);
                Holder::Other {
                    holder: h.to_string(),
                    until: self.since + duration,
                    twin: h == me,
                }
            }
        }
    }
}

/// The record that makes `me` the holder, renewed at `now`.
fn claimed(before: &LeaseSpec, me: &str, lease_seconds: i32, now: Timestamp) -> LeaseSpec {
    let mut spec = before.clone();
    if before.holder_identity.as_deref() != Some(me) {
        spec.acquire_time = Some(MicroTime(now));
        // As client-go counts: 0 for a new Lease, one more per change of
        // holder (taking a released Lease included).
        spec.lease_transitions = Some(before.lease_transitions.map_or(0, |n| n.saturating_add(1)));
    }
    spec.holder_identity = Some(me.to_string());
    spec.lease_duration_seconds = Some(lease_seconds);
    spec.renew_time = Some(MicroTime(now));
    spec
}

/// The record after a clean release: no holder, expired in one second.
fn released(before: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    let mut spec = before.clone();
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(now));
    spec
}

/// Whether an API error is a 409: someone else wrote first.
fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn wall_now() -> Timestamp {
    let ms = i64::try_from(crate::time::now().0).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The watch the controller gates on, and the guard that turns it off
/// whenever the election stops (a guard, so an aborted or panicking task
/// turns it off too).
struct Flag {
    tx: watch::Sender<bool>,
    place: String,
    identity: String,
}

impl Flag {
    fn lead(&self, how: &str) {
        if !*self.tx.borrow() {
            tracing::info!("{}: {} now leads ({how})", self.place, self.identity);
            self.tx.send_replace(true);
        }
    }

    fn step_down(&self, why: &str) {
        if *self.tx.borrow() {
            self.tx.send_replace(false);
            tracing::warn!("{}: {} stops leading: {why}", self.place, self.identity);
        }
    }
}

impl Drop for Flag {
    fn drop(&mut self) {
        self.step_down("the leader election ended");
        tracing::info!("{}: leader election of {} ended", self.place, self.identity);
    }
}

/// Where this replica stands.
enum Role {
    Following(Option<Observed>),
    /// Holding the Lease as written by its last successful write (with the
    /// resourceVersion the next write needs), renewed by the request that
    /// started at `renewed`.
    Leading {
        lease: Box<Lease>,
        renewed: Instant,
    },
}

/// What a leader's renewal found.
enum Renewal {
    Renewed(Box<Lease>),
    Lost(String),
}

/// One attempt to read and maybe claim the Lease; `Some` when it is ours.
struct Claim {
    lease: Lease,
    how: String,
}

/// The election loop of one replica.
struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    flag: Flag,
    /// The last error logged, so a failing API is logged once per change.
    last_error: Option<String>,
    /// When a follower should read again before its next turn: the moment
    /// the holder's lease runs out, as last seen.
    wake: Option<Instant>,
    /// The records this process wrote: what makes a Lease naming its
    /// identity its own.
    written: Written,
    /// Whether the "two processes run with the same POD_NAME" error was
    /// logged for the twin renewing now: once per episode, not per read.
    twin_reported: bool,
}

impl Elector {
    fn failed(&mut self, what: &str, e: &dyn std::fmt::Display) {
        let message = format!("{what}: {e}");
        if self.last_error.as_deref() != Some(&message) {
            tracing::warn!("{}: {message}", self.settings.place());
            self.last_error = Some(message);
        }
    }

    fn answered(&mut self) {
        if self.last_error.take().is_some() {
            tracing::info!("{}: the API server answers again", self.settings.place());
        }
    }

    /// One turn: an attempt (bounded), then the wait until the next.
    async fn turn(&mut self, role: &mut Role) {
        let s = self.settings.clone();
        let next = Instant::now() + s.retry_period;
        match role {
            Role::Following(observed) => {
                let attempt =
                    tokio::time::timeout(s.renew_deadline, self.try_acquire(observed)).await;
                match attempt {
                    Ok(Ok(Some((claim, started)))) => {
                        *role = Role::Leading {
                            lease: Box::new(claim.lease),
                            renewed: started,
                        };
                        self.flag.lead(&claim.how);
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => self.failed("reading or claiming the Lease", &e),
                    Err(_) => self.failed(
                        "reading or claiming the Lease",
                        &format!("no answer within {:?}", s.renew_deadline),
                    ),
                }
                let wake = self.wake.take().map_or(next, |w| w.max(Instant::now()));
                tokio::time::sleep_until(next.min(wake)).await;
            }
            Role::Leading { lease, renewed } => {
                let deadline = *renewed + s.renew_deadline;
                let started = Instant::now();
                if started >= deadline {
                    return self.not_renewed(role);
                }
                let result = tokio::time::timeout_at(deadline, self.renew(lease)).await;
                match result {
                    Ok(Ok(Renewal::Renewed(new))) => {
                        self.answered();
                        if let Role::Leading { lease, renewed } = role {
                            *lease = new;
                            *renewed = started;
                        }
                    }
                    Ok(Ok(Renewal::Lost(holder))) => {
                        self.flag
                            .step_down(&format!("the Lease is now held by {holder}"));
                        *role = Role::Following(None);
                        return tokio::time::sleep_until(next).await;
                    }
                    Ok(Err(e)) => self.failed("renewing the Lease", &e),
                    Err(_) => return self.not_renewed(role),
                }
                if let Role::Leading { renewed, .. } = role {
                    let deadline = *renewed + s.renew_deadline;
                    tokio::time::sleep_until(next.min(deadline)).await;
                }
            }
        }
    }

    fn not_renewed(&mut self, role: &mut Role) {
        self.flag.step_down(&format!(
            "no renewal succeeded within the renew deadline ({:?}); another replica may take \
             the Lease {:?} after it last saw it change",
            self.settings.renew_deadline, self.settings.lease_duration
        ));
        *role = Role::Following(None);
    }

    /// Reads the Lease and claims it if it is free, ours, or expired as
    /// this replica has watched it. `Some` with the instant the winning
    /// write started.
    async fn try_acquire(
        &mut self,
        observed: &mut Option<Observed>,
    ) -> Result<Option<(Claim, Instant)>, kube::Error> {
        let s = self.settings.clone();
        let read = self.api.get_opt(&s.name).await?;
        // When the answer came, not when the request left: a renewal
        // written while the read was on its way must count from no earlier
        // than its own start (the writer's deadline runs from there).
        let now = Instant::now();
        let Some(current) = read else {
            let spec = claimed(
                &LeaseSpec::default(),
                &s.identity,
                s.lease_seconds(),
                wall_now(),
            );
            self.written.note(&spec);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            let started = Instant::now();
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(lease) => {
                    self.answered();
                    Ok(Some((
                        Claim {
                            lease,
                            how: "created the Lease".to_string(),
                        },
                        started,
                    )))
                }
                Err(e) if is_conflict(&e) => {
                    tracing::info!("{}: another replica created the Lease first", s.place());
                    Ok(None)
                }
                Err(e) => Err(e),
            };
        };
        self.answered();
        let spec = current.spec.clone().unwrap_or_default();
        let before = observed.clone();
        let seen = Observed::after(observed.take(), spec.clone(), now);
        let cap = s.honoured_lease();
        let holder = seen.holder(&s.identity, &self.written, s.lease_duration, cap);
        let capped = seen.written_duration(s.lease_duration) > cap;
        let new_record = before.as_ref().is_none_or(|o| o.spec != spec);
        *observed = Some(seen);
        if !matches!(&holder, Holder::Other { twin: true, .. }) {
            self.twin_reported = false;
        }
        if let (Holder::Other { holder: h, .. }, true, true) = (&holder, capped, new_record) {
            tracing::warn!(
                "{}: held by {h} with leaseDurationSeconds {} (renewTime {}), longer than this \
                 replica honours ({cap:?}, {} times its own lease): taken over if the record \
                 does not change for {cap:?}",
                s.place(),
                spec.lease_duration_seconds.unwrap_or_default(),
                spec.renew_time
                    .as_ref()
                    .map_or_else(|| "none".to_string(), |t| t.0.to_string()),
                LeaseSettings::HONOURED_LEASE_FACTOR,
            );
        }
        let how = match &holder {
            Holder::Free => "the Lease was free".to_string(),
            Holder::Me => "the Lease still held this process' own last write".to_string(),
            Holder::Other { holder, until, .. } if *until <= now && capped => format!(
                "{holder} did not renew the Lease within {cap:?} (its leaseDurationSeconds {} \
                 is more than this replica honours)",
                spec.lease_duration_seconds.unwrap_or_default()
            ),
            Holder::Other { holder, until, .. } if *until <= now => format!(
                "{holder} did not renew the Lease within {}s",
                spec.lease_duration_seconds.unwrap_or_default()
            ),
            Holder::Other {
                holder: h,
                until,
                twin,
            } => {
                let was = before
                    .as_ref()
                    .map(|o| o.holder(&s.identity, &self.written, s.lease_duration, cap));
                let same = matches!(&was, Some(Holder::Other { holder, .. }) if holder == h);
                let renewed = before.as_ref().is_some_and(|o| o.spec != spec);
                if *twin && same && renewed && !self.twin_reported {
                    self.twin_reported = true;
                    tracing::error!(
                        "{}: another process holds the Lease under this replica's own identity {h} \
                         (it renewed it; this process did not): two processes run with the same \
                         POD_NAME. This one does not lead while the other does; give each replica \
                         its own name",
                        s.place()
                    );
                } else if *twin && !same {
                    tracing::warn!(
                        "{}: the Lease names this replica's identity {h}, but this process did not \
                         write it (a restarted container, or another process with the same name): \
                         it is taken only once it has not changed for its lease duration",
                        s.place()
                    );
                } else if !same {
                    tracing::info!("{}: held by {h}; this replica follows", s.place());
                }
                // Read again when it would expire, not at the next 2 s tick
                // after: a takeover 15 s after the last change seen, not 16.
                self.wake = Some(*until);
                return Ok(None);
            }
        };
        let mut lease = current;
        let next = claimed(&spec, &s.identity, s.lease_seconds(), wall_now());
        self.written.note(&next);
        lease.spec = Some(next);
        let started = Instant::now();
        match self
            .api
            .replace(&s.name, &PostParams::default(), &lease)
            .await
        {
            Ok(lease) => Ok(Some((Claim { lease, how }, started))),
            Err(e) if is_conflict(&e) => {
                tracing::info!(
                    "{}: another replica wrote the Lease first (409); reading it again",
                    s.place()
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Renews the Lease from the object the last write returned. A 409
    /// means someone else wrote: read again; a record this process wrote
    /// (a renewal whose answer was lost) → renew from that (at most twice);
    /// another holder → lost; this replica's identity in a record it did
    /// not write → another process runs under the same name: lost, said as
    /// an error.
    async fn renew(&mut self, lease: &Lease) -> Result<Renewal, kube::Error> {
        let s = self.settings.clone();
        let mut base = lease.clone();
        for _ in 0..3 {
            let mut next = base.clone();
            let spec = base.spec.clone().unwrap_or_default();
            let renewed = claimed(&spec, &s.identity, s.lease_seconds(), wall_now());
            self.written.note(&renewed);
            next.spec = Some(renewed);
            match self
                .api
                .replace(&s.name, &PostParams::default(), &next)
                .await
            {
                Ok(written) => return Ok(Renewal::Renewed(Box::new(written))),
                Err(e) if is_conflict(&e) => {}
                Err(e) if is_not_found(&e) => {
                    return Ok(Renewal::Lost("nobody (the Lease was deleted)".to_string()));
                }
                Err(e) => return Err(e),
            }
            let Some(now) = self.api.get_opt(&s.name).await? else {
                return Ok(Renewal::Lost("nobody (the Lease was deleted)".to_string()));
            };
            let holder = now.spec.as_ref().and_then(|s| s.holder_identity.clone());
            if holder.as_deref() != Some(&s.identity) {
                return Ok(Renewal::Lost(
                    holder.unwrap_or_else(|| "nobody".to_string()),
                ));
            }
            let current = now.spec.clone().unwrap_or_default();
            if !self.written.mine(&current, &s.identity) {
                tracing::error!(
                    "{}: another process renewed the Lease under this replica's own identity {} \
                     (resourceVersion {}, renewTime {}: not written by this process): two processes \
                     run with the same POD_NAME. This one stops leading; give each replica its own name",
                    s.place(),
                    s.identity,
                    now.metadata.resource_version.as_deref().unwrap_or("?"),
                    current
                        .renew_time
                        .as_ref()
                        .map_or_else(|| "?".to_string(), |t| t.0.to_string()),
                );
                return Ok(Renewal::Lost(format!(
                    "another process with this replica's identity {}",
                    s.identity
                )));
            }
            base = now;
        }
        Ok(Renewal::Lost(
            "nobody: the Lease kept changing under this replica's renewals".to_string(),
        ))
    }

    /// Writes the release of `lease` (if it is still ours).
    async fn release(&self, lease: Lease) -> Result<(), Error> {
        let s = &self.settings;
        let failed =
            |e: kube::Error| Error::unavailable(format!("{}: releasing the Lease: {e}", s.place()));
        let mut base = lease;
        for _ in 0..3 {
            let mut next = base.clone();
            next.spec = Some(released(&base.spec.clone().unwrap_or_default(), wall_now()));
            match self
                .api
                .replace(&s.name, &PostParams::default(), &next)
                .await
            {
                Ok(_) => {
                    tracing::info!("{}: {} released the Lease", s.place(), s.identity);
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => {}
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(failed(e)),
            }
            let Some(now) = self.api.get_opt(&s.name).await.map_err(failed)? else {
                return Ok(());
            };
            if now.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(&s.identity) {
                return Ok(());
            }
            base = now;
        }
        Err(Error::unavailable(format!(
            "{}: releasing the Lease: it kept changing",
            s.place()
        )))
    }

    /// Runs until `stop`; then stops leading and releases the Lease.
    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Result<(), Error> {
        tracing::info!(
            "{}: {} joins the leader election (lease {:?}, renew deadline {:?}, retry {:?})",
            self.settings.place(),
            self.settings.identity,
            self.settings.lease_duration,
            self.settings.renew_deadline,
            self.settings.retry_period
        );
        let mut role = Role::Following(None);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                () = self.turn(&mut role) => {}
            }
        }
        self.flag.step_down("shutting down; releasing the Lease");
        match role {
            Role::Leading { lease, .. } => {
                let limit = self.settings.renew_deadline;
                match tokio::time::timeout(limit, self.release(*lease)).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::unavailable(format!(
                        "{}: releasing the Lease: no answer within {limit:?}; others take \
                         over when it expires",
                        self.settings.place()
                    ))),
                }
            }
            Role::Following(_) => Ok(()),
        }
    }
}

/// This replica's part in the election, running in a task of its own.
/// Dropping it without [`Leadership::release`] aborts the task without
/// releasing (as a crash would: others take over when the Lease expires).
pub struct Leadership {
    leading: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
    settings: LeaseSettings,
}

impl Leadership {
    /// Joins the election (in a task on the current tokio runtime). Fails
    /// only on settings that are not safe ([`LeaseSettings::check`]).
    pub fn start(client: kube::Client, settings: LeaseSettings) -> Result<Leadership, Error> {
        settings.check()?;
        let (tx, leading) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        let elector = Elector {
            api: Api::namespaced(client, &settings.namespace),
            flag: Flag {
                tx,
                place: settings.place(),
                identity: settings.identity.clone(),
            },
            settings: settings.clone(),
            last_error: None,
            wake: None,
            written: Written::default(),
            twin_reported: false,
        };
        let task = tokio::spawn(elector.run(stopped));
        Ok(Leadership {
            leading,
            stop: Some(stop),
            task: Some(task),
            settings,
        })
    }

    /// `true` exactly while this replica leads; changes are sent at once.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Whether this replica leads now.
    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// The settings it runs with (namespace, identity, timings).
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Stops leading (the watch turns `false` first), then, if this replica
    /// held the Lease, releases it so a successor takes over at once. Call
    /// it after the controller has stopped acting.
    pub async fn release(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(result) => result,
            Err(e) => Err(Error::new(
                crate::error::Kind::Internal,
                format!(
                    "{}: the leader election task failed: {e}",
                    self.settings.place()
                ),
            )),
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API server holding one Lease in memory, with resourceVersion
    /// preconditions; while `answering` is false it holds every request
    /// without an answer. Records when (virtual time) it answered each PUT.
    #[derive(Default)]
    struct Server {
        lease: Option<serde_json::Value>,
        rv: u64,
        answering: bool,
        puts: Vec<(Instant, u16)>,
        /// How long a GET is held before its answer is made.
        get_delay: Duration,
    }

    type Shared = std::sync::Arc<std::sync::Mutex<Server>>;

    fn status(code: u16, reason: &str) -> serde_json::Value {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "code": code, "reason": reason, "message": reason})
    }

    impl Server {
        fn answer(&mut self, method: &str, body: &[u8]) -> (u16, serde_json::Value) {
            match method {
                "GET" => match &self.lease {
                    Some(l) => (200, l.clone()),
                    None => (404, status(404, "NotFound")),
                },
                "POST" if self.lease.is_some() => (409, status(409, "AlreadyExists")),
                "POST" | "PUT" => {
                    let mut l: serde_json::Value = serde_json::from_slice(body).unwrap();
                    if method == "PUT" {
                        let current = self
                            .lease
                            .as_ref()
                            .map(|c| c["metadata"]["resourceVersion"].clone());
                        if current != Some(l["metadata"]["resourceVersion"].clone()) {
                            self.puts.push((Instant::now(), 409));
                            return (409, status(409, "Conflict"));
                        }
                        self.puts.push((Instant::now(), 200));
                    }
                    self.rv += 1;
                    l["metadata"]["resourceVersion"] = self.rv.to_string().into();
                    self.lease = Some(l.clone());
                    (if method == "POST" { 201 } else { 200 }, l)
                }
                _ => (405, status(405, "MethodNotAllowed")),
            }
        }

        /// Another writer's record: `holder`, renewed now.
        fn write_as(&mut self, holder: &str) {
            self.rv += 1;
            let mut l = self.lease.clone().unwrap_or_else(|| {
                serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "serin", "namespace": "ns"}, "spec": {}})
            });
            l["metadata"]["resourceVersion"] = self.rv.to_string().into();
            l["spec"]["holderIdentity"] = holder.into();
            l["spec"]["leaseDurationSeconds"] = 15.into();
            l["spec"]["renewTime"] = format!("2026-01-01T00:00:{:02}.000000Z", self.rv % 60).into();
            self.lease = Some(l);
        }
    }

    fn client(server: Shared) -> kube::Client {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            let mut handle = std::pin::pin!(handle);
            let mut held = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let delay = server.lock().unwrap().get_delay;
                if parts.method == http::Method::GET && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let mut s = server.lock().unwrap();
                if !s.answering {
                    held.push(send);
                    continue;
                }
                let (code, answer) = s.answer(parts.method.as_str(), &bytes);
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        kube::Client::new(service, "ns")
    }

    async fn until_leading(rx: &mut watch::Receiver<bool>, want: bool) -> Instant {
        let limit = Instant::now() + Duration::from_secs(120);
        while *rx.borrow_and_update() != want {
            tokio::time::timeout_at(limit, rx.changed())
                .await
                .expect("in time")
                .expect("the election runs");
        }
        Instant::now()
    }

    fn shared(answering: bool) -> Shared {
        std::sync::Arc::new(std::sync::Mutex::new(Server {
            answering,
            ..Server::default()
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_cut_off_steps_down_exactly_at_the_renew_deadline() {
        let server = shared(true);
        let l = Leadership::start(
            client(server.clone()),
            LeaseSettings::with_defaults("ns".into(), "me".into()),
        )
        .unwrap();
        let mut rx = l.leading();
        until_leading(&mut rx, true).await;
        // Renewals every 2 s, then the API server stops answering.
        tokio::time::sleep(Duration::from_secs(7)).await;
        let last = {
            let mut s = server.lock().unwrap();
            s.answering = false;
            let puts = s.puts.clone();
            assert!(
                puts.len() >= 3 && puts.iter().all(|p| p.1 == 200),
                "{puts:?}"
            );
            puts.last().unwrap().0
        };
        let down = until_leading(&mut rx, false).await;
        // Requests take no virtual time here: the last renewal started when
        // it was answered, and the leader stops 10 s after, to the
        // millisecond — 5 s before another replica could take the Lease.
        assert_eq!(down - last, LeaseSettings::RENEW_DEADLINE);
        drop(l);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_takes_an_unrenewed_lease_after_the_lease_duration_from_its_last_change() {
        let server = shared(true);
        server.lock().unwrap().write_as("other");
        let start = Instant::now();
        let l = Leadership::start(
            client(server.clone()),
            LeaseSettings::with_defaults("ns".into(), "me".into()),
        )
        .unwrap();
        let mut rx = l.leading();
        // The holder renews once, 9 s in: the wait starts again from the
        // read that saw it (at most one 2 s read interval later).
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!*rx.borrow());
        server.lock().unwrap().write_as("other");
        let renewed = Instant::now();
        let took = until_leading(&mut rx, true).await;
        assert!(
            took >= renewed + LeaseSettings::LEASE_DURATION,
            "{:?}",
            took - renewed
        );
        assert!(
            took <= renewed + LeaseSettings::LEASE_DURATION + 2 * LeaseSettings::RETRY_PERIOD,
            "{:?}",
            took - renewed
        );
        // Reads come every 2 s from the start (virtual time): the renewal at
        // 9 s is seen at 10 s, so 25 s is the earliest legal takeover, and
        // a read made for that moment takes it.
        assert_eq!(took - start, Duration::from_secs(25));
        let lease = server.lock().unwrap().lease.clone().unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], "me");
        drop(l);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_made_while_a_read_was_on_its_way_counts_from_the_answer() {
        let server = shared(true);
        server.lock().unwrap().write_as("other");
        let start = Instant::now();
        let l = Leadership::start(
            client(server.clone()),
            LeaseSettings::with_defaults("ns".into(), "me".into()),
        )
        .unwrap();
        let mut rx = l.leading();
        // The read at 2 s is answered at 6 s; the holder renews at 3 s,
        // while it is on its way.
        tokio::time::sleep(Duration::from_secs(1)).await;
        server.lock().unwrap().get_delay = Duration::from_secs(4);
        tokio::time::sleep(Duration::from_secs(2)).await;
        {
            let mut s = server.lock().unwrap();
            s.write_as("other");
            s.get_delay = Duration::ZERO;
        }
        let renewed = Instant::now();
        let took = until_leading(&mut rx, true).await;
        assert!(
            took >= renewed + LeaseSettings::LEASE_DURATION,
            "{:?}",
            took - start
        );
        assert_eq!(
            took - start,
            Duration::from_secs(21),
            "15 s from the answer at 6 s"
        );
        drop(l);
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_renewal_meets_another_holder_steps_down_and_never_overwrites_it() {
        let server = shared(true);
        let l = Leadership::start(
            client(server.clone()),
            LeaseSettings::with_defaults("ns".into(), "me".into()),
        )
        .unwrap();
        let mut rx = l.leading();
        until_leading(&mut rx, true).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Someone else writes the Lease (a 409 for the next renewal).
        server.lock().unwrap().write_as("intruder");
        let written = Instant::now();
        let down = until_leading(&mut rx, false).await;
        assert!(down - written <= LeaseSettings::RETRY_PERIOD);
        let s = server.lock().unwrap();
        assert_eq!(
            s.lease.as_ref().unwrap()["spec"]["holderIdentity"],
            "intruder"
        );
        assert_eq!(s.puts.last().map(|p| p.1), Some(409));
        drop(s);
        drop(l);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_under_this_identity_not_written_by_this_process_is_waited_out_and_a_twin_renewal_ends_the_lead()
     {
        // A record naming "me" that this process never wrote (a container
        // restarted under the same name): waited out for the lease, not
        // taken at once.
        let server = shared(true);
        server.lock().unwrap().write_as("me");
        let start = Instant::now();
        let l = Leadership::start(
            client(server.clone()),
            LeaseSettings::with_defaults("ns".into(), "me".into()),
        )
        .unwrap();
        let mut rx = l.leading();
        let took = until_leading(&mut rx, true).await;
        assert!(
            took - start >= LeaseSettings::LEASE_DURATION,
            "{:?}",
            took - start
        );
        // Then another process writes under the same name: the leader's
        // next renewal meets it (409, a renewal it did not write) and it
        // stops leading; it never overwrites the twin's record.
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.lock().unwrap().write_as("me");
        let written = Instant::now();
        let rv = server.lock().unwrap().rv;
        let down = until_leading(&mut rx, false).await;
        assert!(down - written <= LeaseSettings::RETRY_PERIOD);
        // While the twin keeps renewing, this process never leads again.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            server.lock().unwrap().write_as("me");
            assert!(!*rx.borrow(), "led again while the twin renews");
        }
        let s = server.lock().unwrap();
        assert!(
            s.puts.iter().filter(|p| p.0 >= written).all(|p| p.1 == 409),
            "no write of this process succeeded after the twin's (rv {rv}): {:?}",
            s.puts
        );
        drop(s);
        drop(l);
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_with_a_huge_lease_that_never_renews_is_taken_over_after_the_cap() {
        let server = shared(true);
        {
            let mut s = server.lock().unwrap();
            s.write_as("mallory");
            let l = s.lease.as_mut().unwrap();
            l["spec"]["leaseDurationSeconds"] = i32::MAX.into();
            l["spec"]["renewTime"] = "2099-01-01T00:00:00.000000Z".into();
        }
        let start = Instant::now();
        let settings = LeaseSettings::with_defaults("ns".into(), "me".into());
        let cap = settings.honoured_lease();
        assert_eq!(cap, Duration::from_secs(60));
        let l = Leadership::start(client(server.clone()), settings).unwrap();
        let mut rx = l.leading();
        let took = until_leading(&mut rx, true).await;
        // Read at once, waited out for the cap from that read, not longer.
        assert_eq!(took - start, cap);
        let lease = server.lock().unwrap().lease.clone().unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], "me");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
        drop(l);
    }

    #[test]
    fn the_namespace_comes_from_the_downward_api_then_the_pod_then_the_kubeconfig() {
        assert_eq!(pick_namespace(Some("ops"), Some("x"), "default"), "ops");
        assert_eq!(
            pick_namespace(None, Some("serin-system\n"), "default"),
            "serin-system"
        );
        assert_eq!(pick_namespace(Some(" "), None, "shop"), "shop");
        assert_eq!(pick_namespace(None, Some(""), "shop"), "shop");
    }

    #[test]
    fn the_identity_is_the_pod_name_else_host_and_pid() {
        assert_eq!(
            pick_identity(Some("serin-7d9-x2"), Some("h"), 7),
            "serin-7d9-x2"
        );
        assert_eq!(pick_identity(None, Some("laptop\n"), 4242), "laptop-4242");
        assert_eq!(pick_identity(Some(""), None, 9), "serin-9");
    }

    #[test]
    fn unsafe_timings_are_refused() {
        let ok = LeaseSettings::with_defaults("ns".into(), "me".into());
        assert_eq!(ok.check(), Ok(()));
        let with = |f: fn(&mut LeaseSettings)| {
            let mut s = ok.clone();
            f(&mut s);
            s.check().expect_err("refused").to_string()
        };
        assert!(with(|s| s.renew_deadline = s.lease_duration).contains("renew deadline"));
        assert!(with(|s| s.retry_period = s.renew_deadline).contains("retry period"));
        assert!(with(|s| s.retry_period = Duration::ZERO).contains("retry period"));
        assert!(
            with(|s| s.lease_duration = Duration::from_millis(15_500)).contains("whole number")
        );
        assert!(with(|s| s.identity.clear()).contains("holder identity"));
    }

    fn spec(holder: Option<&str>, seconds: i32, renew_ms: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(MicroTime(Timestamp::from_millisecond(renew_ms).unwrap())),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn another_holder_expires_from_when_this_replica_saw_its_record_change() {
        let t0 = Instant::now();
        let d = Duration::from_secs(15);
        let none = Written::default();
        let seen = Observed::after(None, spec(Some("a"), 15, 1000), t0);
        let until = t0 + d;
        assert_eq!(
            seen.holder("me", &none, d, 4 * d),
            Holder::Other {
                holder: "a".into(),
                until,
                twin: false
            }
        );
        // The same record read again later: the time still runs from t0,
        // however far the writer's wall clock says it renewed.
        let again = Observed::after(Some(seen), spec(Some("a"), 15, 1000), t0 + d / 2);
        assert_eq!(again.since, t0);
        // A renewal (any change) restarts it, on this replica's clock.
        let t1 = t0 + Duration::from_secs(9);
        let renewed = Observed::after(Some(again), spec(Some("a"), 15, 999_999_999), t1);
        assert_eq!(renewed.since, t1);
        // The holder's own promise counts (leaseDurationSeconds), not ours.
        let short = Observed::after(None, spec(Some("a"), 3, 1), t0);
        assert_eq!(
            short.holder("me", &none, d, 4 * d),
            Holder::Other {
                holder: "a".into(),
                until: t0 + Duration::from_secs(3),
                twin: false
            }
        );
        assert_eq!(
            Observed::after(None, spec(None, 1, 1), t0).holder("me", &none, d, 4 * d),
            Holder::Free
        );
        assert_eq!(
            Observed::after(None, spec(Some(""), 1, 1), t0).holder("me", &none, d, 4 * d),
            Holder::Free
        );
        // A record naming this identity is this process' only when it
        // wrote it (its renewTime): else it is a twin's, waited out.
        let named = Observed::after(None, spec(Some("me"), 15, 1), t0);
        assert_eq!(
            named.holder("me", &none, d, 4 * d),
            Holder::Other {
                holder: "me".into(),
                until: t0 + d,
                twin: true
            }
        );
        let mut written = Written::default();
        written.note(&spec(Some("me"), 15, 1));
        assert_eq!(named.holder("me", &written, d, 4 * d), Holder::Me);
        // A huge written duration is honoured only up to the cap.
        let huge = Observed::after(None, spec(Some("a"), i32::MAX, 1), t0);
        assert_eq!(
            huge.holder("me", &none, d, 4 * d),
            Holder::Other {
                holder: "a".into(),
                until: t0 + 4 * d,
                twin: false
            }
        );
        // Another identity is never ours, whatever its renewTime.
        assert!(matches!(
            Observed::after(None, spec(Some("a"), 15, 1), t0).holder("me", &written, d, 4 * d),
            Holder::Other { twin: false, .. }
        ));
    }

    #[test]
    fn claiming_counts_transitions_and_renewing_keeps_the_acquire_time() {
        let t = |ms| Timestamp::from_millisecond(ms).unwrap();
        let taken = claimed(&spec(Some("a"), 15, 1), "me", 15, t(5000));
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.acquire_time, Some(MicroTime(t(5000))));
        let renewed = claimed(&taken, "me", 15, t(7000));
        assert_eq!(renewed.acquire_time, Some(MicroTime(t(5000))));
        assert_eq!(renewed.renew_time, Some(MicroTime(t(7000))));
        assert_eq!(renewed.lease_transitions, Some(1));
        let fresh = claimed(&LeaseSpec::default(), "me", 15, t(1));
        assert_eq!(fresh.lease_transitions, Some(0));
        let free = released(&renewed, t(8000));
        assert_eq!(free.holder_identity, None);
        assert_eq!(free.lease_duration_seconds, Some(1));
        assert_eq!(claimed(&free, "b", 15, t(9000)).lease_transitions, Some(2));
    }
}

//! Jobs (`batch/v1`): run pods until `completions` of them succeed, at most `parallelism` at
//! a time, and give up after `backoffLimit` failures or `activeDeadlineSeconds`.
//!
//! Finished pods are counted as upstream does, so counts survive the pods: every pod carries
//! the `batch.kubernetes.io/job-tracking` finalizer; a finished pod's uid is first written to
//! `status.uncountedTerminatedPods`, then its finalizer is removed, then it moves into
//! `status.succeeded` / `status.failed`. A pod that is being deleted before it succeeded counts
//! as failed (`podReplacementPolicy: TerminatingOrFailed`, the default).
//!
//! `backoffLimit` counts failed pods; with `restartPolicy: OnFailure` pods restart in place
//! instead of failing, so their container restarts count too (as upstream). Replacement pods
//! for failed ones start after an exponential delay (10 s doubling, at most 6 min).
//!
//! A Job that reaches its completions gets the `SuccessCriteriaMet` and `Complete` conditions
//! and a `completionTime`; one that fails gets `FailureTarget` and `Failed` and its remaining
//! pods are deleted. `completionMode: Indexed` gives each pod an index (annotation and label
//! `batch.kubernetes.io/job-completion-index`, env `JOB_COMPLETION_INDEX`, name
//! `<job>-<index>-<random>`) and completes once every index succeeded (`completedIndexes`).
//! Without `completions` the Job is a work queue: it completes once a pod succeeded and no
//! other is active. `ttlSecondsAfterFinished` deletes a finished Job with its pods, and
//! `suspend` deletes the active pods until the Job is resumed.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::owner_ref;
use super::pod_ready;
use super::replicaset::selector_of;
use super::runner::{Action, Key, Reconciler};
use crate::api::resources::ResourceDef;
use crate::api::{
    Api, ApiError, DeleteOptions, PatchType, Target, WriteOptions, object, resources,
};
use crate::clock;

const COMPONENT: &str = "job-controller";
/// The finalizer that keeps a pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation and label carrying an Indexed Job pod's index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// The Job controller.
pub struct Jobs;

/// The `batch/v1` Job resource.
pub fn jobs() -> &'static ResourceDef {
    resources::find("batch", "v1", "jobs").expect("jobs are served")
}

fn pods() -> &'static ResourceDef {
    resources::core("pods")
}

impl Reconciler for Jobs {
    fn primary(&self) -> &'static ResourceDef {
        jobs()
    }

    fn owned(&self) -> Vec<&'static ResourceDef> {
        vec![pods()]
    }

    fn adopts(&self, owner: &Value, child: &Value) -> bool {
        !object::is_terminating(owner)
            && finished(owner).is_none()
            && selector_of(owner).is_some_and(|s| s.matches_json(object::labels(child)))
    }

    fn reconcile<'a>(
        &'a self,
        api: &'a Api,
        key: &'a Key,
        object: Option<Arc<Value>>,
    ) -> BoxFuture<'a, Result<Action, ApiError>> {
        sync(api, key, object).boxed()
    }
}

/// What a Job's spec asks for, with upstream's defaults.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    parallelism: i64,
    /// `None`: a work queue.
    completions: Option<i64>,
    backoff_limit: i64,
    active_deadline: Option<i64>,
    ttl_after_finished: Option<i64>,
    indexed: bool,
    suspend: bool,
    on_failure: bool,
}

impl Spec {
    fn of(job: &Value) -> Self {
        let int = |p: &str| job.pointer(p).and_then(Value::as_i64);
        // Counts are int32 fields (admission checks them); anything else is read within range.
        let int32 = |p: &str| int(p).map(|v| v.clamp(0, i64::from(i32::MAX)));
        Self {
            parallelism: int32("/spec/parallelism").unwrap_or(1),
            completions: int32("/spec/completions"),
            backoff_limit: int32("/spec/backoffLimit").unwrap_or(6),
            active_deadline: int("/spec/activeDeadlineSeconds"),
            ttl_after_finished: int("/spec/ttlSecondsAfterFinished"),
            indexed: job.pointer("/spec/completionMode") == Some(&json!("Indexed")),
            suspend: job.pointer("/spec/suspend") == Some(&json!(true)),
            on_failure: job.pointer("/spec/template/spec/restartPolicy")
                == Some(&json!("OnFailure")),
        }
    }
}

/// How a pod ended, as the Job counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
}

fn outcome(pod: &Value) -> Option<Outcome> {
    match pod.pointer("/status/phase").and_then(Value::as_str) {
        Some("Succeeded") => Some(Outcome::Succeeded),
        Some("Failed") => Some(Outcome::Failed),
        _ if object::is_terminating(pod) => Some(Outcome::Failed),
        _ => None,
    }
}

fn has_tracking(pod: &Value) -> bool {
    object::finalizers(pod)
        .iter()
        .any(|f| f == TRACKING_FINALIZER)
}

fn pod_index(pod: &Value) -> Option<i64> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(COMPLETION_INDEX))
        .and_then(Value::as_str)
        .and_then(|i| i.parse().ok())
}

/// The counts a Job keeps in its status.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counts {
    succeeded: i64,
    failed: i64,
    uncounted_succeeded: Vec<String>,
    uncounted_failed: Vec<String>,
    completed_indexes: BTreeSet<i64>,
}

fn uid_list(status: &Value, field: &str) -> Vec<String> {
    status
        .pointer(&format!("/uncountedTerminatedPods/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect()
}

impl Counts {
    /// The counts a status records; completed indexes only below `completions` (a status
    /// saying `0-9223372036854775806` costs nothing).
    fn of(status: &Value, completions: i64) -> Self {
        let int = |f: &str| status.get(f).and_then(Value::as_i64).unwrap_or(0).max(0);
        Self {
            succeeded: int("succeeded"),
            failed: int("failed"),
            uncounted_succeeded: uid_list(status, "succeeded"),
            uncounted_failed: uid_list(status, "failed"),
            completed_indexes: parse_indexes(
                status
                    .get("completedIndexes")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                completions,
            ),
        }
    }

    fn is_uncounted(&self, uid: &str) -> bool {
        self.uncounted_succeeded.iter().any(|u| u == uid)
            || self.uncounted_failed.iter().any(|u| u == uid)
    }

    /// Step one of counting: finished pods that still carry the finalizer become uncounted
    /// (Indexed successes also complete their index). Returns whether anything changed.
    fn record(&mut self, pods: &[Value], spec: &Spec) -> bool {
        let mut changed = false;
        for pod in pods {
            let uid = object::uid(pod);
            let Some(outcome) = outcome(pod) else {
                continue;
            };
            if !has_tracking(pod) || self.is_uncounted(uid) {
                continue;
            }
            match outcome {
                Outcome::Succeeded => {
                    self.uncounted_succeeded.push(uid.to_string());
                    if spec.indexed
                        && let Some(i) = pod_index(pod)
                            .filter(|i| (0..spec.completions.unwrap_or(0)).contains(i))
                    {
                        self.completed_indexes.insert(i);
                    }
                }
                Outcome::Failed => self.uncounted_failed.push(uid.to_string()),
            }
            changed = true;
        }
        changed
    }

    /// Step three: uncounted pods whose finalizer is gone (or that are gone) are counted.
    fn flush(&mut self, pods: &[Value], spec: &Spec) -> bool {
        let tracked: HashSet<&str> = pods
            .iter()
            .filter(|p| has_tracking(p))
            .map(object::uid)
            .collect();
        let before = (self.uncounted_succeeded.len(), self.uncounted_failed.len());
        let succeeded = self.uncounted_succeeded.len();
        self.uncounted_succeeded
            .retain(|u| tracked.contains(u.as_str()));
        let newly_succeeded = (succeeded - self.uncounted_succeeded.len()) as i64;
        let failed = self.uncounted_failed.len();
        self.uncounted_failed
            .retain(|u| tracked.contains(u.as_str()));
        self.failed = self
            .failed
            .saturating_add((failed - self.uncounted_failed.len()) as i64);
        if spec.indexed {
            self.succeeded = self.completed_indexes.len() as i64;
        } else {
            self.succeeded = self.succeeded.saturating_add(newly_succeeded);
        }
        before != (self.uncounted_succeeded.len(), self.uncounted_failed.len())
    }

    /// Succeeded pods, counted or about to be.
    fn total_succeeded(&self, spec: &Spec) -> i64 {
        if spec.indexed {
            self.completed_indexes.len() as i64
        } else {
            self.succeeded
                .saturating_add(self.uncounted_succeeded.len() as i64)
        }
    }

    fn total_failed(&self) -> i64 {
        self.failed
            .saturating_add(self.uncounted_failed.len() as i64)
    }
}

/// `1,3-5,7` → {1, 3, 4, 5, 7}, keeping only indexes in `0..completions` (as upstream).
fn parse_indexes(s: &str, completions: i64) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    let last = completions.saturating_sub(1);
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                    out.extend(a.max(0)..=b.min(last));
                }
            }
            None => out.extend(
                part.parse::<i64>()
                    .ok()
                    .filter(|i| (0..completions).contains(i)),
            ),
        }
    }
    out
}

/// The inverse of [`parse_indexes`], with ranges for runs of consecutive indexes.
fn format_indexes(set: &BTreeSet<i64>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// What to change about the active pods.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Pods to create: `Some(index)` for Indexed Jobs.
    create: Vec<Option<i64>>,
    /// Names of active pods to delete.
    delete: Vec<String>,
}

/// Which pods to create or delete so that the active ones match what is left to do.
fn plan(spec: &Spec, counts: &Counts, active: &[Value]) -> Plan {
    let mut out = Plan::default();
    let succeeded = counts.total_succeeded(spec);
    if spec.indexed {
        let completions = spec.completions.unwrap_or(0);
        let mut running = BTreeSet::new();
        let mut keep = 0;
        for pod in active {
            match pod_index(pod) {
                // Out of range, done already, or a duplicate: not needed.
                Some(i)
                    if (0..completions).contains(&i)
                        && !counts.completed_indexes.contains(&i)
                        && running.insert(i) =>
                {
                    keep += 1;
                }
                _ => out.delete.push(object::name(pod).to_string()),
            }
        }
        let room = usize::try_from((spec.parallelism - keep).max(0))
            .unwrap_or(usize::MAX)
            .min(super::BURST);
        out.create = (0..completions)
            .filter(|i| !counts.completed_indexes.contains(i) && !running.contains(i))
            .take(room)
            .map(Some)
            .collect();
        return out;
    }
    let want = match spec.completions {
        Some(c) => spec.parallelism.min(c.saturating_sub(succeeded)).max(0),
        // A work queue: once one pod succeeded, no new pods start.
        None if succeeded > 0 => spec.parallelism.min(active.len() as i64),
        None => spec.parallelism,
    } as usize;
    if active.len() < want {
        // At most a burst per pass: the pods' own events bring the next pass.
        out.create = vec![None; (want - active.len()).min(super::BURST)];
    } else if active.len() > want {
        // Delete the newest first: the older ones are further along.
        let mut by_age: Vec<&Value> = active.iter().collect();
        by_age.sort_by_key(|p| std::cmp::Reverse(object::meta_str(p, "creationTimestamp")));
        out.delete = by_age[..active.len() - want]
            .iter()
            .map(|p| object::name(p).to_string())
            .collect();
    }
    out
}

/// Whether all the work is done.
fn complete(spec: &Spec, counts: &Counts, active: usize) -> bool {
    let succeeded = counts.total_succeeded(spec);
    match spec.completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active == 0,
    }
}

/// Why the Job failed, if it did: (reason, message).
fn failure(
    spec: &Spec,
    counts: &Counts,
    restarts: i64,
    start: Option<Timestamp>,
    now: Timestamp,
) -> Option<(&'static str, &'static str)> {
    let failures = counts
        .total_failed()
        .saturating_add(if spec.on_failure { restarts } else { 0 });
    if failures > spec.backoff_limit {
        return Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
    }
    if let (Some(deadline), Some(start)) = (spec.active_deadline, start)
        && clock::passed(start, deadline, now)
    {
        return Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ));
    }
    None
}

/// How long to wait before replacing failed pods: 10 s after the latest failure, doubling
/// with every failure, at most 6 min.
fn backoff_remaining(failed: i64, last_failure: Option<Timestamp>, now: Timestamp) -> Duration {
    let (Some(last), true) = (last_failure, failed > 0) else {
        return Duration::ZERO;
    };
    let delay = BACKOFF_BASE
        .saturating_mul(1 << (failed - 1).min(16))
        .min(BACKOFF_MAX);
    if now < last {
        delay
    } else {
        delay.saturating_sub(now.duration_since(last).unsigned_abs())
    }
}

/// When a failed pod stopped: its containers' finish, else its deletion or creation time.
fn failed_at(pod: &Value) -> Option<Timestamp> {
    let finished = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|f| {
            pod.pointer(&format!("/status/{f}"))
                .and_then(Value::as_array)
        })
        .flatten()
        .filter_map(|c| {
            c.pointer("/state/terminated/finishedAt")
                .and_then(Value::as_str)
        })
        .filter_map(object::parse_time)
        .max();
    finished
        .or_else(|| object::parse_time(object::meta_str(pod, "deletionTimestamp")))
        .or_else(|| object::parse_time(object::meta_str(pod, "creationTimestamp")))
}

fn restarts(pod: &Value) -> i64 {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|f| {
            pod.pointer(&format!("/status/{f}"))
                .and_then(Value::as_array)
        })
        .flatten()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum()
}

fn true_condition<'a>(job: &'a Value, kind: &str) -> Option<&'a Value> {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

/// `Some(true)` when the Job is Complete, `Some(false)` when Failed.
fn finished(job: &Value) -> Option<bool> {
    if true_condition(job, "Complete").is_some() {
        Some(true)
    } else if true_condition(job, "Failed").is_some() {
        Some(false)
    } else {
        None
    }
}

/// When the Job finished: its completion time, or when it failed.
fn finished_at(job: &Value) -> Option<Timestamp> {
    object::parse_time(
        job.pointer("/status/completionTime")
            .and_then(Value::as_str)
            .unwrap_or(""),
    )
    .or_else(|| {
        true_condition(job, "Failed")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .and_then(object::parse_time)
    })
}

/// Sets a condition in `conditions`, keeping its transition time when the status is unchanged.
fn set_condition(
    conditions: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    if let Some(c) = conditions.iter_mut().find(|c| c["type"] == kind) {
        if c["status"] != status {
            c["lastTransitionTime"] = json!(now);
        }
        c["status"] = json!(status);
        c["reason"] = json!(reason);
        c["message"] = json!(message);
        c["lastProbeTime"] = json!(now);
    } else {
        conditions.push(json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now,
        }));
    }
}

fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn sync(api: &Api, (ns, name): &Key, job: Option<Arc<Value>>) -> Result<Action, ApiError> {
    let Some(job) = job else {
        // Gone: its pods must not wait for a count that will never happen.
        release_pods(api, ns, name).await?;
        return Ok(Action::Await);
    };
    let job = Value::clone(&job);
    if object::is_terminating(&job) {
        release_pods(api, ns, name).await?;
        return Ok(Action::Await);
    }
    let uid = object::uid(&job).to_string();
    let spec = Spec::of(&job);
    let selector = selector_of(&job);
    let now = Timestamp::now();
    let now_s = format_time(now);

    // The Job's pods: owned ones, and matching orphans adopted while it runs.
    let mut mine = Vec::new();
    let mut stale = Vec::new();
    for pod in api.list_shared(pods(), Some(ns), |_| true)? {
        let controller = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
            .cloned();
        match controller {
            Some(r) if r["uid"] == uid.as_str() => mine.push(Value::clone(&pod)),
            // A pod of an earlier Job of this name.
            Some(r) if r["kind"] == "Job" && r["name"] == name.as_str() && has_tracking(&pod) => {
                stale.push(pod)
            }
            None if finished(&job).is_none()
                && outcome(&pod).is_none()
                && selector
                    .as_ref()
                    .is_some_and(|s| s.matches_json(object::labels(&pod))) =>
            {
                mine.push(adopt(api, &job, &pod).await?);
            }
            _ => {}
        }
    }
    for pod in &stale {
        strip_finalizer(api, pod).await?;
    }

    // Count finished pods: record them, drop their finalizers, then count them.
    let status = job.get("status").cloned().unwrap_or(json!({}));
    let mut written = status.clone();
    let mut counts = Counts::of(&status, spec.completions.unwrap_or(0));
    if counts.record(&mine, &spec) {
        let recorded = status_with(&status, &counts, None);
        write_status(api, &job, &mut written, recorded).await?;
    }
    for pod in mine.iter_mut() {
        if has_tracking(pod) && counts.is_uncounted(object::uid(pod)) {
            *pod = strip_finalizer(api, pod).await?;
        }
    }
    counts.flush(&mine, &spec);

    let mut active: Vec<Value> = mine
        .iter()
        .filter(|p| outcome(p).is_none())
        .cloned()
        .collect();
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut extra = Map::new();
    let mut after: Option<Duration> = None;

    if finished(&job).is_some() {
        // Leftovers of a finished Job go.
        for pod in std::mem::take(&mut active) {
            delete_pod(api, &job, &pod).await?;
        }
        let patch = status_with(&status, &counts, Some((&active, &conditions, &extra)));
        write_status(api, &job, &mut written, patch).await?;
        return expire(api, &job, &spec, now).await;
    }

    if spec.suspend {
        for pod in std::mem::take(&mut active) {
            delete_pod(api, &job, &pod).await?;
        }
        if true_condition(&job, "Suspended").is_none() {
            set_condition(
                &mut conditions,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                &now_s,
            );
            crate::events::record(api, &job, "Normal", "Suspended", "Job suspended", COMPONENT)
                .await;
        }
        let patch = status_with(&status, &counts, Some((&active, &conditions, &extra)));
        write_status(api, &job, &mut written, patch).await?;
        return Ok(Action::Await);
    }
    if true_condition(&job, "Suspended").is_some() {
        set_condition(
            &mut conditions,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            &now_s,
        );
        crate::events::record(api, &job, "Normal", "Resumed", "Job resumed", COMPONENT).await;
        // The deadline counts from the resumption.
        extra.insert("startTime".into(), json!(now_s));
    }
    let start = match extra.get("startTime").or_else(|| status.get("startTime")) {
        Some(Value::String(s)) => object::parse_time(s),
        _ => {
            extra.insert("startTime".into(), json!(now_s));
            Some(now)
        }
    };

    let restarts: i64 = active.iter().map(restarts).sum();
    if let Some((reason, message)) = failure(&spec, &counts, restarts, start, now) {
        for pod in std::mem::take(&mut active) {
            delete_pod(api, &job, &pod).await?;
        }
        set_condition(
            &mut conditions,
            "FailureTarget",
            "True",
            reason,
            message,
            &now_s,
        );
        set_condition(&mut conditions, "Failed", "True", reason, message, &now_s);
        crate::events::record(api, &job, "Warning", reason, message, COMPONENT).await;
        let patch = status_with(&status, &counts, Some((&active, &conditions, &extra)));
        let job = write_status(api, &job, &mut written, patch)
            .await?
            .unwrap_or(job);
        return expire(api, &job, &spec, now).await;
    }

    if complete(&spec, &counts, active.len()) {
        for pod in std::mem::take(&mut active) {
            delete_pod(api, &job, &pod).await?;
        }
        let (reason, message) = (
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
        set_condition(
            &mut conditions,
            "SuccessCriteriaMet",
            "True",
            reason,
            message,
            &now_s,
        );
        set_condition(&mut conditions, "Complete", "True", reason, message, &now_s);
        extra.insert("completionTime".into(), json!(now_s));
        crate::events::record(api, &job, "Normal", "Completed", "Job completed", COMPONENT).await;
        let patch = status_with(&status, &counts, Some((&active, &conditions, &extra)));
        let job = write_status(api, &job, &mut written, patch)
            .await?
            .unwrap_or(job);
        return expire(api, &job, &spec, now).await;
    }

    let todo = plan(&spec, &counts, &active);
    for victim in &todo.delete {
        if let Some(pos) = active.iter().position(|p| object::name(p) == victim) {
            let pod = active.remove(pos);
            delete_pod(api, &job, &pod).await?;
        }
    }
    if !todo.create.is_empty() {
        let last_failure = mine
            .iter()
            .filter(|p| outcome(p) == Some(Outcome::Failed))
            .filter_map(failed_at)
            .max();
        let wait = backoff_remaining(counts.total_failed(), last_failure, now);
        if wait.is_zero() {
            let template = job.pointer("/spec/template").cloned().unwrap_or_default();
            let created = futures::stream::iter(todo.create.iter().copied())
                .map(|index| create_pod(api, &job, &template, index))
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await;
            for pod in created {
                active.push(pod?);
            }
        } else {
            after = Some(wait);
        }
    }
    // A deadline beyond the range of time never comes: nothing to wait for.
    if let (Some(deadline), Some(start)) = (spec.active_deadline, start)
        && let Some(left) = clock::until_after(start, deadline, now)
    {
        after = Some(after.map_or(left, |a| a.min(left)));
    }
    let patch = status_with(&status, &counts, Some((&active, &conditions, &extra)));
    write_status(api, &job, &mut written, patch).await?;
    Ok(after.map_or(Action::Await, |d| {
        Action::RequeueAfter(d + Duration::from_millis(50))
    }))
}

/// The active pods, conditions and other fields of a status being written.
type Rest<'a> = (&'a [Value], &'a Vec<Value>, &'a Map<String, Value>);

/// The status after counting; with the active pods, conditions and extra fields when known.
fn status_with(current: &Value, counts: &Counts, rest: Option<Rest<'_>>) -> Value {
    let mut s = current.as_object().cloned().unwrap_or_default();
    let positive = |n: i64| if n > 0 { json!(n) } else { Value::Null };
    s.insert("succeeded".into(), positive(counts.succeeded));
    s.insert("failed".into(), positive(counts.failed));
    s.insert(
        "uncountedTerminatedPods".into(),
        if counts.uncounted_succeeded.is_empty() && counts.uncounted_failed.is_empty() {
            json!({})
        } else {
            let list = |l: &Vec<String>| if l.is_empty() { Value::Null } else { json!(l) };
            let mut u = Map::new();
            for (k, v) in [
                ("succeeded", list(&counts.uncounted_succeeded)),
                ("failed", list(&counts.uncounted_failed)),
            ] {
                if !v.is_null() {
                    u.insert(k.into(), v);
                }
            }
            Value::Object(u)
        },
    );
    let indexes = format_indexes(&counts.completed_indexes);
    s.insert(
        "completedIndexes".into(),
        if indexes.is_empty() {
            Value::Null
        } else {
            json!(indexes)
        },
    );
    if let Some((active, conditions, extra)) = rest {
        s.insert("active".into(), positive(active.len() as i64));
        s.insert(
            "ready".into(),
            json!(active.iter().filter(|p| pod_ready(p)).count()),
        );
        s.insert(
            "conditions".into(),
            if conditions.is_empty() {
                Value::Null
            } else {
                json!(conditions)
            },
        );
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    s.retain(|_, v| !v.is_null());
    Value::Object(s)
}

/// Replaces the Job's status, last written as `current`, with `status` when it differs.
/// Returns the written Job.
async fn write_status(
    api: &Api,
    job: &Value,
    current: &mut Value,
    status: Value,
) -> Result<Option<Value>, ApiError> {
    if *current == status {
        return Ok(None);
    }
    // A merge patch: fields that are gone are set to null.
    let mut patch = status.as_object().cloned().unwrap_or_default();
    for k in current.as_object().into_iter().flatten().map(|(k, _)| k) {
        patch.entry(k.clone()).or_insert(Value::Null);
    }
    if let Some(Value::Object(u)) = patch.get_mut("uncountedTerminatedPods") {
        for k in ["succeeded", "failed"] {
            u.entry(k).or_insert(Value::Null);
        }
    }
    let written = api
        .patch(
            jobs(),
            Some(object::namespace(job)),
            object::name(job),
            PatchType::Merge,
            json!({ "status": patch }),
            Target::Status,
            &WriteOptions::default(),
        )
        .await?;
    *current = status;
    Ok(Some(written.object))
}

/// Deletes a finished Job once its `ttlSecondsAfterFinished` passed, its pods with it.
async fn expire(api: &Api, job: &Value, spec: &Spec, now: Timestamp) -> Result<Action, ApiError> {
    let Some(ttl) = spec.ttl_after_finished else {
        return Ok(Action::Await);
    };
    let Some(at) = clock::add_seconds(finished_at(job).unwrap_or(now), ttl) else {
        return Ok(Action::Await);
    };
    if now < at {
        let left = clock::until(at, now);
        return Ok(Action::RequeueAfter(left + Duration::from_millis(50)));
    }
    let opts = DeleteOptions {
        propagation_policy: Some("Background".into()),
        precondition_uid: Some(object::uid(job).to_string()),
        ..Default::default()
    };
    match api
        .delete(
            jobs(),
            Some(object::namespace(job)),
            object::name(job),
            &opts,
        )
        .await
    {
        Ok(_) => Ok(Action::Await),
        Err(e) if e.code == 404 || e.code == 409 => Ok(Action::Await),
        Err(e) => Err(e),
    }
}

/// Drops the tracking finalizer of the pods of a Job that is gone or going.
async fn release_pods(api: &Api, ns: &str, name: &str) -> Result<(), ApiError> {
    for pod in api.list_shared(pods(), Some(ns), |_| true)? {
        let owned = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|r| r["controller"] == true && r["kind"] == "Job" && r["name"] == name);
        if owned && has_tracking(&pod) {
            strip_finalizer(api, &pod).await?;
        }
    }
    Ok(())
}

/// Removes the tracking finalizer from a pod; returns the pod as written.
async fn strip_finalizer(api: &Api, pod: &Value) -> Result<Value, ApiError> {
    let left: Vec<String> = object::finalizers(pod)
        .into_iter()
        .filter(|f| f != TRACKING_FINALIZER)
        .collect();
    let patch = json!({"metadata": {"finalizers": left,
                                    "resourceVersion": object::meta_str(pod, "resourceVersion")}});
    match api
        .patch(
            pods(),
            Some(object::namespace(pod)),
            object::name(pod),
            PatchType::Merge,
            patch,
            Target::Main,
            &WriteOptions::default(),
        )
        .await
    {
        Ok(w) => Ok(w.object),
        Err(e) if e.code == 404 => {
            let mut gone = pod.clone();
            object::meta_mut(&mut gone).insert("finalizers".into(), json!(left));
            Ok(gone)
        }
        Err(e) => Err(e),
    }
}

/// Takes an orphan pod over: controller reference and tracking finalizer.
async fn adopt(api: &Api, job: &Value, pod: &Value) -> Result<Value, ApiError> {
    let mut refs: Vec<Value> = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    refs.push(owner_ref(job, jobs()));
    let mut finalizers = object::finalizers(pod);
    finalizers.push(TRACKING_FINALIZER.into());
    let patch = json!({"metadata": {"ownerReferences": refs, "finalizers": finalizers,
                                    "resourceVersion": object::meta_str(pod, "resourceVersion")}});
    super::merge_patch(api, pods(), pod, patch).await
}

async fn delete_pod(api: &Api, job: &Value, pod: &Value) -> Result<(), ApiError> {
    let pod_name = object::name(pod);
    match api
        .delete(
            pods(),
            Some(object::namespace(pod)),
            pod_name,
            &DeleteOptions::default(),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    }
    let message = format!("Deleted pod: {pod_name}");
    crate::events::record(api, job, "Normal", "SuccessfulDelete", &message, COMPONENT).await;
    Ok(())
}

/// A pod for the Job from its template (`index` for Indexed Jobs).
fn pod_for(job: &Value, template: &Value, index: Option<i64>) -> Value {
    let name = object::name(job);
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    if let Some(m) = metadata.as_object_mut() {
        m.remove("name");
        m.remove("namespace");
    }
    metadata["ownerReferences"] = json!([owner_ref(job, jobs())]);
    metadata["finalizers"] = json!([TRACKING_FINALIZER]);
    match index {
        Some(i) => {
            metadata["generateName"] = json!(format!("{name}-{i}-"));
            for field in ["annotations", "labels"] {
                if !metadata[field].is_object() {
                    metadata[field] = json!({});
                }
                metadata[field][COMPLETION_INDEX] = json!(i.to_string());
            }
            spec["hostname"] = json!(format!("{name}-{i}"));
            let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}}});
            for list in ["containers", "initContainers"] {
                for c in spec
                    .get_mut(list)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if !c["env"].is_array() {
                        c["env"] = json!([]);
                    }
                    if let Some(e) = c["env"].as_array_mut()
                        && !e.iter().any(|v| v["name"] == "JOB_COMPLETION_INDEX")
                    {
                        e.push(env.clone());
                    }
                }
            }
        }
        None => metadata["generateName"] = json!(format!("{name}-")),
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

async fn create_pod(
    api: &Api,
    job: &Value,
    template: &Value,
    index: Option<i64>,
) -> Result<Value, ApiError> {
    let pod = pod_for(job, template, index);
    match api
        .create(
            pods(),
            Some(object::namespace(job)),
            pod,
            &WriteOptions::default(),
        )
        .await
    {
        Ok(w) => {
            let message = format!("Created pod: {}", object::name(&w.object));
            crate::events::record(api, job, "Normal", "SuccessfulCreate", &message, COMPONENT)
                .await;
            Ok(w.object)
        }
        Err(e) => {
            let message = format!("Error creating: {}", e.message);
            crate::events::record(api, job, "Warning", "FailedCreate", &message, COMPONENT).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {

    use jiff::SignedDuration;

    use super::*;
    use crate::api::{Config, ListOptions};

    /// One reconcile of `key`, given its object as the runner gives it.
    async fn sync_now(api: &Api, key: &Key) -> Result<Action, ApiError> {
        sync(api, key, api.get_shared(jobs(), Some(&key.0), &key.1).ok()).await
    }

    fn pod(name: &str, phase: &str, tracked: bool, index: Option<i64>) -> Value {
        let mut p = json!({"metadata": {"name": name, "uid": format!("uid-{name}"),
                                        "creationTimestamp": format!("2025-01-01T00:00:0{}Z", name.len() % 10)},
                           "status": {"phase": phase}});
        if tracked {
            p["metadata"]["finalizers"] = json!([TRACKING_FINALIZER]);
        }
        if let Some(i) = index {
            p["metadata"]["annotations"] = json!({COMPLETION_INDEX: i.to_string()});
        }
        p
    }

    fn spec(job: Value) -> Spec {
        Spec::of(&json!({ "spec": job }))
    }

    #[test]
    fn finished_pods_are_counted_once_through_the_finalizer() {
        let s = spec(json!({"completions": 3}));
        let mut counts = Counts::default();
        let mut pods = vec![
            pod("a", "Succeeded", true, None),
            pod("b", "Failed", true, None),
            pod("c", "Running", true, None),
        ];
        assert!(counts.record(&pods, &s));
        assert_eq!(counts.uncounted_succeeded, ["uid-a"]);
        assert_eq!(counts.uncounted_failed, ["uid-b"]);
        assert_eq!(counts.total_succeeded(&s), 1);
        // Recording again changes nothing; while the finalizers stay, nothing is counted.
        assert!(!counts.record(&pods, &s));
        assert!(!counts.flush(&pods, &s));
        assert_eq!((counts.succeeded, counts.failed), (0, 0));
        // Finalizers gone: counted, and never again.
        pods[0]["metadata"]["finalizers"] = json!([]);
        pods.remove(1);
        assert!(counts.flush(&pods, &s));
        assert_eq!((counts.succeeded, counts.failed), (1, 1));
        assert!(counts.uncounted_succeeded.is_empty() && counts.uncounted_failed.is_empty());
        assert!(!counts.record(&pods, &s));
        // A pod being deleted before it finished counts as failed.
        let mut going = pod("d", "Running", true, None);
        going["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert!(counts.record(&[going], &s));
        assert_eq!(counts.total_failed(), 2);
    }

    #[test]
    fn indexed_jobs_complete_each_index_once() {
        let s = spec(json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed"}));
        let mut counts = Counts::default();
        let pods = [
            pod("a", "Succeeded", true, Some(1)),
            pod("b", "Succeeded", true, Some(1)),
            pod("c", "Succeeded", true, Some(9)),
        ];
        counts.record(&pods, &s);
        assert_eq!(counts.total_succeeded(&s), 1);
        assert_eq!(format_indexes(&counts.completed_indexes), "1");
        counts.flush(&[], &s);
        assert_eq!(counts.succeeded, 1);
        // Index 0 runs, 1 is done: 2 and 3 are next, one at a time within parallelism 2.
        let active = [pod("r", "Running", true, Some(0))];
        let p = plan(&s, &counts, &active);
        assert_eq!(p.create, [Some(2)]);
        assert!(p.delete.is_empty());
        // A duplicate or a finished index is not needed.
        let active = [
            pod("r", "Running", true, Some(0)),
            pod("rr", "Running", true, Some(0)),
            pod("s", "Running", true, Some(1)),
        ];
        let p = plan(&s, &counts, &active);
        assert_eq!(p.delete, ["rr", "s"]);
        assert_eq!(p.create, [Some(2)]);
    }

    #[test]
    fn completed_indexes_read_and_print_as_ranges() {
        let set = parse_indexes("0,2-4,7", 10);
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 2, 3, 4, 7]);
        assert_eq!(format_indexes(&set), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn plans_keep_parallelism_within_what_is_left() {
        let s = spec(json!({"completions": 5, "parallelism": 3}));
        let counts = Counts {
            succeeded: 3,
            ..Default::default()
        };
        assert_eq!(plan(&s, &counts, &[]).create.len(), 2);
        let three = [
            pod("a", "Running", true, None),
            pod("bb", "Running", true, None),
            pod("ccc", "Running", true, None),
        ];
        // Newest (latest creationTimestamp) goes first.
        assert_eq!(plan(&s, &counts, &three).delete, ["ccc"]);
        // A work queue starts `parallelism` pods, and none once one succeeded.
        let queue = spec(json!({"parallelism": 2}));
        assert_eq!(queue.completions, None);
        assert_eq!(plan(&queue, &Counts::default(), &[]).create.len(), 2);
        let one = Counts {
            succeeded: 1,
            ..Default::default()
        };
        assert!(plan(&queue, &one, &three[..1]).create.is_empty());
        assert!(!complete(&queue, &one, 1));
        assert!(complete(&queue, &one, 0));
        assert!(complete(
            &s,
            &Counts {
                succeeded: 5,
                ..Default::default()
            },
            0
        ));
    }

    #[test]
    fn jobs_fail_past_the_backoff_limit_or_the_deadline() {
        let now: Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
        let s = spec(json!({"backoffLimit": 2, "activeDeadlineSeconds": 600}));
        let failed = |n| Counts {
            failed: n,
            ..Default::default()
        };
        let early = Some(now - SignedDuration::from_secs(599));
        assert_eq!(failure(&s, &failed(2), 0, early, now), None);
        assert_eq!(
            failure(&s, &failed(3), 0, early, now).map(|f| f.0),
            Some("BackoffLimitExceeded")
        );
        let late = Some(now - SignedDuration::from_secs(600));
        assert_eq!(
            failure(&s, &failed(0), 0, late, now).map(|f| f.0),
            Some("DeadlineExceeded")
        );
        // Container restarts count only for restartPolicy OnFailure.
        assert_eq!(failure(&s, &failed(0), 5, early, now), None);
        let on_failure = spec(json!({"backoffLimit": 2,
                                     "template": {"spec": {"restartPolicy": "OnFailure"}}}));
        assert!(failure(&on_failure, &failed(0), 3, None, now).is_some());
    }

    #[test]
    fn replacements_back_off_exponentially() {
        let now: Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
        let ago = |s| Some(now - SignedDuration::from_secs(s));
        assert_eq!(backoff_remaining(0, ago(0), now), Duration::ZERO);
        assert_eq!(backoff_remaining(1, ago(4), now), Duration::from_secs(6));
        assert_eq!(backoff_remaining(1, ago(10), now), Duration::ZERO);
        assert_eq!(backoff_remaining(3, ago(10), now), Duration::from_secs(30));
        assert_eq!(backoff_remaining(12, ago(0), now), BACKOFF_MAX);
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let job = json!({"metadata": {"name": "work", "namespace": "default", "uid": "u1"}});
        let template = json!({"metadata": {"labels": {"job-name": "work"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let p = pod_for(&job, &template, Some(2));
        assert_eq!(p["metadata"]["generateName"], "work-2-");
        assert_eq!(p["metadata"]["labels"][COMPLETION_INDEX], "2");
        assert_eq!(p["metadata"]["labels"]["job-name"], "work");
        assert_eq!(p["metadata"]["annotations"][COMPLETION_INDEX], "2");
        assert_eq!(p["metadata"]["finalizers"], json!([TRACKING_FINALIZER]));
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(p["spec"]["hostname"], "work-2");
        assert_eq!(
            p["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            format!("metadata.annotations['{COMPLETION_INDEX}']")
        );
        assert_eq!(
            pod_for(&job, &template, None)["metadata"]["generateName"],
            "work-"
        );
    }

    async fn api() -> (Api, tempfile::TempDir) {
        Api::scratch(Config::default()).await
    }

    async fn create_job(api: &Api, name: &str, spec: Value) -> Key {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": "compute:1.0"}]}});
        let job = json!({"apiVersion": "batch/v1", "kind": "Job",
                         "metadata": {"name": name}, "spec": spec});
        api.create(jobs(), Some("default"), job, &WriteOptions::default())
            .await
            .unwrap();
        ("default".into(), name.into())
    }

    fn job_pods(api: &Api, job: &str) -> Vec<Value> {
        let mut all = api
            .list(pods(), Some("default"), &ListOptions::default())
            .unwrap()
            .items;
        all.retain(|p| p.pointer("/metadata/labels/job-name") == Some(&json!(job)));
        all.sort_by_key(|p| object::name(p).to_string());
        all
    }

    async fn finish(api: &Api, pod: &Value, phase: &str) {
        api.patch(
            pods(),
            Some("default"),
            object::name(pod),
            PatchType::Merge,
            json!({"status": {"phase": phase}}),
            Target::Status,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }

    fn status(api: &Api, key: &Key) -> Value {
        api.get(jobs(), Some(&key.0), &key.1).unwrap()["status"].clone()
    }

    fn true_conditions(status: &Value) -> Vec<String> {
        status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "True")
            .map(|c| c["type"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_job_runs_its_completions_and_completes() {
        let (api, _dir) = api().await;
        let key = create_job(&api, "pi", json!({"completions": 2})).await;
        sync_now(&api, &key).await.unwrap();
        let pods = job_pods(&api, "pi");
        assert_eq!(pods.len(), 1);
        assert_eq!(object::finalizers(&pods[0]), [TRACKING_FINALIZER]);
        let s = status(&api, &key);
        assert_eq!(
            (s["active"].clone(), s["ready"].clone()),
            (json!(1), json!(0))
        );
        assert!(s["startTime"].is_string());

        finish(&api, &pods[0], "Succeeded").await;
        sync_now(&api, &key).await.unwrap();
        let pods = job_pods(&api, "pi");
        assert_eq!(pods.len(), 2);
        assert!(object::finalizers(&pods[0]).is_empty() || object::finalizers(&pods[1]).is_empty());
        let s = status(&api, &key);
        assert_eq!(s["succeeded"], 1);
        assert_eq!(s["active"], 1);
        assert_eq!(s["uncountedTerminatedPods"], json!({}));

        let running = pods.iter().find(|p| outcome(p).is_none()).unwrap();
        finish(&api, running, "Succeeded").await;
        sync_now(&api, &key).await.unwrap();
        let s = status(&api, &key);
        assert_eq!(s["succeeded"], 2);
        assert!(s.get("active").is_none(), "{s}");
        assert!(s["completionTime"].is_string());
        assert_eq!(true_conditions(&s), ["SuccessCriteriaMet", "Complete"]);
        assert_eq!(s["conditions"][1]["reason"], "CompletionsReached");
        // Finished: another pass changes nothing.
        let before = api.get(jobs(), Some("default"), "pi").unwrap();
        sync_now(&api, &key).await.unwrap();
        let after = api.get(jobs(), Some("default"), "pi").unwrap();
        assert_eq!(
            object::meta_str(&before, "resourceVersion"),
            object::meta_str(&after, "resourceVersion")
        );
    }

    #[tokio::test]
    async fn a_failing_job_stops_at_its_backoff_limit() {
        let (api, _dir) = api().await;
        let key = create_job(
            &api,
            "bad",
            json!({"backoffLimit": 0, "parallelism": 2, "completions": 4}),
        )
        .await;
        sync_now(&api, &key).await.unwrap();
        let pods = job_pods(&api, "bad");
        assert_eq!(pods.len(), 2);
        finish(&api, &pods[0], "Failed").await;
        sync_now(&api, &key).await.unwrap();
        let s = status(&api, &key);
        assert_eq!(true_conditions(&s), ["FailureTarget", "Failed"]);
        assert_eq!(s["conditions"][1]["reason"], "BackoffLimitExceeded");
        assert_eq!(
            s["conditions"][1]["message"],
            "Job has reached the specified backoff limit"
        );
        // The other pod was deleted; once it is gone it counts as failed too.
        sync_now(&api, &key).await.unwrap();
        assert_eq!(status(&api, &key)["failed"], 2);
        assert!(
            job_pods(&api, "bad")
                .iter()
                .all(|p| object::finalizers(p).is_empty())
        );
    }

    #[tokio::test]
    async fn deadlines_fail_jobs_and_ttl_deletes_them() {
        let (api, _dir) = api().await;
        let key = create_job(
            &api,
            "slow",
            json!({"activeDeadlineSeconds": 30, "ttlSecondsAfterFinished": 0}),
        )
        .await;
        let Action::RequeueAfter(d) = sync_now(&api, &key).await.unwrap() else {
            panic!("no requeue for the deadline");
        };
        assert!(
            d <= Duration::from_secs(31) && d > Duration::from_secs(28),
            "{d:?}"
        );
        // Started long ago: the deadline has passed.
        let long_ago = format_time(Timestamp::now() - SignedDuration::from_secs(60));
        api.patch(
            jobs(),
            Some("default"),
            "slow",
            PatchType::Merge,
            json!({"status": {"startTime": long_ago}}),
            Target::Status,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
        sync_now(&api, &key).await.unwrap();
        // Failed with DeadlineExceeded, and, with a TTL of 0, deleted at once.
        assert_eq!(
            api.get(jobs(), Some("default"), "slow").unwrap_err().code,
            404
        );
        crate::events::flushed(&api).await;
        let events = api
            .list(
                resources::core("events"),
                Some("default"),
                &ListOptions::default(),
            )
            .unwrap()
            .items;
        assert!(events.iter().any(|e| e["reason"] == "DeadlineExceeded"
            && e["message"] == "Job was active longer than specified deadline"));
        // Its pod loses the finalizer, so garbage collection can remove it.
        sync_now(&api, &key).await.unwrap();
        assert!(
            job_pods(&api, "slow")
                .iter()
                .all(|p| object::finalizers(p).is_empty())
        );
    }

    #[tokio::test]
    async fn indexed_jobs_give_each_pod_an_index() {
        let (api, _dir) = api().await;
        let key = create_job(
            &api,
            "idx",
            json!({"completions": 3, "parallelism": 2, "completionMode": "Indexed"}),
        )
        .await;
        sync_now(&api, &key).await.unwrap();
        let pods = job_pods(&api, "idx");
        let names: Vec<&str> = pods.iter().map(object::name).collect();
        assert!(
            names[0].starts_with("idx-0-") && names[1].starts_with("idx-1-"),
            "{names:?}"
        );
        finish(&api, &pods[1], "Succeeded").await;
        sync_now(&api, &key).await.unwrap();
        let s = status(&api, &key);
        assert_eq!(s["completedIndexes"], "1");
        assert_eq!(s["succeeded"], 1);
        let pods = job_pods(&api, "idx");
        assert!(pods.iter().any(|p| object::name(p).starts_with("idx-2-")));
        for p in pods.iter().filter(|p| outcome(p).is_none()) {
            finish(&api, p, "Succeeded").await;
        }
        sync_now(&api, &key).await.unwrap();
        let s = status(&api, &key);
        assert_eq!(s["completedIndexes"], "0-2");
        assert_eq!(true_conditions(&s), ["SuccessCriteriaMet", "Complete"]);
    }

    #[test]
    fn extreme_numbers_in_a_job_neither_panic_nor_run_away() {
        use crate::clock::tests::EXTREMES;
        use crate::controllers::BURST;
        let now: Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
        let starts = [
            None,
            Some(now),
            Some(Timestamp::MIN),
            Some(Timestamp::MAX),
            Some(now - SignedDuration::from_secs(600)),
        ];
        let running = [
            pod("a", "Running", true, Some(0)),
            pod("bb", "Running", true, Some(i64::MAX)),
            pod("ccc", "Running", true, Some(i64::MIN)),
        ];
        for &n in EXTREMES {
            for &m in EXTREMES {
                for mode in ["NonIndexed", "Indexed"] {
                    let s = spec(
                        json!({"parallelism": n, "completions": m, "backoffLimit": n,
                        "activeDeadlineSeconds": m, "ttlSecondsAfterFinished": n,
                        "completionMode": mode}),
                    );
                    // Index ranges a status could claim, read only up to completions.
                    let status = json!({"succeeded": n, "failed": m,
                        "completedIndexes": format!("{m}-5,{n},7-3,x-y,{n}-{m}")});
                    let counts = Counts::of(&status, s.completions.unwrap_or(0).min(10));
                    let p = plan(&s, &counts, &running);
                    assert!(
                        p.create.len() <= BURST,
                        "{n} {m} {mode}: {}",
                        p.create.len()
                    );
                    for start in starts {
                        let _ = failure(&s, &counts, n, start, now);
                    }
                    let _ = backoff_remaining(n, Some(now), now);
                    let _ = complete(&s, &counts, running.len());
                }
            }
        }
        // A deadline at the end of int64 never passes, whenever the Job started.
        let far = spec(json!({"activeDeadlineSeconds": i64::MAX}));
        for start in starts {
            for now in [now, Timestamp::MAX] {
                assert_eq!(failure(&far, &Counts::default(), 0, start, now), None);
            }
        }
        // An old start with a deadline in range still fails the Job.
        let near = spec(json!({"activeDeadlineSeconds": 1}));
        assert!(failure(&near, &Counts::default(), 0, Some(Timestamp::MIN), now).is_some());
        // The widest Job starts a burst of pods per pass, not 2^31 - 1 at once.
        for mode in ["NonIndexed", "Indexed"] {
            let wide = spec(json!({"parallelism": i32::MAX, "completions": i32::MAX,
                "completionMode": mode}));
            assert_eq!(
                plan(&wide, &Counts::default(), &[]).create.len(),
                BURST,
                "{mode}"
            );
        }
        // A status that claims every index done is believed only up to completions.
        let c = Counts::of(&json!({"completedIndexes": "0-9223372036854775806"}), 3);
        assert_eq!(
            c.completed_indexes.into_iter().collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let c = Counts::of(&json!({"succeeded": i64::MIN, "failed": i64::MAX}), 3);
        assert_eq!((c.succeeded, c.total_failed()), (0, i64::MAX));
    }
}

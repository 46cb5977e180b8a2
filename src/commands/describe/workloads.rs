//! Deployments, ReplicaSets and Jobs, as kubectl's describers print them.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobTemplateSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pods;
use super::text::{self, Text};

/// A Deployment with its ReplicaSets (`owned`: those it controls).
pub fn deployment(t: &mut Text, d: &Deployment, owned: &[ReplicaSet]) {
    let meta = &d.metadata;
    let spec = d.spec.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    t.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    t.field(
        0,
        "Namespace",
        meta.namespace.as_deref().unwrap_or_default(),
    );
    if let Some(created) = &meta.creation_timestamp {
        t.field(0, "CreationTimestamp", text::time(created));
    }
    t.map(0, "Labels", meta.labels.as_ref());
    t.annotations(0, "Annotations", meta);
    t.field(0, "Selector", text::selector(Some(&spec.selector)));
    t.field(
        0,
        "Replicas",
        format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            spec.replicas.unwrap_or(1),
            status.updated_replicas.unwrap_or(0),
            status.replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
            status.unavailable_replicas.unwrap_or(0)
        ),
    );
    let strategy = spec.strategy.clone().unwrap_or_default();
    t.field(
        0,
        "StrategyType",
        strategy.type_.as_deref().unwrap_or("RollingUpdate"),
    );
    t.field(0, "MinReadySeconds", spec.min_ready_seconds.unwrap_or(0));
    if let Some(ru) = &strategy.rolling_update {
        let s = |v: &Option<IntOrString>| match v {
            Some(IntOrString::Int(i)) => i.to_string(),
            Some(IntOrString::String(s)) => s.clone(),
            None => "25%".into(),
        };
        t.field(
            0,
            "RollingUpdateStrategy",
            format!(
                "{} max unavailable, {} max surge",
                s(&ru.max_unavailable),
                s(&ru.max_surge)
            ),
        );
    }
    pods::template(t, Some(&spec.template));
    if let Some(conditions) = status.conditions.as_ref().filter(|c| !c.is_empty()) {
        t.line(0, "Conditions:");
        t.line(1, "Type\tStatus\tReason");
        t.line(1, "----\t------\t------");
        for c in conditions {
            t.line(
                1,
                format!(
                    "{} \t{}\t{}",
                    c.type_,
                    c.status,
                    c.reason.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    let (new, old): (Vec<&ReplicaSet>, Vec<&ReplicaSet>) =
        owned.iter().partition(|rs| is_current(d, rs));
    // As kubectl: old ReplicaSets are listed while they still have replicas.
    let old: Vec<&ReplicaSet> = old
        .into_iter()
        .filter(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) != 0)
        .collect();
    t.field(0, "OldReplicaSets", replica_sets(&old));
    t.field(0, "NewReplicaSet", replica_sets(&new));
}

/// Whether `rs` runs the Deployment's current template: it carries the Deployment's revision,
/// or (before the controller has numbered it) its template is the Deployment's plus the
/// `pod-template-hash` label.
pub fn is_current(d: &Deployment, rs: &ReplicaSet) -> bool {
    const REVISION: &str = "deployment.kubernetes.io/revision";
    let revision = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned()
    };
    if let (Some(want), Some(have)) = (revision(&d.metadata), revision(&rs.metadata)) {
        return want == have;
    }
    let Some(spec) = &d.spec else { return false };
    let Some(mut template) = rs.spec.as_ref().and_then(|s| s.template.clone()) else {
        return false;
    };
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove("pod-template-hash");
    }
    let normalize = |v: serde_json::Value| {
        // Absent and empty maps mean the same.
        let mut v = v;
        if v["metadata"]["labels"]
            .as_object()
            .is_some_and(|m| m.is_empty())
        {
            v["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
        v
    };
    let want = normalize(serde_json::to_value(&spec.template).unwrap_or_default());
    let have = normalize(serde_json::to_value(&template).unwrap_or_default());
    want == have
}

fn replica_sets(list: &[&ReplicaSet]) -> String {
    if list.is_empty() {
        return "<none>".into();
    }
    list.iter()
        .map(|rs| {
            format!(
                "{} ({}/{} replicas created)",
                rs.metadata.name.as_deref().unwrap_or_default(),
                rs.status.as_ref().map_or(0, |s| s.replicas),
                rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A ReplicaSet with the phases of the pods it controls.
pub fn replica_set(t: &mut Text, rs: &ReplicaSet, pods: &[Pod]) {
    let meta = &rs.metadata;
    let spec = rs.spec.clone().unwrap_or_default();
    let status = rs.status.clone().unwrap_or_default();
    t.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    t.field(
        0,
        "Namespace",
        meta.namespace.as_deref().unwrap_or_default(),
    );
    t.field(0, "Selector", text::selector(Some(&spec.selector)));
    t.map(0, "Labels", meta.labels.as_ref());
    t.annotations(0, "Annotations", meta);
    if let Some(c) = pods::controlled_by(meta) {
        t.field(0, "Controlled By", c);
    }
    t.field(
        0,
        "Replicas",
        format!(
            "{} current / {} desired",
            status.replicas,
            spec.replicas.unwrap_or(1)
        ),
    );
    let count = |phase: &str| {
        pods.iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase))
            .count()
    };
    t.field(
        0,
        "Pods Status",
        format!(
            "{} Running / {} Waiting / {} Succeeded / {} Failed",
            count("Running"),
            count("Pending"),
            count("Succeeded"),
            count("Failed")
        ),
    );
    pods::template(t, spec.template.as_ref());
    if let Some(conditions) = status.conditions.as_ref().filter(|c| !c.is_empty()) {
        t.line(0, "Conditions:");
        t.line(1, "Type\tStatus\tReason");
        t.line(1, "----\t------\t------");
        for c in conditions {
            t.line(
                1,
                format!(
                    "{} \t{}\t{}",
                    c.type_,
                    c.status,
                    c.reason.as_deref().unwrap_or_default()
                ),
            );
        }
    }
}

/// A Job: its settings, times and pod counts.
pub fn job(t: &mut Text, job: &Job) {
    let meta = &job.metadata;
    let spec = job.spec.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    t.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    t.field(
        0,
        "Namespace",
        meta.namespace.as_deref().unwrap_or_default(),
    );
    t.field(0, "Selector", text::selector(spec.selector.as_ref()));
    t.map(0, "Labels", meta.labels.as_ref());
    t.annotations(0, "Annotations", meta);
    if let Some(c) = pods::controlled_by(meta) {
        t.field(0, "Controlled By", c);
    }
    if let Some(p) = spec.parallelism {
        t.field(0, "Parallelism", p);
    }
    match spec.completions {
        Some(c) => t.field(0, "Completions", c),
        None => t.field(0, "Completions", "<unset>"),
    }
    if let Some(mode) = &spec.completion_mode {
        t.field(0, "Completion Mode", mode);
    }
    if let Some(s) = spec.suspend {
        t.field(0, "Suspend", s);
    }
    if let Some(b) = spec.backoff_limit {
        t.field(0, "Backoff Limit", b);
    }
    if let Some(ttl) = spec.ttl_seconds_after_finished {
        t.field(0, "TTL Seconds After Finished", ttl);
    }
    if let Some(start) = &status.start_time {
        t.field(0, "Start Time", text::time(start));
    }
    if let Some(done) = &status.completion_time {
        t.field(0, "Completed At", text::time(done));
    }
    if let (Some(start), Some(done)) = (&status.start_time, &status.completion_time) {
        t.field(
            0,
            "Duration",
            skiff_api::age::human_duration((done.0 - start.0).get_seconds()),
        );
    }
    if let Some(d) = spec.active_deadline_seconds {
        t.field(0, "Active Deadline Seconds", format!("{d}s"));
    }
    let (active, succeeded, failed) = (
        status.active.unwrap_or(0),
        status.succeeded.unwrap_or(0),
        status.failed.unwrap_or(0),
    );
    match status.ready {
        Some(ready) => t.field(
            0,
            "Pods Statuses",
            format!("{active} Active ({ready} Ready) / {succeeded} Succeeded / {failed} Failed"),
        ),
        None => t.field(
            0,
            "Pods Statuses",
            format!("{active} Active / {succeeded} Succeeded / {failed} Failed"),
        ),
    }
    if spec.completion_mode.as_deref() == Some("Indexed") {
        let done = status.completed_indexes.as_deref().unwrap_or_default();
        t.field(
            0,
            "Completed Indexes",
            if done.is_empty() { "<none>" } else { done },
        );
    }
    pods::template(t, Some(&spec.template));
}

/// A CronJob: its schedule and policies, the job it makes, its last run and active jobs.
pub fn cron_job(t: &mut Text, cj: &CronJob) {
    let meta = &cj.metadata;
    let spec = cj.spec.clone().unwrap_or_default();
    let status = cj.status.clone().unwrap_or_default();
    let unset = |v: Option<i32>| v.map_or_else(|| "<unset>".into(), |v| v.to_string());
    t.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    t.field(
        0,
        "Namespace",
        meta.namespace.as_deref().unwrap_or_default(),
    );
    t.map(0, "Labels", meta.labels.as_ref());
    t.annotations(0, "Annotations", meta);
    t.field(0, "Schedule", &spec.schedule);
    t.field(
        0,
        "Concurrency Policy",
        spec.concurrency_policy.as_deref().unwrap_or_default(),
    );
    t.field(
        0,
        "Suspend",
        match spec.suspend {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        },
    );
    t.field(
        0,
        "Successful Job History Limit",
        unset(spec.successful_jobs_history_limit),
    );
    t.field(
        0,
        "Failed Job History Limit",
        unset(spec.failed_jobs_history_limit),
    );
    t.field(
        0,
        "Starting Deadline Seconds",
        spec.starting_deadline_seconds
            .map_or_else(|| "<unset>".into(), |s| format!("{s}s")),
    );
    job_template(t, &spec.job_template);
    t.field(
        0,
        "Last Schedule Time",
        status
            .last_schedule_time
            .as_ref()
            .map_or_else(|| "<unset>".into(), text::time),
    );
    let active: Vec<String> = status
        .active
        .iter()
        .flatten()
        .filter_map(|j| j.name.clone())
        .collect();
    t.field(
        0,
        "Active Jobs",
        if active.is_empty() {
            "<none>".into()
        } else {
            active.join(", ")
        },
    );
}

fn job_template(t: &mut Text, template: &JobTemplateSpec) {
    let spec = template.spec.clone().unwrap_or_default();
    let unset = |v: Option<i32>| v.map_or_else(|| "<unset>".into(), |v| v.to_string());
    t.field(
        0,
        "Selector",
        match &spec.selector {
            Some(s) => text::selector(Some(s)),
            None => "<unset>".into(),
        },
    );
    t.field(0, "Parallelism", unset(spec.parallelism));
    t.field(0, "Completions", unset(spec.completions));
    if let Some(d) = spec.active_deadline_seconds {
        t.field(0, "Active Deadline Seconds", format!("{d}s"));
    }
    pods::template(t, Some(&spec.template));
}

//! CronJobs (`batch/v1`): create a Job at every time the schedule names.
//!
//! Schedules are cron's five fields or an `@`-macro ([`skiff_api::cron::Schedule`]), read in
//! `spec.timeZone` (the tz database) or, without one, in the control plane's local time zone,
//! as upstream's controller manager does. The controller works at minute granularity: at each
//! wake-up it starts the latest missed run (never older than `startingDeadlineSeconds`), then
//! sleeps until the next one. Jobs are named `<cronjob>-<minutes since the epoch>` and carry
//! the `batch.kubernetes.io/cronjob-scheduled-timestamp` annotation, so a run is created at
//! most once. `concurrencyPolicy` Forbid skips a run while one is active, Replace deletes the
//! active ones first. Finished Jobs are kept up to `successfulJobsHistoryLimit` /
//! `failedJobsHistoryLimit`. Local times that a daylight saving change skips never fire;
//! ones it repeats fire once, at the earlier instant.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan as _};
use serde_json::{Value, json};
use skiff_api::cron::Schedule;

use super::job::jobs;
use super::owner_ref;
use super::runner::{Action, Key, Reconciler};
use crate::api::resources::ResourceDef;
use crate::api::{Api, ApiError, DeleteOptions, ListOptions, WriteOptions, object, resources};
use crate::clock;

const COMPONENT: &str = "cronjob-controller";
/// The annotation naming the time a Job was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed runs beyond this many get a warning, as upstream.
const TOO_MANY_MISSED: usize = 100;

/// The CronJob controller.
pub struct CronJobs;

fn cronjobs() -> &'static ResourceDef {
    resources::find("batch", "v1", "cronjobs").expect("cronjobs are served")
}

impl Reconciler for CronJobs {
    fn primary(&self) -> &'static ResourceDef {
        cronjobs()
    }

    fn owned(&self) -> Vec<&'static ResourceDef> {
        vec![jobs()]
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

/// The first time after `after` that `schedule` names, in `tz`. `None` when there is none
/// within nine years (a February 30th, say).
pub fn next_after(schedule: &Schedule, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    let local = after.to_zoned(tz.clone()).datetime();
    let mut dt = local
        .with()
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .ok()?
        .checked_add(1.minute())
        .ok()?;
    let last_year = dt.year() + 9;
    while dt.year() <= last_year {
        if schedule.months & (1 << dt.month()) == 0 {
            dt = dt
                .first_of_month()
                .date()
                .checked_add(1.month())
                .ok()?
                .into();
            continue;
        }
        let dom = schedule.days_of_month & (1 << dt.day()) != 0;
        let dow = schedule.days_of_week & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        let day = if schedule.day_or {
            dom || dow
        } else {
            dom && dow
        };
        if !day {
            dt = dt.date().tomorrow().ok()?.into();
            continue;
        }
        if schedule.hours & (1 << dt.hour()) == 0 {
            dt = start_of_hour(dt)?.checked_add(1.hour()).ok()?;
            continue;
        }
        if schedule.minutes & (1 << dt.minute()) == 0 {
            dt = dt.checked_add(1.minute()).ok()?;
            continue;
        }
        let ambiguous = tz.to_ambiguous_timestamp(dt);
        if !matches!(ambiguous.offset(), AmbiguousOffset::Gap { .. })
            && let Ok(ts) = ambiguous.earlier()
            && ts > after
        {
            return Some(ts);
        }
        dt = dt.checked_add(1.minute()).ok()?;
    }
    None
}

fn start_of_hour(dt: DateTime) -> Option<DateTime> {
    dt.with()
        .minute(0)
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .ok()
}

/// The latest scheduled time in (`earliest`, `now`], with the number of such times (counted
/// up to `TOO_MANY_MISSED + 1`: past that only the latest matters), and the first one after
/// `now`. The work is bounded whatever `earliest` is (a status may say year 1).
pub fn missed(
    schedule: &Schedule,
    earliest: Timestamp,
    now: Timestamp,
    tz: &TimeZone,
) -> (Option<Timestamp>, usize, Option<Timestamp>) {
    let (mut latest, mut count) = (None, 0);
    let mut t = next_after(schedule, earliest, tz);
    while let Some(at) = t.filter(|at| *at <= now) {
        latest = Some(at);
        count += 1;
        if count > TOO_MANY_MISSED {
            // Look back from `now` over a window that doubles until it holds a run: the
            // half before held none, so what is left to walk is about as short as the gaps.
            let mut back = 60i64;
            t = loop {
                let from = clock::saturating_add_seconds(now, back.saturating_neg()).max(at);
                match next_after(schedule, from, tz) {
                    Some(x) if x <= now || from == at => break Some(x),
                    _ => back = back.saturating_mul(2),
                }
            };
            while let Some(at) = t.filter(|at| *at <= now) {
                latest = Some(at);
                t = next_after(schedule, at, tz);
            }
            break;
        }
        t = next_after(schedule, at, tz);
    }
    (latest, count, t)
}

fn time(obj: &Value, pointer: &str) -> Option<Timestamp> {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(object::parse_time)
}

fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn job_condition(job: &Value) -> Option<&'static str> {
    let conds = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)?;
    ["Complete", "Failed"].into_iter().find(|t| {
        conds
            .iter()
            .any(|c| c["type"] == *t && c["status"] == "True")
    })
}

fn reference(job: &Value) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "name": object::name(job), "namespace": object::namespace(job),
        "uid": object::uid(job), "resourceVersion": object::meta_str(job, "resourceVersion"),
    })
}

async fn sync(api: &Api, (ns, name): &Key, cj: Option<Arc<Value>>) -> Result<Action, ApiError> {
    let Some(cj) = cj else {
        return Ok(Action::Await);
    };
    if object::is_terminating(&cj) {
        return Ok(Action::Await);
    }
    let uid = object::uid(&cj);
    let now = Timestamp::now();
    let was_active: Vec<String> = cj
        .pointer("/status/active")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(str::to_string))
        .collect();
    let mine: Vec<Value> = api
        .list(jobs(), Some(ns), &ListOptions::default())?
        .items
        .into_iter()
        .filter(|j| {
            j.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|r| r["controller"] == true && r["uid"] == uid)
        })
        .collect();

    let mut active: Vec<Value> = Vec::new();
    let mut last_successful = time(&cj, "/status/lastSuccessfulTime");
    let (mut succeeded, mut failed) = (Vec::new(), Vec::new());
    for job in &mine {
        match job_condition(job) {
            None if !object::is_terminating(job) => active.push(job.clone()),
            None => {}
            Some(outcome) => {
                if was_active.iter().any(|u| u == object::uid(job)) {
                    let message = format!(
                        "Saw completed job: {}, condition: {outcome}",
                        object::name(job)
                    );
                    crate::events::record(
                        api,
                        &cj,
                        "Normal",
                        "SawCompletedJob",
                        &message,
                        COMPONENT,
                    )
                    .await;
                }
                if outcome == "Complete" {
                    if let Some(t) = time(job, "/status/completionTime") {
                        last_successful = Some(last_successful.map_or(t, |l| l.max(t)));
                    }
                    succeeded.push(job);
                } else {
                    failed.push(job);
                }
            }
        }
    }

    // History: the oldest finished Jobs beyond the limits go, with their pods.
    for (list, field, default) in [
        (&mut succeeded, "successfulJobsHistoryLimit", 3),
        (&mut failed, "failedJobsHistoryLimit", 1),
    ] {
        let limit = cj
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_i64)
            .unwrap_or(default)
            .max(0) as usize;
        if list.len() > limit {
            list.sort_by_key(|j| {
                time(j, "/status/startTime").or_else(|| time(j, "/metadata/creationTimestamp"))
            });
            let excess = list.len() - limit;
            for job in &list[..excess] {
                delete_job(api, &cj, job).await?;
            }
        }
    }

    let mut last_schedule = time(&cj, "/status/lastScheduleTime");
    let mut after = None;
    let suspended = cj.pointer("/spec/suspend") == Some(&json!(true));
    if !suspended && let Some((due, next)) = plan_run(api, &cj, now).await {
        after = next.map(|n| n.duration_since(now).unsigned_abs());
        if let Some(due) = due {
            let policy = cj
                .pointer("/spec/concurrencyPolicy")
                .and_then(Value::as_str)
                .unwrap_or("Allow");
            if policy == "Forbid" && !active.is_empty() {
                crate::events::record(
                    api,
                    &cj,
                    "Normal",
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid",
                    COMPONENT,
                )
                .await;
            } else {
                if policy == "Replace" {
                    for job in std::mem::take(&mut active) {
                        delete_job(api, &cj, &job).await?;
                    }
                }
                if let Some(job) = start_job(api, &cj, due).await? {
                    if job_condition(&job).is_none()
                        && !active.iter().any(|a| object::uid(a) == object::uid(&job))
                    {
                        active.push(job);
                    }
                    last_schedule = Some(due);
                }
            }
        }
    }

    let refs: Vec<Value> = active.iter().map(reference).collect();
    let status = json!({
        "active": if refs.is_empty() { Value::Null } else { json!(refs) },
        "lastScheduleTime": last_schedule.map(format_time),
        "lastSuccessfulTime": last_successful.map(format_time),
    });
    let current = cj.get("status").cloned().unwrap_or_default();
    let changed = ["active", "lastScheduleTime", "lastSuccessfulTime"]
        .iter()
        .any(|f| {
            let (old, new) = (&current[*f], &status[*f]);
            match (old, new) {
                // Compare the jobs, not their resourceVersions.
                (Value::Array(a), Value::Array(b)) => {
                    a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x["uid"] != y["uid"])
                }
                _ => old != new,
            }
        });
    if changed && !super::write_status(api, cronjobs(), ns, name, status).await? {
        return Ok(Action::Await);
    }
    Ok(after.map_or(Action::Await, |d| {
        Action::RequeueAfter(d + Duration::from_millis(100))
    }))
}

/// The run that is due now (if any) and the next scheduled time; `None` when the schedule or
/// time zone cannot be used (reported as an event).
async fn plan_run(
    api: &Api,
    cj: &Value,
    now: Timestamp,
) -> Option<(Option<Timestamp>, Option<Timestamp>)> {
    let text = cj
        .pointer("/spec/schedule")
        .and_then(Value::as_str)
        .unwrap_or("");
    let schedule = match Schedule::parse(text) {
        Ok(s) => s,
        Err(e) => {
            let message = format!("unparseable schedule: {text:?} : {e}");
            crate::events::record(
                api,
                cj,
                "Warning",
                "UnparseableSchedule",
                &message,
                COMPONENT,
            )
            .await;
            return None;
        }
    };
    let tz = match cj.pointer("/spec/timeZone").and_then(Value::as_str) {
        Some(name) => match TimeZone::get(name) {
            Ok(tz) => tz,
            Err(_) => {
                let message = format!("invalid timeZone: {name:?}");
                crate::events::record(api, cj, "Warning", "UnknownTimeZone", &message, COMPONENT)
                    .await;
                return None;
            }
        },
        None => TimeZone::system(),
    };
    let (due, count, next) = missed(&schedule, earliest_run(cj, now), now, &tz);
    if count > TOO_MANY_MISSED {
        let message = format!(
            "too many missed start times: {count}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
        );
        crate::events::record(
            api,
            cj,
            "Warning",
            "TooManyMissedTimes",
            &message,
            COMPONENT,
        )
        .await;
    }
    Some((due, next))
}

/// After when a missed run may still start: the last run (or the CronJob's creation), but no
/// earlier than `startingDeadlineSeconds` ago (a deadline longer than all of time is none).
fn earliest_run(cj: &Value, now: Timestamp) -> Timestamp {
    let earliest = time(cj, "/status/lastScheduleTime")
        .or_else(|| time(cj, "/metadata/creationTimestamp"))
        .unwrap_or(now);
    match cj
        .pointer("/spec/startingDeadlineSeconds")
        .and_then(Value::as_i64)
    {
        Some(deadline) => earliest.max(clock::saturating_add_seconds(
            now,
            deadline.max(0).saturating_neg(),
        )),
        None => earliest,
    }
}

/// The Job of the run scheduled at `due`, from the template.
pub fn job_for(cj: &Value, due: Timestamp, tz: &TimeZone) -> Value {
    let template = cj.pointer("/spec/jobTemplate").cloned().unwrap_or_default();
    let mut metadata = json!({
        "name": format!("{}-{}", object::name(cj), due.as_second().div_euclid(60)),
        "namespace": object::namespace(cj),
        "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
        "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
        "ownerReferences": [owner_ref(cj, cronjobs())],
    });
    metadata["annotations"][SCHEDULED_TIMESTAMP] = json!(
        due.to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    );
    if metadata["labels"].as_object().is_some_and(|l| l.is_empty()) {
        metadata.as_object_mut().map(|m| m.remove("labels"));
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
           "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}

/// Creates the Job for `due`; returns it (also when it existed already), or `None` when a Job
/// of that name belongs to someone else.
async fn start_job(api: &Api, cj: &Value, due: Timestamp) -> Result<Option<Value>, ApiError> {
    let tz = cj
        .pointer("/spec/timeZone")
        .and_then(Value::as_str)
        .and_then(|n| TimeZone::get(n).ok())
        .unwrap_or_else(TimeZone::system);
    let job = job_for(cj, due, &tz);
    let job_name = object::name(&job).to_string();
    let ns = object::namespace(cj);
    match api
        .create(jobs(), Some(ns), job, &WriteOptions::default())
        .await
    {
        Ok(w) => {
            let message = format!("Created job {job_name}");
            crate::events::record(api, cj, "Normal", "SuccessfulCreate", &message, COMPONENT).await;
            Ok(Some(w.object))
        }
        Err(e) if e.code == 409 => {
            let existing = api.get(jobs(), Some(ns), &job_name)?;
            let ours = existing
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|r| r["uid"] == object::uid(cj));
            Ok(ours.then_some(existing))
        }
        Err(e) => {
            let message = format!("Error creating job: {}", e.message);
            crate::events::record(api, cj, "Warning", "FailedCreate", &message, COMPONENT).await;
            Err(e)
        }
    }
}

async fn delete_job(api: &Api, cj: &Value, job: &Value) -> Result<(), ApiError> {
    let opts = DeleteOptions {
        propagation_policy: Some("Background".into()),
        ..Default::default()
    };
    let job_name = object::name(job);
    match api
        .delete(jobs(), Some(object::namespace(job)), job_name, &opts)
        .await
    {
        Ok(_) => {
            let message = format!("Deleted job {job_name}");
            crate::events::record(api, cj, "Normal", "SuccessfulDelete", &message, COMPONENT).await;
            Ok(())
        }
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::api::{Config, PatchType, Target};

    /// One reconcile of `key`, given its object as the runner gives it.
    async fn sync_now(api: &Api, key: &Key) -> Result<Action, ApiError> {
        let object = api.get_shared(cronjobs(), Some(&key.0), &key.1).ok();
        sync(api, key, object).await
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(schedule: &str, after: &str, tz: &str) -> String {
        let tz = TimeZone::get(tz).unwrap();
        let s = Schedule::parse(schedule).unwrap();
        next_after(&s, ts(after), &tz)
            .map(format_time)
            .unwrap_or_default()
    }

    #[test]
    fn next_times_follow_the_fields() {
        assert_eq!(
            next("*/15 * * * *", "2025-03-05T10:07:30Z", "UTC"),
            "2025-03-05T10:15:00Z"
        );
        // Strictly after: a time on the schedule moves on to the next one.
        assert_eq!(
            next("*/15 * * * *", "2025-03-05T10:15:00Z", "UTC"),
            "2025-03-05T10:30:00Z"
        );
        assert_eq!(
            next("* * * * *", "2025-12-31T23:59:59Z", "UTC"),
            "2026-01-01T00:00:00Z"
        );
        // 2025-03-07 is a Friday.
        assert_eq!(
            next("0 9 * * MON-FRI", "2025-03-07T10:00:00Z", "UTC"),
            "2025-03-10T09:00:00Z"
        );
        assert_eq!(
            next("30 6 1,15 JAN,JUL *", "2025-01-15T07:00:00Z", "UTC"),
            "2025-07-01T06:30:00Z"
        );
        assert_eq!(
            next("@yearly", "2025-03-05T10:07:30Z", "UTC"),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@monthly", "2025-03-05T10:07:30Z", "UTC"),
            "2025-04-01T00:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2025-03-05T10:07:30Z", "UTC"),
            "2025-03-09T00:00:00Z"
        );
        assert_eq!(
            next("@hourly", "2025-03-05T10:07:30Z", "UTC"),
            "2025-03-05T11:00:00Z"
        );
        assert_eq!(
            next("0 0 29 2 *", "2025-03-01T00:00:00Z", "UTC"),
            "2028-02-29T00:00:00Z"
        );
        assert_eq!(next("0 0 30 2 *", "2025-03-01T00:00:00Z", "UTC"), "");
        // Either day field may match when both are restricted: the 13th or a Friday.
        assert_eq!(
            next("0 0 13 * 5", "2025-03-01T00:00:00Z", "UTC"),
            "2025-03-07T00:00:00Z"
        );
    }

    #[test]
    fn time_zones_and_daylight_saving_changes() {
        // 09:00 in New York is 14:00 UTC in winter, 13:00 in summer.
        assert_eq!(
            next("0 9 * * *", "2025-01-10T12:00:00Z", "America/New_York"),
            "2025-01-10T14:00:00Z"
        );
        assert_eq!(
            next("0 9 * * *", "2025-07-10T12:00:00Z", "America/New_York"),
            "2025-07-10T13:00:00Z"
        );
        // 02:30 does not exist on 2025-03-09 in New York: that day is skipped.
        assert_eq!(
            next("30 2 * * *", "2025-03-09T05:00:00Z", "America/New_York"),
            "2025-03-10T06:30:00Z"
        );
        // 01:30 happens twice on 2025-11-02: the run is at the first one only.
        assert_eq!(
            next("30 1 * * *", "2025-11-02T04:00:00Z", "America/New_York"),
            "2025-11-02T05:30:00Z"
        );
        assert_eq!(
            next("30 1 * * *", "2025-11-02T05:30:00Z", "America/New_York"),
            "2025-11-03T06:30:00Z"
        );
    }

    #[test]
    fn missed_runs_start_the_latest_one() {
        let s = Schedule::parse("* * * * *").unwrap();
        let (due, count, next) = missed(
            &s,
            ts("2025-03-05T10:00:00Z"),
            ts("2025-03-05T10:05:30Z"),
            &TimeZone::UTC,
        );
        assert_eq!(
            due.map(format_time).as_deref(),
            Some("2025-03-05T10:05:00Z")
        );
        assert_eq!(count, 5);
        assert_eq!(
            next.map(format_time).as_deref(),
            Some("2025-03-05T10:06:00Z")
        );
        let (due, count, _) = missed(
            &s,
            ts("2025-03-05T10:05:00Z"),
            ts("2025-03-05T10:05:30Z"),
            &TimeZone::UTC,
        );
        assert_eq!((due, count), (None, 0));
    }

    #[test]
    fn extreme_deadlines_and_histories_stay_bounded() {
        use crate::clock::tests::EXTREMES;
        let now = ts("2025-03-05T10:05:30Z");
        let every_minute = Schedule::parse("* * * * *").unwrap();
        let yearly = Schedule::parse("0 0 1 1 *").unwrap();
        let last_runs = [
            json!("2025-03-05T10:00:00Z"),
            json!("0001-01-01T00:00:00Z"),
            json!("9999-12-31T23:59:59Z"),
            json!("not a time"),
            Value::Null,
        ];
        for &deadline in EXTREMES {
            for last in &last_runs {
                let cj = json!({"metadata": {"creationTimestamp": "2025-01-01T00:00:00Z"},
                    "spec": {"startingDeadlineSeconds": deadline},
                    "status": {"lastScheduleTime": last}});
                let earliest = earliest_run(&cj, now);
                for schedule in [&every_minute, &yearly] {
                    let (due, count, next) = missed(schedule, earliest, now, &TimeZone::UTC);
                    assert!(count <= TOO_MANY_MISSED + 1);
                    assert!(
                        due.is_none_or(|d| d > earliest && d <= now),
                        "{deadline} {last}"
                    );
                    assert!(next.is_none_or(|n| n > now));
                }
            }
        }
        // Missed since year 1, every minute: the latest run is found without walking them all.
        let (due, count, next) = missed(
            &every_minute,
            ts("0001-01-01T00:00:00Z"),
            now,
            &TimeZone::UTC,
        );
        assert_eq!(count, TOO_MANY_MISSED + 1);
        assert_eq!(
            due.map(format_time).as_deref(),
            Some("2025-03-05T10:05:00Z")
        );
        assert_eq!(
            next.map(format_time).as_deref(),
            Some("2025-03-05T10:06:00Z")
        );
        let (due, _, _) = missed(&yearly, ts("0001-01-01T00:00:00Z"), now, &TimeZone::UTC);
        assert_eq!(
            due.map(format_time).as_deref(),
            Some("2025-01-01T00:00:00Z")
        );
        // A deadline of 30 s skips runs older than that; one of i64::MAX s skips none.
        let cj = |d: i64| {
            json!({"metadata": {"creationTimestamp": "2025-03-05T10:00:00Z"},
                                  "spec": {"startingDeadlineSeconds": d}})
        };
        assert_eq!(
            format_time(earliest_run(&cj(30), now)),
            "2025-03-05T10:05:00Z"
        );
        assert_eq!(
            format_time(earliest_run(&cj(i64::MAX), now)),
            "2025-03-05T10:00:00Z"
        );
        assert_eq!(
            format_time(earliest_run(&cj(i64::MIN), now)),
            "2025-03-05T10:05:30Z"
        );
    }

    #[test]
    fn jobs_are_named_for_their_minute() {
        let cj = json!({"metadata": {"name": "report", "namespace": "default", "uid": "u1"},
                        "spec": {"jobTemplate": {"metadata": {"labels": {"team": "a"}},
                                                 "spec": {"template": {"spec": {}}}}}});
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let job = job_for(&cj, ts("2025-03-05T10:07:00Z"), &tz);
        assert_eq!(
            job["metadata"]["name"],
            format!("report-{}", 1_741_169_220 / 60)
        );
        assert_eq!(
            job["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
            "2025-03-05T11:07:00+01:00"
        );
        assert_eq!(job["metadata"]["labels"]["team"], "a");
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        assert!(job["spec"]["template"].is_object());
    }

    async fn api() -> (Api, tempfile::TempDir) {
        Api::scratch(Config::default()).await
    }

    async fn set_status(api: &Api, res: &'static ResourceDef, name: &str, status: Value) {
        api.patch(
            res,
            Some("default"),
            name,
            PatchType::Merge,
            json!({ "status": status }),
            Target::Status,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }

    fn job_names(api: &Api) -> Vec<String> {
        let mut names: Vec<String> = api
            .list(jobs(), Some("default"), &ListOptions::default())
            .unwrap()
            .items
            .iter()
            .map(|j| object::name(j).to_string())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn cronjobs_start_due_runs_respect_concurrency_and_prune_history() {
        // The Job names below are for the current minute, and nothing may fall due between
        // creating the CronJob and its first sync: keep clear of the minute's end.
        if Timestamp::now().as_second().rem_euclid(60) >= 57 {
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        let (api, _dir) = api().await;
        let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
                        "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid",
                                 "successfulJobsHistoryLimit": 1,
                                 "jobTemplate": {"spec": {"template": {"spec": {
                                     "restartPolicy": "Never",
                                     "containers": [{"name": "c", "image": "compute:1.0"}]}}}}}});
        api.create(cronjobs(), Some("default"), cj, &WriteOptions::default())
            .await
            .unwrap();
        let key = ("default".to_string(), "tick".to_string());
        // Nothing is due right after creation; the next minute is.
        let Action::RequeueAfter(d) = sync_now(&api, &key).await.unwrap() else {
            panic!("no requeue for the next run");
        };
        assert!(d <= Duration::from_secs(61), "{d:?}");
        assert!(job_names(&api).is_empty());

        // As if the last run was three minutes ago: the latest missed minute starts.
        let now = Timestamp::now();
        let minute = now.as_second().div_euclid(60);
        let three_ago = format_time(Timestamp::from_second((minute - 3) * 60).unwrap());
        set_status(
            &api,
            cronjobs(),
            "tick",
            json!({"lastScheduleTime": three_ago}),
        )
        .await;
        sync_now(&api, &key).await.unwrap();
        let first = format!("tick-{minute}");
        assert_eq!(job_names(&api), std::slice::from_ref(&first));
        let status = api.get(cronjobs(), Some("default"), "tick").unwrap()["status"].clone();
        assert_eq!(status["active"][0]["name"], first.as_str());
        assert_eq!(
            status["lastScheduleTime"],
            format_time(Timestamp::from_second(minute * 60).unwrap())
        );

        // Forbid: while it runs, a due run does not start.
        set_status(
            &api,
            cronjobs(),
            "tick",
            json!({"lastScheduleTime": three_ago}),
        )
        .await;
        sync_now(&api, &key).await.unwrap();
        assert_eq!(job_names(&api), std::slice::from_ref(&first));

        // Once it completed, only the newest successful Job is kept.
        set_status(
            &api,
            jobs(),
            &first,
            json!({
            "completionTime": format_time(now),
            "conditions": [{"type": "Complete", "status": "True"}]}),
        )
        .await;
        let earlier = format!("tick-{}", minute - 10);
        let old = json!({"apiVersion": "batch/v1", "kind": "Job",
                         "metadata": {"name": earlier,
                                      "ownerReferences": [owner_ref(&api.get(cronjobs(), Some("default"), "tick").unwrap(), cronjobs())]},
                         "spec": {"template": {"spec": {"restartPolicy": "Never",
                                  "containers": [{"name": "c", "image": "compute:1.0"}]}}}});
        api.create(jobs(), Some("default"), old, &WriteOptions::default())
            .await
            .unwrap();
        set_status(
            &api,
            jobs(),
            &earlier,
            json!({
            "startTime": "2020-01-01T00:00:00Z",
            "completionTime": "2020-01-01T00:00:00Z",
            "conditions": [{"type": "Complete", "status": "True"}]}),
        )
        .await;
        let last = format_time(Timestamp::from_second(minute * 60).unwrap());
        set_status(&api, cronjobs(), "tick", json!({"lastScheduleTime": last})).await;
        sync_now(&api, &key).await.unwrap();
        let names = job_names(&api);
        assert!(!names.contains(&earlier), "{names:?}");
        assert_eq!(names, std::slice::from_ref(&first));
        let status = api.get(cronjobs(), Some("default"), "tick").unwrap()["status"].clone();
        assert_eq!(status["lastSuccessfulTime"], format_time(now));
        assert!(status.get("active").is_none_or(|a| {
            a.as_array()
                .is_none_or(|a| a.iter().all(|r| r["name"] != first.as_str()))
        }));
    }
}

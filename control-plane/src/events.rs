//! Events: what the in-process components tell users about the objects they act on
//! (`kubectl describe` and `kubectl get events` show them).
//!
//! Recording follows client-go's event correlator (tools/record/events_cache.go):
//! - the same event again (same source, involved object, type, reason and message) is one
//!   Event whose `count` grows and whose `lastTimestamp` moves, not a new object;
//! - many similar events (differing only in message: [`MAX_SIMILAR`] distinct messages within
//!   [`SIMILAR_WINDOW`]) are combined into one Event "(combined from similar events): ...",
//!   counted the same way.
//!
//! The Event of a repeated event is found by name: the name is derived from what makes events
//! the same, so it is found again after a restart too. Events expire after `--event-ttl`
//! (see [`crate::controllers::event_ttl`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::{Api, PatchType, Target, WriteOptions, object, resources};

/// Distinct messages of similar events before they are combined (client-go's maxEvents).
pub const MAX_SIMILAR: usize = 10;
/// The window in which similar events are counted (client-go's 600 s).
pub const SIMILAR_WINDOW: Duration = Duration::from_secs(600);
/// Similar-event records kept (client-go's LRU size).
const MAX_RECORDS: usize = 4096;

/// Records an Event about `involved` (any namespaced object) from `component`. Failing to
/// record one is logged and otherwise ignored, as in Kubernetes.
pub async fn record(
    api: &Api,
    involved: &Value,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = object::namespace(involved);
    let involved_ref = json!({
        "apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
        "namespace": ns, "name": object::name(involved),
        "uid": involved.pointer("/metadata/uid"),
    });
    // What makes events similar, and with the message what makes them the same.
    let similar = format!("{component}\0{involved_ref}\0{kind}\0{reason}");
    let (key, message) = if combine(api, &similar, message) {
        (
            similar.clone(),
            format!("(combined from similar events): {message}"),
        )
    } else {
        (format!("{similar}\0{message}"), message.to_string())
    };
    let name = format!("{}.{:016x}", object::name(involved), fnv1a(&key));
    let ts = object::now();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": involved_ref,
        "reason": reason, "message": message, "type": kind, "count": 1,
        "firstTimestamp": ts, "lastTimestamp": ts,
        "source": {"component": component},
        "reportingComponent": component,
    });
    if let Err(e) = write(api, ns, &name, event).await {
        tracing::debug!(%reason, error = %e.message, "cannot record event");
    }
}

/// Creates the Event, or counts one more occurrence on the one already there.
async fn write(api: &Api, ns: &str, name: &str, event: Value) -> crate::api::Result<()> {
    let events = resources::core("events");
    for _ in 0..4 {
        match api.get(events, Some(ns), name) {
            Ok(cur) => {
                let count = cur["count"].as_i64().unwrap_or(1).saturating_add(1);
                let patch = json!({
                    "metadata": {"resourceVersion": object::meta_str(&cur, "resourceVersion")},
                    "count": count, "lastTimestamp": event["lastTimestamp"],
                    "message": event["message"],
                });
                let written = api
                    .patch(
                        events,
                        Some(ns),
                        name,
                        PatchType::Merge,
                        patch,
                        Target::Main,
                        &WriteOptions::default(),
                    )
                    .await;
                match written {
                    Ok(_) => return Ok(()),
                    // Counted by someone else meanwhile, or expired: look again.
                    Err(e) if e.code == 409 || e.code == 404 => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.code == 404 => {
                match api
                    .create(events, Some(ns), event.clone(), &WriteOptions::default())
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) if e.code == 409 => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Distinct messages seen per similar-events key, per store (tests run several in one
/// process), within the window.
type Similar = HashMap<(usize, String), (Instant, HashSet<String>)>;

/// Notes `message` under `similar`; true once the events are to be combined.
fn combine(api: &Api, similar: &str, message: &str) -> bool {
    static SEEN: OnceLock<Mutex<Similar>> = OnceLock::new();
    let store = Arc::as_ptr(api.store()).cast::<()>() as usize;
    let now = Instant::now();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if seen.len() >= MAX_RECORDS {
        seen.retain(|_, (at, _)| now.duration_since(*at) < SIMILAR_WINDOW);
        if seen.len() >= MAX_RECORDS {
            seen.clear();
        }
    }
    let entry = seen
        .entry((store, similar.to_string()))
        .or_insert_with(|| (now, HashSet::new()));
    if now.duration_since(entry.0) >= SIMILAR_WINDOW {
        *entry = (now, HashSet::new());
    }
    entry.0 = now;
    if entry.1.len() < MAX_SIMILAR {
        entry.1.insert(message.to_string());
    }
    entry.1.len() >= MAX_SIMILAR
}

/// FNV-1a: a stable hash (names must come out the same after a restart and an upgrade).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::api::{Config, ListOptions};

    async fn api() -> (Api, tempfile::TempDir) {
        Api::scratch(Config::default()).await
    }

    fn events(api: &Api) -> Vec<Value> {
        api.list(
            resources::core("events"),
            Some("default"),
            &ListOptions::default(),
        )
        .unwrap()
        .items
    }

    fn pod(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")}})
    }

    #[tokio::test]
    async fn the_same_event_again_is_counted_on_one_event() {
        let (api, _dir) = api().await;
        for _ in 0..3 {
            record(
                &api,
                &pod("a"),
                "Warning",
                "BackOff",
                "restarting",
                "kubelet",
            )
            .await;
        }
        record(&api, &pod("a"), "Normal", "Pulled", "pulled", "kubelet").await;
        record(
            &api,
            &pod("b"),
            "Warning",
            "BackOff",
            "restarting",
            "kubelet",
        )
        .await;
        let all = events(&api);
        assert_eq!(all.len(), 3, "{all:?}");
        let backoff = all
            .iter()
            .find(|e| e["reason"] == "BackOff" && e["involvedObject"]["name"] == "a")
            .unwrap();
        assert_eq!(backoff["count"], 3);
        assert!(backoff["lastTimestamp"].as_str() >= backoff["firstTimestamp"].as_str());
        assert_eq!(backoff["message"], "restarting");
    }

    #[tokio::test]
    async fn many_similar_events_are_combined() {
        let (api, _dir) = api().await;
        for i in 0..15 {
            let msg = format!("failed to pull attempt {i}");
            record(&api, &pod("a"), "Warning", "Failed", &msg, "kubelet").await;
        }
        let all = events(&api);
        // Nine distinct ones, then one combined Event counting the rest.
        assert_eq!(all.len(), MAX_SIMILAR, "{all:?}");
        let combined = all
            .iter()
            .find(|e| {
                e["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("(combined from similar events): ")
            })
            .expect("a combined event");
        assert_eq!(combined["count"], 15 - (MAX_SIMILAR - 1));
        assert_eq!(
            combined["message"],
            "(combined from similar events): failed to pull attempt 14"
        );
    }
}

//! Event expiry: an Event is deleted `--event-ttl` after it was last observed, as
//! kube-apiserver stores Events under a lease of that length renewed on every update.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiError, DeleteOptions, ListOptions, object, resources};

/// When an Event was last observed: its last timestamp, as the writers of each API version
/// set it, or else its creation.
fn last_seen(event: &Value) -> Option<jiff::Timestamp> {
    ["/lastTimestamp", "/series/lastObservedTime", "/eventTime"]
        .iter()
        .filter_map(|p| event.pointer(p).and_then(Value::as_str))
        .chain([object::meta_str(event, "creationTimestamp")])
        .find_map(object::parse_time)
}

/// Whether `event` has outlived `ttl` at `now`.
fn expired(event: &Value, ttl: Duration, now: jiff::Timestamp) -> bool {
    let Ok(ttl) = jiff::SignedDuration::try_from(ttl) else {
        return false;
    };
    last_seen(event)
        .and_then(|t| t.checked_add(ttl).ok())
        .is_some_and(|deadline| deadline <= now)
}

/// Deletes expired Events until `stop`, looking every tenth of the TTL (at most every minute).
pub async fn run(api: Api, ttl: Duration, stop: CancellationToken) {
    let period = (ttl / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = pass(&api, ttl).await {
            tracing::warn!(error = %e.message, "expiring events failed");
        }
    }
}

async fn pass(api: &Api, ttl: Duration) -> Result<(), ApiError> {
    let events = resources::core("events");
    let now = jiff::Timestamp::now();
    for event in api.list(events, None, &ListOptions::default())?.items {
        if !expired(&event, ttl, now) {
            continue;
        }
        let opts = DeleteOptions {
            // Not one that was counted again since the list.
            precondition_rv: Some(object::meta_str(&event, "resourceVersion").to_string()),
            ..Default::default()
        };
        match api
            .delete(
                events,
                Some(object::namespace(&event)),
                object::name(&event),
                &opts,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_expire_a_ttl_after_they_were_last_seen() {
        let now: jiff::Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let hour = Duration::from_secs(3600);
        let counted = json!({"metadata": {"creationTimestamp": "2026-01-01T10:00:00Z"},
                             "lastTimestamp": "2026-01-01T11:30:00Z"});
        assert!(!expired(&counted, hour, now), "seen again half an hour ago");
        let old = json!({"metadata": {"creationTimestamp": "2026-01-01T10:00:00Z"},
                         "lastTimestamp": "2026-01-01T11:00:00Z"});
        assert!(expired(&old, hour, now));
        let bare = json!({"metadata": {"creationTimestamp": "2026-01-01T10:59:59Z"}});
        assert!(expired(&bare, hour, now));
        let series = json!({"metadata": {"creationTimestamp": "2026-01-01T09:00:00Z"},
                            "eventTime": "2026-01-01T09:00:00.000000Z",
                            "series": {"count": 4, "lastObservedTime": "2026-01-01T11:59:00.000000Z"}});
        assert!(!expired(&series, hour, now));
        assert!(!expired(&json!({}), hour, now), "no time, no judgement");
    }
}

//! Container probes, run as the kubelet runs them: `startupProbe` first, and only once it has
//! succeeded `livenessProbe` and `readinessProbe`, each every `periodSeconds` after
//! `initialDelaySeconds` from the container's start, each attempt bounded by
//! `timeoutSeconds`, a result changing after `successThreshold` or `failureThreshold`
//! attempts in a row. Readiness decides whether the container is ready; a failed startup or
//! liveness probe has its container restarted. Probes are `httpGet` (a 200-399 answer passes)
//! or `tcpSocket` (a connection passes) against the pod's address or the probe's `host`; exec
//! probes are refused when the pod is admitted, as Wasm containers have no processes.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Startup, Kind::Liveness, Kind::Readiness];

    /// As events name it: "Liveness probe failed: ...".
    pub(crate) fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    /// As the Killing event names it: "failed liveness probe".
    pub(crate) fn lower(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }

    fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Startup => c.startup_probe.as_ref(),
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
        }
    }
}

/// One probe of one container attempt.
#[derive(Debug)]
struct Prober {
    kind: Kind,
    spec: Probe,
    next: Instant,
    in_flight: bool,
    /// The current result, once a threshold was reached.
    passing: Option<bool>,
    /// Consecutive attempts with the same outcome, and that outcome.
    run: (bool, u32),
    /// After a failed liveness or startup probe: nothing more until the container restarts.
    on_hold: bool,
}

impl Prober {
    fn seconds(v: Option<i32>, default: i32) -> Duration {
        Duration::from_secs(v.unwrap_or(default).max(0) as u64)
    }
    fn period(&self) -> Duration {
        Self::seconds(self.spec.period_seconds, 10).max(Duration::from_secs(1))
    }
    fn timeout(&self) -> Duration {
        Self::seconds(self.spec.timeout_seconds, 1).max(Duration::from_secs(1))
    }
    fn success_threshold(&self) -> u32 {
        self.spec.success_threshold.unwrap_or(1).max(1) as u32
    }
    fn failure_threshold(&self) -> u32 {
        self.spec.failure_threshold.unwrap_or(3).max(1) as u32
    }
}

/// What a probe attempt means for its container.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It passed, or its failure changes nothing yet.
    Fine,
    /// It failed (an `Unhealthy` event); the container stays.
    Failed(String),
    /// It failed past its threshold: restart the container, giving it this grace period
    /// (the probe's own `terminationGracePeriodSeconds`, if set).
    Restart(String, Option<Duration>),
}

/// The probes of one container attempt and what they concluded.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// The container attempt these results belong to.
    container_id: Option<String>,
    probers: Vec<Prober>,
}

/// A probe to run now.
pub(crate) struct Due {
    pub kind: Kind,
    pub container_id: String,
    pub probe: Probe,
    pub timeout: Duration,
}

impl Health {
    /// Follows the container: a new attempt (another id) starts its probes afresh, with
    /// initial delays counted from now.
    pub(crate) fn follow(&mut self, container: &Container, running: Option<&str>) {
        if self.container_id.as_deref() == running {
            return;
        }
        self.container_id = running.map(str::to_string);
        let now = Instant::now();
        self.probers = match running {
            None => Vec::new(),
            Some(_) => Kind::ALL
                .iter()
                .filter_map(|kind| {
                    let spec = kind.of(container)?.clone();
                    let delay = Prober::seconds(spec.initial_delay_seconds, 0);
                    Some(Prober {
                        kind: *kind,
                        spec,
                        next: now + delay,
                        in_flight: false,
                        passing: None,
                        run: (false, 0),
                        on_hold: false,
                    })
                })
                .collect(),
        };
    }

    fn prober(&self, kind: Kind) -> Option<&Prober> {
        self.probers.iter().find(|p| p.kind == kind)
    }

    /// Running, and its startup probe (if any) has succeeded.
    pub(crate) fn started(&self) -> bool {
        self.container_id.is_some()
            && self
                .prober(Kind::Startup)
                .is_none_or(|p| p.passing == Some(true))
    }

    /// Started, and its readiness probe (if any) passes.
    pub(crate) fn ready(&self) -> bool {
        self.started()
            && self
                .prober(Kind::Readiness)
                .is_none_or(|p| p.passing == Some(true))
    }

    /// The probes due now, marked as running. Until the container has started only its
    /// startup probe runs.
    pub(crate) fn due(&mut self) -> Vec<Due> {
        let Some(id) = self.container_id.clone() else {
            return Vec::new();
        };
        let started = self.started();
        let now = Instant::now();
        let mut out = Vec::new();
        for p in &mut self.probers {
            let waiting = match p.kind {
                // Once started, the startup probe is done.
                Kind::Startup => started,
                _ => !started,
            };
            if waiting || p.on_hold || p.in_flight || now < p.next {
                continue;
            }
            p.in_flight = true;
            out.push(Due {
                kind: p.kind,
                container_id: id.clone(),
                probe: p.spec.clone(),
                timeout: p.timeout(),
            });
        }
        out
    }

    /// Takes in an attempt's outcome (ignored if the container has been replaced meanwhile).
    pub(crate) fn record(
        &mut self,
        kind: Kind,
        container_id: &str,
        outcome: Result<(), String>,
    ) -> Verdict {
        if self.container_id.as_deref() != Some(container_id) {
            return Verdict::Fine;
        }
        let Some(p) = self.probers.iter_mut().find(|p| p.kind == kind) else {
            return Verdict::Fine;
        };
        p.in_flight = false;
        p.next = Instant::now() + p.period();
        let ok = outcome.is_ok();
        p.run = if p.run.0 == ok && p.run.1 > 0 {
            (ok, p.run.1 + 1)
        } else {
            (ok, 1)
        };
        let threshold = if ok {
            p.success_threshold()
        } else {
            p.failure_threshold()
        };
        if p.run.1 >= threshold {
            p.passing = Some(ok);
        }
        let Err(message) = outcome else {
            return Verdict::Fine;
        };
        if kind != Kind::Readiness && p.passing == Some(false) {
            p.on_hold = true;
            let grace = p
                .spec
                .termination_grace_period_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64));
            return Verdict::Restart(message, grace);
        }
        Verdict::Failed(message)
    }
}

/// Where a container's probes go: its pod's address.
pub(crate) struct Target<'a> {
    pub pod_ip: &'a str,
    pub container: &'a Container,
}

/// The number of a probe's port, looking names up among the container's ports.
fn port(target: &Target<'_>, port: &IntOrString) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => target
            .container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("couldn't find port {name:?} in container"))?,
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

/// Makes one probe attempt: `Ok` when it passes, else what went wrong, worded as the kubelet
/// words it.
pub(crate) async fn run(
    client: &reqwest::Client,
    target: &Target<'_>,
    probe: &Probe,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(get) = &probe.http_get {
        let host = get
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(target.pod_ip);
        let port = port(target, &get.port)?;
        let scheme = get.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let path = get.path.as_deref().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let url = format!("{scheme}://{host}:{port}{path}");
        let mut request = client.get(&url).timeout(timeout);
        for h in get.http_headers.iter().flatten() {
            request = request.header(&h.name, &h.value);
        }
        return match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                if (200..400).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("HTTP probe failed with statuscode: {status}"))
                }
            }
            Err(e) if e.is_timeout() => Err(format!(
                "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
            Err(e) => Err(format!("Get {url:?}: {}", root_cause(&e))),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = tcp
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(target.pod_ip);
        let port = port(target, &tcp.port)?;
        let address = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&address)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {address}: connect: {e}")),
            Err(_) => Err(format!("dial tcp {address}: i/o timeout")),
        };
    }
    if probe.exec.is_some() {
        return Err("exec probes are not supported: Wasm containers have no processes".into());
    }
    if probe.grpc.is_some() {
        return Err("grpc probes are not supported".into());
    }
    Err("missing probe handler".into())
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The client probes use: no proxy, certificates not checked (as the kubelet), redirects
/// followed, identifying itself as the kubelet does.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .user_agent("kube-probe/1.33")
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(probes: serde_json::Value) -> Container {
        let mut c = json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]});
        for (k, v) in probes.as_object().unwrap() {
            c[k] = v.clone();
        }
        serde_json::from_value(c).unwrap()
    }

    fn fail() -> Result<(), String> {
        Err("boom".into())
    }

    #[test]
    fn readiness_needs_its_thresholds_and_gates_ready() {
        let c = container(json!({"readinessProbe": {"tcpSocket": {"port": 1},
            "successThreshold": 2, "failureThreshold": 2, "periodSeconds": 1}}));
        let mut h = Health::default();
        assert!(!h.ready());
        h.follow(&c, Some("a"));
        assert!(h.started() && !h.ready(), "not ready before a probe passed");
        let due = h.due();
        assert_eq!(due.len(), 1);
        assert!(h.due().is_empty(), "one attempt at a time");
        assert_eq!(h.record(Kind::Readiness, "a", Ok(())), Verdict::Fine);
        assert!(!h.ready(), "one success of two");
        h.record(Kind::Readiness, "a", Ok(()));
        assert!(h.ready());
        assert!(h.due().is_empty(), "the next attempt waits a period");
        assert_eq!(
            h.record(Kind::Readiness, "a", fail()),
            Verdict::Failed("boom".into())
        );
        assert!(h.ready(), "one failure of two");
        h.record(Kind::Readiness, "a", fail());
        assert!(!h.ready());
        // A stale outcome from a replaced container changes nothing.
        h.follow(&c, Some("b"));
        assert_eq!(h.record(Kind::Readiness, "a", Ok(())), Verdict::Fine);
        assert!(!h.ready());
    }

    #[test]
    fn startup_holds_the_others_and_liveness_failure_restarts() {
        let c = container(json!({
            "startupProbe": {"tcpSocket": {"port": "http"}, "failureThreshold": 2},
            "livenessProbe": {"httpGet": {"port": 8080}, "failureThreshold": 1,
                              "terminationGracePeriodSeconds": 2},
            "readinessProbe": {"httpGet": {"port": 8080}, "initialDelaySeconds": 3600}}));
        let mut h = Health::default();
        h.follow(&c, Some("a"));
        assert!(!h.started() && !h.ready());
        let due: Vec<Kind> = h.due().iter().map(|d| d.kind).collect();
        assert_eq!(due, [Kind::Startup], "only the startup probe runs at first");
        h.record(Kind::Startup, "a", fail());
        assert!(!h.started());
        h.record(Kind::Startup, "a", Ok(()));
        assert!(h.started() && !h.ready());
        let due: Vec<Kind> = h.due().iter().map(|d| d.kind).collect();
        assert_eq!(
            due,
            [Kind::Liveness],
            "readiness waits for its initial delay"
        );
        assert_eq!(
            h.record(Kind::Liveness, "a", fail()),
            Verdict::Restart("boom".into(), Some(Duration::from_secs(2)))
        );
        assert!(h.due().is_empty(), "on hold until the container restarts");
        h.follow(&c, None);
        h.follow(&c, Some("b"));
        assert!(!h.started(), "a new attempt starts over");

        // A startup probe failing past its threshold restarts the container too.
        let mut h = Health::default();
        h.follow(&c, Some("a"));
        h.record(Kind::Startup, "a", fail());
        assert!(matches!(
            h.record(Kind::Startup, "a", fail()),
            Verdict::Restart(..)
        ));
    }

    #[test]
    fn without_probes_a_running_container_is_ready() {
        let c = container(json!({}));
        let mut h = Health::default();
        h.follow(&c, Some("a"));
        assert!(h.started() && h.ready());
        assert!(h.due().is_empty());
        h.follow(&c, None);
        assert!(!h.ready());
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_local_server() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if request.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let response =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(response.as_bytes()).await;
            }
        });
        let client = client();
        let c = container(json!({}));
        let target = Target {
            pod_ip: "127.0.0.1",
            container: &c,
        };
        let probe = |v: serde_json::Value| serde_json::from_value::<Probe>(v).unwrap();
        let second = Duration::from_secs(1);
        let ok = probe(json!({"httpGet": {"path": "/ok", "port": port}}));
        assert_eq!(run(&client, &target, &ok, second).await, Ok(()));
        let bad = probe(json!({"httpGet": {"path": "/bad", "port": port, "host": "127.0.0.1"}}));
        assert_eq!(
            run(&client, &target, &bad, second).await,
            Err("HTTP probe failed with statuscode: 503".into())
        );
        let tcp = probe(json!({"tcpSocket": {"port": port}}));
        assert_eq!(run(&client, &target, &tcp, second).await, Ok(()));
        server.abort();
        let _ = server.await;
        // Nothing listens any more.
        let refused = run(&client, &target, &tcp, second).await.unwrap_err();
        assert!(
            refused.starts_with(&format!("dial tcp 127.0.0.1:{port}: connect:")),
            "{refused}"
        );
        let refused = run(&client, &target, &ok, second).await.unwrap_err();
        assert!(
            refused.starts_with(&format!("Get \"http://127.0.0.1:{port}/ok\": ")),
            "{refused}"
        );
        let named = probe(json!({"tcpSocket": {"port": "metrics"}}));
        assert_eq!(
            run(&client, &target, &named, second).await,
            Err("couldn't find port \"metrics\" in container".into())
        );
    }
}

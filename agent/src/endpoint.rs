//! The agent's HTTPS endpoint for the API server (the kubelet's port): container logs.
//!
//! It serves a certificate made at first start, which the server pins (the agent sends it when
//! it joins), and accepts only the token derived from this node's credential.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::body::Body;
use http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use skiff_runtime::{ContainerRuntime, ContainerState, WasmRuntime};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::sync::CancellationToken;

/// The endpoint's certificate and key (PEM), made at first start and kept in `dir`.
pub fn serving_identity(dir: &Path, names: Vec<String>) -> anyhow::Result<(String, String)> {
    let (crt, key) = (dir.join("serving.crt"), dir.join("serving.key"));
    if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&crt), std::fs::read_to_string(&key)) {
        return Ok((c, k));
    }
    let pair = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(names)?.self_signed(&pair)?;
    let (c, k) = (cert.pem(), pair.serialize_pem());
    crate::join::write_private(&key, k.as_bytes())?;
    crate::join::write_private(&crt, c.as_bytes())?;
    Ok((c, k))
}

/// Serves until `stop` on `listener`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    identity: (String, String),
    token: String,
    pods_dir: PathBuf,
    runtime: Arc<WasmRuntime>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let certs = rustls_pki_types::pem::PemObject::pem_slice_iter(identity.0.as_bytes())
        .collect::<Result<Vec<rustls_pki_types::CertificateDer<'static>>, _>>()
        .context("serving certificate")?;
    let key = <rustls_pki_types::PrivateKeyDer<'static> as rustls_pki_types::pem::PemObject>::from_pem_slice(identity.1.as_bytes())
        .context("serving key")?;
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let state = Arc::new(State {
        token,
        pods_dir,
        runtime,
    });
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = stop.cancelled() => return Ok(()),
        };
        let (acceptor, state, stop) = (acceptor.clone(), state.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(state.handle(req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

struct State {
    token: String,
    pods_dir: PathBuf,
    runtime: Arc<WasmRuntime>,
}

fn text(code: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(Body::from(body))
        .expect("valid response")
}

impl State {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let authorized = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| same_token(t.trim(), &self.token));
        if !authorized {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized".into());
        }
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let segs: Vec<&str> = req
            .uri()
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        match segs.as_slice() {
            ["containerLogs", ns, pod, container] => {
                match self.logs(ns, pod, container, &query).await {
                    Ok(r) => r,
                    Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found".into()),
        }
    }

    /// A container's log as kubectl shows it: the text of each record, optionally with its
    /// timestamp; tail, since, previous, and follow until the container stops.
    async fn logs(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        query: &HashMap<String, String>,
    ) -> anyhow::Result<Response<Body>> {
        let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
        let dir = newest_pod_dir(&self.pods_dir, ns, pod)
            .with_context(|| format!("pod \"{pod}\" has no logs on this node"))?
            .join("logs")
            .join(container);
        let mut attempts: Vec<u32> = std::fs::read_dir(&dir)
            .with_context(|| format!("container \"{container}\" in pod \"{pod}\" has no logs"))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        attempts.sort_unstable();
        let attempt = if flag("previous") {
            attempts.iter().rev().nth(1).copied().with_context(|| {
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
            })?
        } else {
            *attempts.last().context("no log yet")?
        };
        let path = dir.join(format!("{attempt}.log"));
        let timestamps = flag("timestamps");
        let since = query
            .get("sinceSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map(|s| SystemTime::now() - Duration::from_secs(s))
            .and_then(|t| jiff::Timestamp::try_from(t).ok())
            .or_else(|| query.get("sinceTime").and_then(|t| t.parse().ok()));
        let tail = query.get("tailLines").and_then(|t| t.parse::<usize>().ok());
        let mut file = tokio::fs::File::open(&path).await?;
        let mut raw = String::new();
        file.read_to_string(&mut raw).await?;
        let mut lines: Vec<String> = raw
            .lines()
            .filter_map(|l| render(l, timestamps, since))
            .collect();
        if let Some(n) = tail {
            lines = lines.split_off(lines.len().saturating_sub(n));
        }
        let mut initial = lines.concat();
        if let Some(limit) = query
            .get("limitBytes")
            .and_then(|l| l.parse::<usize>().ok())
        {
            cut_to(&mut initial, limit);
        }
        if !flag("follow") {
            return Ok(text(StatusCode::OK, initial));
        }
        let runtime = self.runtime.clone();
        let offset = raw.len() as u64;
        let stream = futures::stream::unfold(
            (Some(initial), file, offset, String::new(), path),
            move |(first, mut file, mut offset, mut partial, path)| {
                let runtime = runtime.clone();
                async move {
                    if let Some(first) = first {
                        return Some((
                            Ok::<_, std::io::Error>(first),
                            (None, file, offset, partial, path),
                        ));
                    }
                    loop {
                        let mut chunk = String::new();
                        let _ = file.seek(std::io::SeekFrom::Start(offset)).await;
                        let n = file.read_to_string(&mut chunk).await.unwrap_or(0);
                        offset += n as u64;
                        partial.push_str(&chunk);
                        if let Some(end) = partial.rfind('\n') {
                            let complete: String = partial.drain(..=end).collect();
                            let out: String = complete
                                .lines()
                                .filter_map(|l| render(l, timestamps, since))
                                .collect();
                            if !out.is_empty() {
                                return Some((Ok(out), (None, file, offset, partial, path)));
                            }
                        }
                        if n == 0 && !still_writing(&runtime, &path).await {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            },
        );
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/plain")
            .body(Body::from_stream(stream))
            .expect("valid response"))
    }
}

/// Whether a presented bearer token is the agent's, in time that does not depend on where
/// they differ (only on their lengths), so the token cannot be guessed byte by byte.
fn same_token(presented: &str, token: &str) -> bool {
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    a.len() == b.len() && diff == 0
}

/// Cuts `text` to at most `limit` bytes, on a character boundary (a log's `limitBytes` may
/// fall inside a multi-byte character).
fn cut_to(text: &mut String, limit: usize) {
    if limit < text.len() {
        let end = (0..=limit)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
}

/// Whether a running container writes to `path`.
async fn still_writing(runtime: &WasmRuntime, path: &Path) -> bool {
    runtime.list_containers(None).await.is_ok_and(|all| {
        all.iter()
            .any(|c| c.log_path == path && matches!(c.state, ContainerState::Running { .. }))
    })
}

/// One CRI record as kubectl prints it.
fn render(line: &str, timestamps: bool, since: Option<jiff::Timestamp>) -> Option<String> {
    let mut parts = line.splitn(4, ' ');
    let (ts, _stream, tag, text) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next().unwrap_or(""),
    );
    if let Some(since) = since
        && ts.parse::<jiff::Timestamp>().is_ok_and(|t| t < since)
    {
        return None;
    }
    let end = if tag == "P" { "" } else { "\n" };
    Some(if timestamps {
        format!("{ts} {text}{end}")
    } else {
        format!("{text}{end}")
    })
}

/// The directory of the newest pod of that name (a pod re-created under the same name gets a
/// new uid).
fn newest_pod_dir(pods: &Path, ns: &str, pod: &str) -> Option<PathBuf> {
    let prefix = format!("{ns}_{pod}_");
    std::fs::read_dir(pods)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_bytes_inside_a_multi_byte_character_cuts_before_it() {
        for limit in 0..=8 {
            let mut s = "aé€😀".to_string();
            cut_to(&mut s, limit);
            assert!(s.len() <= limit, "{limit}: {s:?}");
            assert!("aé€😀".starts_with(&s));
        }
        let mut s = "aé€😀".to_string();
        cut_to(&mut s, 2);
        assert_eq!(s, "a");
        cut_to(&mut s, usize::MAX);
        assert_eq!(s, "a");
    }

    #[test]
    fn only_the_agents_token_is_accepted() {
        assert!(same_token("secret-token", "secret-token"));
        for wrong in [
            "",
            "secret-toke",
            "secret-tokenx",
            "Secret-token",
            "xecret-token",
        ] {
            assert!(!same_token(wrong, "secret-token"), "{wrong:?}");
        }
    }
}

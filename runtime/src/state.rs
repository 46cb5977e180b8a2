//! Sandbox and container bookkeeping shared by the backends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::types::*;

/// One sandbox.
pub(crate) struct Sandbox {
    pub config: PodSandboxConfig,
    pub created_at: SystemTime,
    pub ready: bool,
}

/// One container; shared between the registry and the task running it.
pub(crate) struct Container {
    pub id: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    pub image_id: String,
    pub created_at: SystemTime,
    state: watch::Sender<ContainerState>,
    pub cpu_nanos: AtomicU64,
    pub memory_bytes: AtomicU64,
    /// Cancelled to stop the container forcefully.
    pub kill: tokio_util::sync::CancellationToken,
}

impl Container {
    pub fn state(&self) -> ContainerState {
        self.state.borrow().clone()
    }

    pub fn set_state(&self, state: ContainerState) {
        self.state.send_replace(state);
    }

    /// Waits until the container is no longer running.
    pub async fn exited(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives as long as `self`, so this only ends by the predicate.
        let _ = rx
            .wait_for(|s| matches!(s, ContainerState::Exited { .. } | ContainerState::Created))
            .await;
    }

    pub fn status(&self) -> ContainerStatus {
        ContainerStatus {
            id: self.id.clone(),
            sandbox_id: self.sandbox_id.clone(),
            name: self.config.name.clone(),
            attempt: self.config.attempt,
            image: self.config.image.clone(),
            image_id: self.image_id.clone(),
            state: self.state(),
            created_at: self.created_at,
            log_path: self.config.log_path.clone(),
        }
    }

    pub fn stats(&self) -> ContainerStats {
        ContainerStats {
            cpu_nanos: self.cpu_nanos.load(Ordering::Relaxed),
            memory_bytes: self.memory_bytes.load(Ordering::Relaxed),
        }
    }
}

/// All sandboxes and containers of a runtime.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Inner {
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Arc<Container>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{:012x}",
            self.next_id.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    pub fn add_sandbox(&self, config: &PodSandboxConfig) -> String {
        let id = self.new_id("sb");
        self.lock().sandboxes.insert(
            id.clone(),
            Sandbox {
                config: config.clone(),
                created_at: SystemTime::now(),
                ready: true,
            },
        );
        id
    }

    pub fn sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let inner = self.lock();
        let s = inner
            .sandboxes
            .get(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        Ok(PodSandboxStatus {
            id: id.into(),
            config: s.config.clone(),
            ready: s.ready,
            created_at: s.created_at,
        })
    }

    pub fn sandbox_ids(&self) -> Vec<String> {
        self.lock().sandboxes.keys().cloned().collect()
    }

    pub fn mark_sandbox_stopped(&self, id: &str) -> Result<Vec<Arc<Container>>> {
        let mut inner = self.lock();
        inner
            .sandboxes
            .get_mut(id)
            .ok_or_else(|| not_found("sandbox", id))?
            .ready = false;
        Ok(inner
            .containers
            .values()
            .filter(|c| c.sandbox_id == id)
            .cloned()
            .collect())
    }

    pub fn remove_sandbox(&self, id: &str) -> Result<()> {
        let mut inner = self.lock();
        if inner
            .containers
            .values()
            .any(|c| c.sandbox_id == id && matches!(c.state(), ContainerState::Running { .. }))
        {
            return Err(Error::InvalidState(format!(
                "sandbox {id} has running containers"
            )));
        }
        inner
            .sandboxes
            .remove(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        inner.containers.retain(|_, c| c.sandbox_id != id);
        Ok(())
    }

    pub fn add_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        image_id: String,
    ) -> Result<Arc<Container>> {
        let mut inner = self.lock();
        let sandbox = inner
            .sandboxes
            .get(sandbox_id)
            .ok_or_else(|| not_found("sandbox", sandbox_id))?;
        if !sandbox.ready {
            return Err(Error::InvalidState(format!(
                "sandbox {sandbox_id} is stopped"
            )));
        }
        let id = self.new_id("c");
        let (state, _) = watch::channel(ContainerState::Created);
        let c = Arc::new(Container {
            id: id.clone(),
            sandbox_id: sandbox_id.into(),
            config: config.clone(),
            image_id,
            created_at: SystemTime::now(),
            state,
            cpu_nanos: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            kill: tokio_util::sync::CancellationToken::new(),
        });
        inner.containers.insert(id, c.clone());
        Ok(c)
    }

    pub fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.lock()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| not_found("container", id))
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        let mut inner = self.lock();
        let c = inner
            .containers
            .get(id)
            .ok_or_else(|| not_found("container", id))?;
        if matches!(c.state(), ContainerState::Running { .. }) {
            return Err(Error::InvalidState(format!(
                "container {id} is running; stop it first"
            )));
        }
        inner.containers.remove(id);
        Ok(())
    }

    pub fn list(&self, sandbox_id: Option<&str>) -> Vec<ContainerStatus> {
        let inner = self.lock();
        let mut out: Vec<ContainerStatus> = inner
            .containers
            .values()
            .filter(|c| sandbox_id.is_none_or(|s| c.sandbox_id == s))
            .map(|c| c.status())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

pub(crate) fn not_found(kind: &'static str, id: &str) -> Error {
    Error::NotFound {
        kind,
        id: id.into(),
    }
}

/// The `Exited` state for a container that ran from `started_at`.
pub(crate) fn exited(
    started_at: SystemTime,
    exit_code: i32,
    reason: ExitReason,
    message: String,
) -> ContainerState {
    ContainerState::Exited {
        started_at,
        finished_at: SystemTime::now(),
        exit_code,
        reason,
        message,
    }
}

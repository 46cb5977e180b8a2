//! A runtime that runs nothing: containers start at once and run until stopped. For simulated
//! nodes (thousands per process) and tests of the layers above the runtime.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::state::{self, Registry};
use crate::types::*;
use crate::{ContainerRuntime, Error};

/// The fake backend.
#[derive(Default)]
pub struct FakeRuntime {
    registry: Registry,
    images: Mutex<HashSet<String>>,
}

impl FakeRuntime {
    /// An empty fake runtime.
    pub fn new() -> Self {
        Self::default()
    }

    fn image_id(image: &str) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(crate::source::image_name(image).as_bytes());
        format!(
            "sha256:{}",
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    }
}

impl ContainerRuntime for FakeRuntime {
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String> {
        Ok(self.registry.add_sandbox(config))
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        for c in self.registry.mark_sandbox_stopped(id)? {
            if let ContainerState::Running { started_at } = c.state() {
                c.set_state(state::exited(
                    started_at,
                    137,
                    ExitReason::Error,
                    "stopped".into(),
                ));
            }
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.registry.remove_sandbox(id)
    }

    async fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String> {
        if !self
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&config.image)
        {
            return Err(Error::NotFound {
                kind: "image",
                id: config.image.clone(),
            });
        }
        Ok(self
            .registry
            .add_container(sandbox_id, config, Self::image_id(&config.image))?
            .id
            .clone())
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let c = self.registry.container(id)?;
        if c.state() != ContainerState::Created {
            return Err(Error::InvalidState(format!(
                "container {id} was already started"
            )));
        }
        c.set_state(ContainerState::Running {
            started_at: SystemTime::now(),
        });
        Ok(())
    }

    async fn stop_container(&self, id: &str, _grace: Duration) -> Result<()> {
        let c = self.registry.container(id)?;
        if let ContainerState::Running { started_at } = c.state() {
            // A fake process honours the stop request at once, like a well-behaved one.
            c.set_state(state::exited(
                started_at,
                0,
                ExitReason::Completed,
                String::new(),
            ));
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.registry.remove_container(id)
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        Ok(self.registry.container(id)?.status())
    }

    async fn list_containers(&self, sandbox_id: Option<&str>) -> Result<Vec<ContainerStatus>> {
        Ok(self.registry.list(sandbox_id))
    }

    async fn pull_image(&self, image: &str) -> Result<String> {
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(image.to_string());
        Ok(Self::image_id(image))
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        self.registry.sandbox_status(id)
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>> {
        self.registry
            .sandbox_ids()
            .iter()
            .map(|id| self.registry.sandbox_status(id))
            .collect()
    }

    async fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        Ok(self.registry.container(id)?.stats())
    }

    async fn image_status(&self, image: &str) -> Result<Option<String>> {
        Ok(self
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(image)
            .then(|| Self::image_id(image)))
    }

    async fn list_images(&self) -> Result<Vec<String>> {
        let mut images: Vec<String> = self
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        images.sort();
        Ok(images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn containers_start_at_once_and_stop_on_request() {
        let rt = FakeRuntime::new();
        let sb = rt
            .run_pod_sandbox(&PodSandboxConfig {
                name: "p".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let config = ContainerConfig {
            name: "c".into(),
            image: "hello:1.0".into(),
            ..Default::default()
        };
        assert!(matches!(
            rt.create_container(&sb, &config).await,
            Err(Error::NotFound { kind: "image", .. })
        ));
        rt.pull_image("hello:1.0").await.unwrap();
        let id = rt.create_container(&sb, &config).await.unwrap();
        rt.start_container(&id).await.unwrap();
        assert!(matches!(
            rt.container_status(&id).await.unwrap().state,
            ContainerState::Running { .. }
        ));
        assert!(
            rt.remove_container(&id).await.is_err(),
            "a running container cannot be removed"
        );
        rt.stop_container(&id, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(matches!(
            rt.container_status(&id).await.unwrap().state,
            ContainerState::Exited { exit_code: 0, .. }
        ));
        assert_eq!(rt.list_containers(Some(&sb)).await.unwrap().len(), 1);
        rt.remove_pod_sandbox(&sb).await.unwrap();
        assert!(rt.list_containers(None).await.unwrap().is_empty());
    }
}

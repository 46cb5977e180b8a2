//! The CRI-shaped container runtime of a Skiff node.
//!
//! [`ContainerRuntime`] mirrors CRI's RuntimeService and ImageService: pod sandboxes, containers,
//! stats and images (modules). Backends: [`WasmRuntime`] runs WebAssembly modules in-process with
//! wasmtime; [`FakeRuntime`] starts instantly and runs nothing, for simulated nodes and tests of
//! the layers above. Guests' outgoing HTTP requests go where the embedder's [`OutgoingHttp`]
//! sends them.

mod egress;
mod error;
mod fake;
mod logs;
mod source;
mod state;
mod types;
mod wasm;

pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use egress::{
    Caller, Connection, HttpError, OutgoingBody, OutgoingHttp, RequestOptions, Sending, Sent,
    send_direct,
};
pub use error::{Error, Result};
pub use fake::FakeRuntime;
pub use skiff_api::signature::{sign_module, verify_module};
pub use source::{DirSource, FetchFuture, Fetched, MemorySource, ModuleSource};
pub use types::*;
pub use wasm::{Config as WasmConfig, HttpBody, WasmRuntime};

/// The runtime interface the agent drives, shaped like CRI.
///
/// Required: sandboxes, containers and image pulls. Everything else defaults to
/// [`Error::Unsupported`], so a backend implements only what it can do.
pub trait ContainerRuntime: Send + Sync {
    /// Creates a pod sandbox (the shared context of a pod's containers: its volumes and logs).
    fn run_pod_sandbox(
        &self,
        config: &PodSandboxConfig,
    ) -> impl Future<Output = Result<String>> + Send;

    /// Stops every container of the sandbox (forcefully: the agent stops them gracefully first).
    fn stop_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Removes a stopped sandbox and its containers.
    fn remove_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Creates a container in a sandbox from a pulled image.
    fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
    ) -> impl Future<Output = Result<String>> + Send;

    /// Starts a created container.
    fn start_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Stops a container: waits up to `grace` for it to exit, then stops it forcefully.
    fn stop_container(
        &self,
        id: &str,
        grace: std::time::Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes a stopped container.
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// A container's state.
    fn container_status(&self, id: &str) -> impl Future<Output = Result<ContainerStatus>> + Send;

    /// Every container, optionally only those of one sandbox.
    fn list_containers(
        &self,
        sandbox_id: Option<&str>,
    ) -> impl Future<Output = Result<Vec<ContainerStatus>>> + Send;

    /// Fetches an image (a module) so containers can be created from it; returns its image id
    /// (`sha256:<digest>`).
    fn pull_image(&self, image: &str) -> impl Future<Output = Result<String>> + Send;

    /// A sandbox's state.
    fn pod_sandbox_status(
        &self,
        _id: &str,
    ) -> impl Future<Output = Result<PodSandboxStatus>> + Send {
        async { Err(Error::Unsupported("pod_sandbox_status")) }
    }

    /// Every sandbox.
    fn list_pod_sandboxes(&self) -> impl Future<Output = Result<Vec<PodSandboxStatus>>> + Send {
        async { Err(Error::Unsupported("list_pod_sandboxes")) }
    }

    /// CPU and memory use of a container.
    fn container_stats(&self, _id: &str) -> impl Future<Output = Result<ContainerStats>> + Send {
        async { Err(Error::Unsupported("container_stats")) }
    }

    /// Whether an image is present, and its id.
    fn image_status(&self, _image: &str) -> impl Future<Output = Result<Option<String>>> + Send {
        async { Err(Error::Unsupported("image_status")) }
    }

    /// Images present on the node.
    fn list_images(&self) -> impl Future<Output = Result<Vec<String>>> + Send {
        async { Err(Error::Unsupported("list_images")) }
    }

    /// Removes an image no container uses.
    fn remove_image(&self, _image: &str) -> impl Future<Output = Result<()>> + Send {
        async { Err(Error::Unsupported("remove_image")) }
    }
}

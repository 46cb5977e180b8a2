//! The data the runtime trait exchanges, shaped like CRI's messages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

/// What a pod sandbox is created from.
#[derive(Debug, Clone, Default)]
pub struct PodSandboxConfig {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod uid.
    pub uid: String,
    /// Restart attempt of the sandbox.
    pub attempt: u32,
    /// Directory for this pod's container logs.
    pub log_directory: PathBuf,
    /// Labels, for listing.
    pub labels: BTreeMap<String, String>,
}

/// A sandbox's state.
#[derive(Debug, Clone)]
pub struct PodSandboxStatus {
    /// Sandbox id.
    pub id: String,
    /// The config it was created from.
    pub config: PodSandboxConfig,
    /// True until stopped.
    pub ready: bool,
    /// When it was created.
    pub created_at: SystemTime,
}

/// A directory a container sees.
#[derive(Debug, Clone, Default)]
pub struct Mount {
    /// Host directory.
    pub host_path: PathBuf,
    /// Path inside the guest.
    pub container_path: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Where the directory comes from.
    pub source: MountSource,
}

/// Where a mounted directory comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MountSource {
    /// Made by the agent for the pod: an emptyDir, or files of a ConfigMap or Secret.
    #[default]
    Pod,
    /// A `hostPath` volume: a directory of the node itself, allowed only where the node says.
    HostPath,
}

/// Resource limits of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory in bytes; growing past it kills the container (OOMKilled).
    pub memory_bytes: Option<u64>,
    /// CPU in millicores (1000 = one core); enforced by time slicing.
    pub cpu_millis: Option<u64>,
}

/// What a container is created from.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    /// Container name within the pod.
    pub name: String,
    /// Image (module) reference, as pulled.
    pub image: String,
    /// Entry arguments (`command` then `args`); `argv[0]` is the container name.
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Working directory inside the guest.
    pub working_dir: Option<String>,
    /// Directories the guest sees.
    pub mounts: Vec<Mount>,
    /// Limits.
    pub limits: Limits,
    /// The CRI-format log file for this run of the container.
    pub log_path: PathBuf,
    /// Restart attempt.
    pub attempt: u32,
    /// The WasmPolicies of the pod's namespace: the module's signature and the container's
    /// host paths are checked against each before it is created (the node's own check, which
    /// does not trust the API server's admission alone).
    pub policies: Vec<skiff_api::policy::WasmPolicy>,
}

/// Why a container exited, as Kubernetes reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Exit code 0.
    Completed,
    /// A non-zero exit code or a trap.
    Error,
    /// The guest exceeded its memory limit.
    OomKilled,
}

impl ExitReason {
    /// The reason string of `containerStatuses[].state.terminated.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "Completed",
            Self::Error => "Error",
            Self::OomKilled => "OOMKilled",
        }
    }
}

/// A container's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running since the given time.
    Running {
        /// When the guest was entered.
        started_at: SystemTime,
    },
    /// Exited.
    Exited {
        /// When it was started.
        started_at: SystemTime,
        /// When it exited.
        finished_at: SystemTime,
        /// The exit code (137 when stopped forcefully, 134 for a trap).
        exit_code: i32,
        /// Why.
        reason: ExitReason,
        /// Details (the trap message, the limit crossed).
        message: String,
    },
}

/// A container as the runtime reports it.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    /// Container id.
    pub id: String,
    /// Sandbox id.
    pub sandbox_id: String,
    /// Name within the pod.
    pub name: String,
    /// Restart attempt.
    pub attempt: u32,
    /// Image reference.
    pub image: String,
    /// Image id (`sha256:...`).
    pub image_id: String,
    /// State.
    pub state: ContainerState,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its log file.
    pub log_path: PathBuf,
}

/// Resource use of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerStats {
    /// CPU time consumed, in nanoseconds.
    pub cpu_nanos: u64,
    /// Linear memory in use, in bytes.
    pub memory_bytes: u64,
}

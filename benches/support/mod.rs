//! What the `skiff` benches share: a real `skiff server` and one `skiff agent` as child
//! processes, killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed (and reaped) when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A control plane and one node named `bench` at 127.0.0.1, under `dir` (`dir/server`,
/// `dir/agent`). `agent_flags` are added to the agent's command line; `logs` says where each
/// process's stderr goes (`None`: nowhere). Answers the processes, the API's URL and the admin
/// token once the server has written its kubeconfig.
pub fn server_and_agent(
    dir: &Path,
    agent_flags: &[&str],
    logs: Option<&Path>,
) -> (Kill, Kill, String, String) {
    let bin = env!("CARGO_BIN_EXE_skiff");
    let stderr = |name: &str| match logs {
        Some(logs) => Stdio::from(std::fs::File::create(logs.join(name)).expect("log file")),
        None => Stdio::null(),
    };
    let server_dir = dir.join("server");
    let server = Kill(
        Command::new(bin)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&server_dir)
            .stderr(stderr("server.log"))
            .spawn()
            .expect("server"),
    );
    let kubeconfig = server_dir.join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(t) = std::fs::read_to_string(&kubeconfig) {
            break t;
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .expect("kubeconfig field")
            .trim()
            .to_string()
    };
    let (url, token) = (field("server: "), field("token: "));
    let agent = Kill(
        Command::new(bin)
            .args(["agent", "--server", &url, "--node-name", "bench"])
            .args(["--node-ip", "127.0.0.1", "--port", "0"])
            .args(agent_flags)
            .arg("--data-dir")
            .arg(dir.join("agent"))
            .env(
                "SKIFF_NODE_TOKEN",
                std::fs::read_to_string(server_dir.join("node-token"))
                    .expect("node token")
                    .trim(),
            )
            .stderr(stderr("agent.log"))
            .spawn()
            .expect("agent"),
    );
    (server, agent, url, token)
}

//! The official Kubernetes Python client (`kubernetes` on PyPI) against a real server.

mod common;

use std::process::Command;

use common::Server;

#[test]
fn python_client_scenarios() {
    // A short history so the compacted-watch check has something compacted to refer to (the
    // server's own objects alone take more revisions), yet long enough that the replay check's
    // three events are still in it when background writes land in between on a busy machine.
    // Bookmarks every second, so the progress check needs no minute-long watch.
    let server = Server::start_with(&["--watch-history", "40", "--watch-bookmark-interval", "1s"]);
    let python = common::venv().join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test, which installs the Python client",
        python.display()
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_scenarios.py");
    let out = Command::new(python)
        .arg(script)
        .arg(server.kubeconfig())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client scenarios failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log()
    );
    assert!(
        stdout.contains("all python client scenarios passed"),
        "{stdout}"
    );
}

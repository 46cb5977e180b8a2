//! Acknowledged writes survive `kill -9`, and a watch resumed from a revision taken before the
//! crash delivers every one of them.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut server = Server::start();
    let token = server.token();
    let ca_before = std::fs::read(server.dir.path().join("pki/ca.crt")).unwrap();
    let client = server.client();
    let base = server.url.clone();
    let list = server
        .get_json(&client, "/api/v1/namespaces/default/configmaps")
        .await;
    let start_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (client, base, token, acked) =
            (client.clone(), base.clone(), token.clone(), acked.clone());
        writers.spawn(async move {
            for i in 0.. {
                let name = format!("cm-{w}-{i}");
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"i": i.to_string()}});
                let sent = client.post(format!("{base}/api/v1/namespaces/default/configmaps")).bearer_auth(&token).json(&body).send().await;
                match sent {
                    Ok(r) if r.status().as_u16() == 201 => {
                        acked.lock().unwrap().insert(name);
                    }
                    // The server died mid-request: this write was never acknowledged.
                    _ => break,
                }
            }
        });
    }
    // Crash while writes are in flight, once a good number have been acknowledged.
    common::eventually("300 acknowledged writes", || {
        acked.lock().unwrap().len() >= 300
    });
    server.kill9();
    while writers.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();

    server.launch(Vec::new());
    assert_eq!(server.token(), token, "the admin token survives a restart");
    assert_eq!(
        std::fs::read(server.dir.path().join("pki/ca.crt")).unwrap(),
        ca_before,
        "the CA survives a restart"
    );
    let client = server.client();
    let base = server.url.clone();
    let list = server
        .get_json(&client, "/api/v1/namespaces/default/configmaps")
        .await;
    let stored: BTreeSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost after kill -9: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );

    // A watch from before the crash replays every acknowledged create.
    let text = client
        .get(format!("{base}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={start_rv}&timeoutSeconds=3"))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut watched = BTreeSet::new();
    for line in text.lines() {
        let ev: Value = serde_json::from_str(line).unwrap();
        assert_eq!(ev["type"], "ADDED", "{line}");
        watched.insert(
            ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let missed: Vec<&String> = acked.difference(&watched).collect();
    assert!(
        missed.is_empty(),
        "watch resumed from {start_rv} missed {} acknowledged writes",
        missed.len()
    );
}

/// Reads are served only once durable: no resourceVersion a client saw before a `kill -9`
/// (from a write, a list or a watch event) is handed out again for different data after the
/// restart, over several crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_versions_never_go_back_across_kill_9() {
    let mut server = Server::start();
    let token = server.token();
    let mut seen_max = 0u64;
    for cycle in 0..3 {
        let client = server.client();
        let base = server.url.clone();
        // rv -> name of every acknowledged create, and the highest rv any read returned.
        let acked = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
        let read_max = Arc::new(Mutex::new(0u64));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..8 {
            let (client, base, token, acked) =
                (client.clone(), base.clone(), token.clone(), acked.clone());
            tasks.spawn(async move {
                for i in 0.. {
                    let name = format!("c{cycle}-{w}-{i}");
                    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
                    let sent = client.post(format!("{base}/api/v1/namespaces/default/configmaps")).bearer_auth(&token).json(&body).send().await;
                    let Ok(r) = sent else { break };
                    if r.status().as_u16() != 201 {
                        break;
                    }
                    let Ok(obj) = r.json::<Value>().await else { break };
                    let rv = obj["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
                    acked.lock().unwrap().push((rv, name));
                }
            });
        }
        for _ in 0..2 {
            let (client, base, token, read_max) = (
                client.clone(),
                base.clone(),
                token.clone(),
                read_max.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let sent = client
                        .get(format!(
                            "{base}/api/v1/namespaces/default/configmaps?limit=1"
                        ))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    let Ok(r) = sent else { break };
                    let Ok(list) = r.json::<Value>().await else {
                        break;
                    };
                    let Some(rv) = list["metadata"]["resourceVersion"].as_str() else {
                        break;
                    };
                    let rv: u64 = rv.parse().unwrap();
                    let mut max = read_max.lock().unwrap();
                    *max = (*max).max(rv);
                }
            });
        }
        common::eventually("200 acknowledged writes", || {
            acked.lock().unwrap().len() >= 200
        });
        server.kill9();
        while tasks.join_next().await.is_some() {}
        let acked = acked.lock().unwrap().clone();
        seen_max = seen_max
            .max(*read_max.lock().unwrap())
            .max(acked.iter().map(|(rv, _)| *rv).max().unwrap_or(0));

        server.launch(Vec::new());
        let client = server.client();
        let list = server
            .get_json(&client, "/api/v1/namespaces/default/configmaps")
            .await;
        let listed_rv: u64 = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            listed_rv >= seen_max,
            "cycle {cycle}: the restarted server is at {listed_rv}, behind {seen_max} that clients already saw"
        );
        // Every acknowledged write is there, at the resourceVersion its writer was told.
        let stored: std::collections::BTreeMap<String, u64> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["metadata"]["name"].as_str().unwrap().to_string(),
                    i["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap(),
                )
            })
            .collect();
        for (rv, name) in &acked {
            assert_eq!(stored.get(name), Some(rv), "cycle {cycle}: {name}");
        }
        // The next write gets a revision no client has seen.
        let created: Value = client
            .post(format!(
                "{}/api/v1/namespaces/default/configmaps",
                server.url
            ))
            .bearer_auth(&token)
            .json(&json!({"metadata": {"name": format!("after-{cycle}")}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rv: u64 = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            rv > seen_max,
            "cycle {cycle}: a new write got resourceVersion {rv}, which a client saw before the crash (up to {seen_max})"
        );
        seen_max = rv;
    }
}

/// A filesystem mounted for one test, unmounted when dropped (before its directory is removed).
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, size: &str) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a {size} tmpfs at {} failed: this test needs root, as CI has",
            at.display()
        );
        Self(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A full disk makes the server stop (exit code 70) instead of serving writes it could not
/// make durable; every write it acknowledged before is there when its data is started again
/// on a disk with room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_server_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::tmpfs(dir.path(), "12m");
    let mut server = Server::start_in(dir, &[]);
    let token = server.token();
    let client = server.client();
    let base = server.url.clone();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (client, base, token, acked) =
            (client.clone(), base.clone(), token.clone(), acked.clone());
        writers.spawn(async move {
            let filler = "x".repeat(60_000);
            for i in 0..1000 {
                let name = format!("cm-{w}-{i}");
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"d": filler}});
                let sent = client
                    .post(format!("{base}/api/v1/namespaces/default/configmaps"))
                    .bearer_auth(&token)
                    .json(&body)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 201 => {
                        acked.lock().unwrap().insert(name);
                    }
                    _ => break,
                }
            }
        });
    }
    // 12 MiB hold about 200 such writes: the disk fills long before the writers finish.
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(Duration::from_secs(120));
        (status, server)
    });
    let (status, server) = status.await.unwrap();
    while writers.join_next().await.is_some() {}
    let status = status.expect("the server stops once its disk is full");
    assert_eq!(status.code(), Some(70), "{}", server.log());
    assert!(
        server.log().contains("could not make writes durable"),
        "{}",
        server.log()
    );
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "some writes fit before the disk filled");

    // The same data on a disk with room: everything acknowledged is there.
    let roomy = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", server.dir.path().display()))
        .arg(roomy.path())
        .status()
        .unwrap();
    assert!(copied.success());
    drop(server);
    drop(mount);
    let server = Server::start_in(roomy, &[]);
    let client = server.client();
    let list = server
        .get_json(&client, "/api/v1/namespaces/default/configmaps")
        .await;
    let stored: BTreeSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

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

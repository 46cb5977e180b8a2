//! The HTTPS surface below kubectl: health, authentication, files written at start, protobuf
//! bodies, paging and watch details.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::Server;
use serde_json::{Value, json};

#[tokio::test]
async fn health_needs_no_credentials_and_everything_else_does() {
    let server = Server::start();
    let client = server.client();
    for path in ["/healthz", "/livez", "/readyz"] {
        let r = client
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    for token in [None, Some("wrong")] {
        let mut req = client.get(format!("{}/api/v1/pods", server.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let status: Value = r.json().await.unwrap();
        assert_eq!(
            (status["kind"].as_str(), status["reason"].as_str()),
            (Some("Status"), Some("Unauthorized"))
        );
    }
    let dir = server.dir.path();
    for file in ["kubeconfig", "node-token"] {
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file} must be private");
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(!text.trim().is_empty());
    }
    let node_token = std::fs::read_to_string(dir.join("node-token")).unwrap();
    assert!(
        node_token.starts_with("skiff1:"),
        "the join token names the CA hash: {node_token}"
    );
    assert!(
        std::fs::read_to_string(dir.join("kubeconfig"))
            .unwrap()
            .contains(&server.url),
        "kubeconfig names the real address"
    );
    let metrics = client
        .get(format!("{}/metrics", server.url))
        .bearer_auth(server.token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("skiff_store_revision"), "{metrics}");
}

#[tokio::test]
async fn protobuf_bodies_from_kubectl_create() {
    let server = Server::start();
    let client = server.client();
    let wire = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("control-plane/testdata/kubectl-wire/pb133");
    let mut created = 0;
    for entry in std::fs::read_dir(&wire).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        // The file name is the request path with '/' as '_', e.g. apis_apps_v1_namespaces_default_deployments.
        let url_path = stem.replace('_', "/");
        let r = client
            .post(format!("{}/{url_path}", server.url))
            .bearer_auth(server.token())
            .header("Content-Type", "application/vnd.kubernetes.protobuf")
            .header(
                "Accept",
                "application/vnd.kubernetes.protobuf,application/json",
            )
            .body(std::fs::read(&path).unwrap())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{url_path}: {body}");
        assert!(body["metadata"]["uid"].is_string(), "{body}");
        created += 1;
        // HPA bodies of both versions share a name and storage: remove each after checking it.
        let name = body["metadata"]["name"].as_str().unwrap();
        let r = client
            .delete(format!("{}/{url_path}/{name}", server.url))
            .bearer_auth(server.token())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url_path}/{name}");
    }
    assert!(created >= 10);
    let r = client
        .post(format!(
            "{}/api/v1/namespaces/default/configmaps",
            server.url
        ))
        .bearer_auth(server.token())
        .header("Content-Type", "application/vnd.kubernetes.protobuf")
        .body(&b"k8s\0garbage"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn paging_and_watch_bookmarks() {
    let server = Server::start();
    let client = server.client();
    let token = server.token();
    for i in 0..7 {
        let body = json!({"metadata": {"name": format!("c{i}")}, "data": {"i": "x"}});
        let r = client
            .post(format!(
                "{}/api/v1/namespaces/default/configmaps",
                server.url
            ))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let mut names = Vec::new();
    let mut cont = String::new();
    loop {
        let url = format!(
            "{}/api/v1/namespaces/default/configmaps?limit=3&continue={cont}",
            server.url
        );
        let page: Value = client
            .get(url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        names.extend(
            items
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(c) => cont = c.to_string(),
            None => break,
        }
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);

    // Watch-list: initial ADDED events, then the bookmark that marks their end.
    let url = format!(
        "{}/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
        server.url
    );
    let text = client
        .get(url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.iter().filter(|e| e["type"] == "ADDED").count(), 7);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "BOOKMARK");
    assert_eq!(
        last["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // Without resourceVersionMatch, sendInitialEvents is refused rather than ignored.
    let url = format!(
        "{}/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true",
        server.url
    );
    assert_eq!(
        client
            .get(url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        422
    );
}

/// Owner references drive cascading deletion: Background removes dependents after the owner,
/// Foreground before it, Orphan keeps them and strips the reference.
#[tokio::test]
async fn deletion_propagates_to_dependents() {
    let server = Server::start();
    let client = server.client();
    let token = server.token();
    let base = format!("{}/apis/apps/v1/namespaces/default", server.url);
    let post = |url: String, body: Value| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()
        }
    };
    let exists = |url: String| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                == 200
        }
    };
    let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "hello:1.0"}]}});
    for (policy, owner_name) in [("Background", "bg"), ("Foreground", "fg"), ("Orphan", "or")] {
        let deploy = post(format!("{base}/deployments"), json!({"metadata": {"name": owner_name}, "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}})).await;
        let owner_ref = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": owner_name, "uid": deploy["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
        let rs_name = format!("{owner_name}-rs");
        post(format!("{base}/replicasets"), json!({"metadata": {"name": rs_name, "ownerReferences": owner_ref}, "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}})).await;
        let r = client
            .delete(format!("{base}/deployments/{owner_name}"))
            .bearer_auth(&token)
            .json(&json!({"propagationPolicy": policy}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let rs_url = format!("{base}/replicasets/{rs_name}");
        let owner_url = format!("{base}/deployments/{owner_name}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (owner, rs) = (
                exists(owner_url.clone()).await,
                exists(rs_url.clone()).await,
            );
            let done = match policy {
                "Orphan" => !owner && rs,
                _ => !owner && !rs,
            };
            if done {
                break;
            }
            if policy == "Foreground" {
                assert!(
                    owner || !rs,
                    "foreground deletion removed the owner before its dependent"
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{policy} deletion did not finish (owner {owner}, dependent {rs})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if policy == "Orphan" {
            let rs: Value = client
                .get(&rs_url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(
                rs["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(|a| a.is_empty()),
                "orphaned dependent keeps no reference: {rs}"
            );
        }
    }
}

/// SIGTERM drains: open watches end and the process exits cleanly.
#[tokio::test]
async fn sigterm_ends_watches_and_exits_cleanly() {
    let mut server = Server::start();
    let client = server.client();
    let url = format!(
        "{}/api/v1/namespaces/default/configmaps?watch=1",
        server.url
    );
    let watch = client
        .get(url)
        .bearer_auth(server.token())
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let status = server.stop();
    assert!(
        status.success(),
        "server exited with {status}: {}",
        server.log()
    );
    // The stream finishes instead of hanging.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), watch.bytes()).await;
    assert!(ended.is_ok(), "the watch stayed open after shutdown");
}

/// YAML bodies, generateName, and a terminating namespace refusing new content until its
/// last finalizer is gone.
#[tokio::test]
async fn yaml_generate_name_and_terminating_namespaces() {
    let server = Server::start();
    let client = server.client();
    let token = server.token();
    let post = |path: &str, content_type: &'static str, body: String| {
        let req = client
            .post(format!("{}{path}", server.url))
            .bearer_auth(&token)
            .header("Content-Type", content_type)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap())
        }
    };
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: cfg-\ndata:\n  a: b\n"
        .to_string();
    let (code, first) = post(
        "/api/v1/namespaces/default/configmaps",
        "application/yaml",
        yaml.clone(),
    )
    .await;
    assert_eq!(code, 201, "{first}");
    let (_, second) = post(
        "/api/v1/namespaces/default/configmaps",
        "application/yaml",
        yaml,
    )
    .await;
    let (a, b) = (
        first["metadata"]["name"].as_str().unwrap(),
        second["metadata"]["name"].as_str().unwrap(),
    );
    assert!(
        a.starts_with("cfg-") && a.len() == 9 && a != b,
        "generated names {a} {b}"
    );
    assert_eq!(first["data"]["a"], "b");

    let (code, _) = post(
        "/api/v1/namespaces",
        "application/json",
        json!({"metadata": {"name": "closing"}}).to_string(),
    )
    .await;
    assert_eq!(code, 201);
    let held = json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}});
    let (code, _) = post(
        "/api/v1/namespaces/closing/configmaps",
        "application/json",
        held.to_string(),
    )
    .await;
    assert_eq!(code, 201);
    let r = client
        .delete(format!("{}/api/v1/namespaces/closing", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ns = server.get_json(&client, "/api/v1/namespaces/closing").await;
    assert_eq!(ns["status"]["phase"], "Terminating", "{ns}");
    let (code, refused) = post(
        "/api/v1/namespaces/closing/configmaps",
        "application/json",
        json!({"metadata": {"name": "late"}}).to_string(),
    )
    .await;
    assert_eq!(code, 403, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("being terminated"),
        "{refused}"
    );
    let release = json!({"metadata": {"finalizers": null}});
    let r = client
        .patch(format!(
            "{}/api/v1/namespaces/closing/configmaps/held",
            server.url
        ))
        .bearer_auth(&token)
        .header("Content-Type", "application/merge-patch+json")
        .body(release.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.get_json(&client, "/api/v1/namespaces/closing").await["kind"] != "Status" {
        assert!(
            std::time::Instant::now() < deadline,
            "the namespace was not removed after its content"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A Secret's data reaches readers, but never the data directory's files in the clear; a new
/// key from `skiff rotate-secrets-key` takes over at the next start.
#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_keys_rotate() {
    let mut server = Server::start();
    let client = server.client();
    let token = server.token();
    // "correct horse battery staple", as the API stores it (base64) and as stringData.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                        "data": {"password": "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ=="},
                        "stringData": {"user": "staple-user-4711"}});
    let r = client
        .post(format!("{}/api/v1/namespaces/default/secrets", server.url))
        .bearer_auth(&token)
        .json(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let read = |client: reqwest::Client, url: String, token: String| async move {
        client
            .get(format!("{url}/api/v1/namespaces/default/secrets/db"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let got = read(client.clone(), server.url.clone(), token.clone()).await;
    assert_eq!(
        got["data"]["password"],
        "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ=="
    );

    fn files(dir: &std::path::Path, out: &mut Vec<u8>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files(&path, out);
            } else {
                out.extend(std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    let on_disk = |dir: &std::path::Path| {
        let mut all = Vec::new();
        files(dir, &mut all);
        all
    };
    let has = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    server.stop();
    let disk = on_disk(server.dir.path());
    for clear in [
        "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ==",
        "correct horse",
        "staple-user-4711",
        "c3RhcGxlLXVzZXItNDcxMQ==",
    ] {
        assert!(
            !has(&disk, clear),
            "{clear:?} is in the data directory in the clear"
        );
    }
    let keys = server.dir.path().join("pki/secrets.keys");
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Rotate, restart: the Secret reads the same, sealed with the new key only.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["rotate-secrets-key", "--data-dir"])
        .arg(server.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_key = std::fs::read_to_string(&keys).unwrap();
    let new_name = new_key.split(' ').next().unwrap().to_string();
    server.launch(Vec::new());
    let got = read(server.client(), server.url.clone(), server.token()).await;
    assert_eq!(
        got["data"]["password"],
        "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ=="
    );
    server.stop();
    let disk = on_disk(&server.dir.path().join("store"));
    assert!(has(&disk, &format!("k8s:enc:aead:v1:{new_name}:")));
}

#[tokio::test]
async fn status_errors_keep_kube_apiservers_field_order_and_readyz_lists_the_controllers() {
    let server = Server::start();
    let client = server.client();
    let r = client
        .get(format!(
            "{}/api/v1/namespaces/default/pods/nope",
            server.url
        ))
        .bearer_auth(server.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"nope\" not found","reason":"NotFound","details":{"name":"nope","kind":"pods"},"code":404}"#
    );
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "neg"},
        "spec": {"activeDeadlineSeconds": -1, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "x"}]}}}});
    let r = client
        .post(format!(
            "{}/apis/batch/v1/namespaces/default/jobs",
            server.url
        ))
        .bearer_auth(server.token())
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Job.batch \"neg\" is invalid: spec.activeDeadlineSeconds: Invalid value: -1: must be greater than or equal to 0","reason":"Invalid","details":{"name":"neg","group":"batch","kind":"Job","causes":[{"reason":"FieldValueInvalid","message":"Invalid value: -1: must be greater than or equal to 0","field":"spec.activeDeadlineSeconds"}]},"code":422}"#
    );

    let r = client
        .get(format!("{}/readyz?verbose", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.starts_with("[+]ping ok\n"), "{body}");
    assert!(body.ends_with("readyz check passed\n"), "{body}");
    for check in [
        "scheduler",
        "controller/deployment",
        "controller/job",
        "controller/cronjob",
        "controller/replicaset",
        "controller/node-lifecycle",
    ] {
        assert!(body.contains(&format!("[+]{check} ok\n")), "{body}");
    }
}

/// The serving certificate names what `--tls-san` lists, and, when the server listens on every
/// interface, the address of the default route's interface: clients that reach the server
/// by a DNS name or from another host verify it with the cluster CA alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_certificate_names_tls_sans_and_the_hosts_address() {
    let server = Server::start_listening(
        "0.0.0.0:0",
        &[
            "--tls-san",
            "edge.example,gateway.local",
            "--tls-san",
            "10.9.8.7",
        ],
    );
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let ca = std::fs::read(server.dir.path().join("pki/ca.crt")).unwrap();
    let healthz = |host: &str, at: std::net::IpAddr| {
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .resolve(host, std::net::SocketAddr::new(at, port))
            .build()
            .unwrap();
        let url = match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(_)) => format!("https://[{host}]:{port}/healthz"),
            _ => format!("https://{host}:{port}/healthz"),
        };
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    for name in ["edge.example", "gateway.local", "localhost"] {
        assert_eq!(healthz(name, local).await.unwrap(), 200, "{name}");
    }
    assert!(
        healthz("other.example", local).await.is_err(),
        "a name the certificate does not list is refused"
    );
    // The address other hosts reach this one at, found as the server finds it.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    if socket.connect("192.0.2.1:9").is_ok() {
        let ip = socket.local_addr().unwrap().ip();
        assert_eq!(
            healthz(&ip.to_string(), ip).await.unwrap(),
            200,
            "the certificate names {ip}"
        );
    }
}

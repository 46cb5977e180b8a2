//! Services end to end, with a real server, real agents on loopback addresses and the real
//! kubectl: ClusterIPs allocated and checked by the API server, guests calling Services by
//! name and ClusterIP through their outgoing `wasi:http` requests, and LoadBalancer Services
//! answered by every node at the node's address.

mod common;

use common::agents::{Agent, components, http_get, wait_for, wait_ready};
use common::{Kc, Kubectl, Server};

/// Agents named `edge-1`, `edge-2`, ... at `ips`, running the `modules` components.
fn agents(server: &Server, modules: &tempfile::TempDir, ips: &[&str]) -> Vec<Agent> {
    ips.iter()
        .enumerate()
        .map(|(i, ip)| {
            let flags = [
                "--module-dir".to_string(),
                modules.path().display().to_string(),
                "--node-ip".to_string(),
                ip.to_string(),
            ];
            Agent::start_with(server, &format!("edge-{}", i + 1), &flags)
        })
        .collect()
}

/// A Deployment of the hello function, one replica per node.
fn web(replicas: u32) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "web"}},
            "spec": {{"replicas": {replicas}, "selector": {{"matchLabels": {{"app": "web"}}}},
              "template": {{"metadata": {{"labels": {{"app": "web"}}}},
                "spec": {{"terminationGracePeriodSeconds": 1,
                  "affinity": {{"podAntiAffinity": {{"requiredDuringSchedulingIgnoredDuringExecution": [
                    {{"labelSelector": {{"matchLabels": {{"app": "web"}}}}, "topologyKey": "kubernetes.io/hostname"}}]}}}},
                  "containers": [{{"name": "web", "image": "web:1.0",
                    "ports": [{{"name": "http", "containerPort": 8080}}]}}]}}}}}}}}"#
    )
}

fn service(name: &str, spec: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "{name}"}}, "spec": {spec}}}"#
    )
}

/// Answers every connection with `200 outside`: a host outside the cluster.
fn outside_server() -> String {
    use std::io::{BufRead as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = reader.get_mut().write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\noutside",
            );
        }
    });
    addr
}

#[test]
fn guests_call_services_by_name_and_cluster_ip_which_the_server_allocates() {
    let modules = components(&[("web", "hello-http"), ("fetch", "fetch-http")]);
    let mut server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let agents = agents(&server, &modules, &["127.0.0.31", "127.0.0.32"]);
    wait_ready(&kc, &agents[0], &["edge-1", "edge-2"]);

    kc.ok_stdin(&["apply", "-f", "-"], Some(&web(2)));
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&service(
            "web",
            r#"{"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}"#,
        )),
    );
    // The caller: a function on edge-1 that fetches the URL it is given.
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fetch", "labels": {"app": "fetch"}},
                "spec": {"nodeName": "edge-1", "terminationGracePeriodSeconds": 1,
                  "containers": [{"name": "fetch", "image": "fetch:1.0",
                                  "ports": [{"containerPort": 8080}]}]}}"#,
        ),
    );

    // The Service got a ClusterIP from the range, which kubectl shows.
    let cluster_ip = kc.jsonpath(&["get", "svc", "web"], "{.spec.clusterIP}");
    let octets: Vec<u8> = cluster_ip
        .split('.')
        .filter_map(|o| o.parse().ok())
        .collect();
    assert!(
        octets.len() == 4 && octets[0] == 10 && (96..112).contains(&octets[1]),
        "{cluster_ip} is not in 10.96.0.0/12"
    );
    let table = kc.ok(&["get", "svc", "web"]);
    assert!(
        table.contains("CLUSTER-IP") && table.contains(&cluster_ip),
        "{table}"
    );
    assert_eq!(
        kc.jsonpath(&["get", "svc", "kubernetes"], "{.spec.clusterIP}"),
        "10.96.0.1"
    );

    let endpoints = || {
        kc.jsonpath(
            &["get", "endpoints", "web"],
            "{.subsets[*].addresses[*].ip}",
        )
    };
    wait_for("two ready web endpoints", &agents[0], || {
        endpoints().split_whitespace().count() == 2
    });
    let fetch_ip = kc.jsonpath(&["get", "pod", "fetch"], "{.status.podIP}");
    let fetcher = format!("{fetch_ip}:8080");
    let fetch = |url: &str| http_get(&fetcher, &format!("/?url={url}"));
    wait_for("the fetch function", &agents[0], || {
        fetch("http://web/warmup").0 == 200
    });

    // By short name, by the other short forms, by FQDN and by ClusterIP.
    let hello = |path: &str| format!("Hello from a Wasm function! You asked for GET {path}\n");
    for (i, host) in [
        "web",
        "web.default",
        "web.default.svc",
        "web.default.svc.cluster.local",
        cluster_ip.as_str(),
        &format!("{cluster_ip}:80"),
    ]
    .iter()
    .enumerate()
    {
        for turn in 0..2 {
            let path = format!("/by-name-{i}-{turn}");
            assert_eq!(
                fetch(&format!("http://{host}{path}")),
                (200, hello(&path)),
                "{host}"
            );
        }
    }
    // The requests went round robin to both replicas: the one on edge-1 in-process, the one
    // on edge-2 through its agent.
    let pods = kc.jsonpath(
        &["get", "pods", "-l", "app=web"],
        r#"{range .items[*]}{.metadata.name} {.spec.nodeName}{"\n"}{end}"#,
    );
    for line in pods.lines() {
        let (name, node) = line.split_once(' ').expect("name and node");
        let agent = &agents[if node == "edge-1" { 0 } else { 1 }];
        let served = agent
            .container_log(name, "web")
            .matches("GET /by-name-")
            .count();
        assert!(served >= 3, "{name} on {node} served {served} of 12");
    }

    // Names that are no Service fail as DNS lookups; a port the Service lacks is refused.
    assert_eq!(
        fetch("http://nope.default.svc.cluster.local/"),
        (502, "error: DNS-error (NXDOMAIN)\n".into())
    );
    assert_eq!(
        fetch("http://nope/"),
        (502, "error: DNS-error (NXDOMAIN)\n".into())
    );
    assert_eq!(
        fetch("http://web:81/"),
        (502, "error: connection-refused\n".into())
    );
    // Any other host is reached as it is, as pods reach the outside.
    let outside = outside_server();
    assert_eq!(
        fetch(&format!("http://{outside}/")),
        (200, "outside".into())
    );
    // No replicas: the Service refuses.
    kc.ok(&["scale", "deployment/web", "--replicas=0"]);
    wait_for("no web endpoints", &agents[0], || endpoints().is_empty());
    assert_eq!(
        fetch("http://web.default/"),
        (502, "error: connection-refused\n".into())
    );

    // A requested ClusterIP is checked: taken, out of the range, or changed afterwards.
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&service(
            "pinned",
            r#"{"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}"#,
        )),
    );
    assert!(kc.ok(&["get", "svc", "pinned"]).contains("10.96.0.50"));
    let err = kc.fails_stdin(
        &["apply", "-f", "-"],
        Some(&service(
            "copy",
            r#"{"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}"#,
        )),
    );
    assert!(
        err.contains(r#"spec.clusterIPs: Invalid value: []string{"10.96.0.50"}: failed to allocate IP 10.96.0.50: provided IP is already allocated"#),
        "{err}"
    );
    let err = kc.fails_stdin(
        &["apply", "-f", "-"],
        Some(&service(
            "elsewhere",
            r#"{"clusterIP": "192.168.0.5", "ports": [{"port": 80}]}"#,
        )),
    );
    assert!(
        err.contains("failed to allocate IP 192.168.0.5: the provided IP (192.168.0.5) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
        "{err}"
    );
    let err = kc.fails(&[
        "patch",
        "svc",
        "pinned",
        "-p",
        r#"{"spec": {"clusterIP": "10.96.0.51"}}"#,
    ]);
    assert!(err.contains("may not change once set"), "{err}");

    // Allocations outlive a restart of the server.
    drop(kc);
    server.pin_port();
    assert!(server.stop().success());
    server.launch(Vec::new());
    let kc = Kc::new(Kubectl::version("33"), &server);
    assert!(kc.ok(&["get", "svc", "pinned"]).contains("10.96.0.50"));
    let err = kc.fails_stdin(
        &["apply", "-f", "-"],
        Some(&service(
            "copy",
            r#"{"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}"#,
        )),
    );
    assert!(err.contains("provided IP is already allocated"), "{err}");
    // Deleting the Service frees its address.
    kc.ok(&["delete", "svc", "pinned"]);
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&service(
            "copy",
            r#"{"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}"#,
        )),
    );
}

#[test]
fn a_load_balancer_service_answers_at_every_nodes_address_and_one_port_serves_one_service() {
    let modules = components(&[("web", "hello-http")]);
    let server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let ips = ["127.0.0.33", "127.0.0.34"];
    let agents = agents(&server, &modules, &ips);
    wait_ready(&kc, &agents[0], &["edge-1", "edge-2"]);
    kc.ok_stdin(&["apply", "-f", "-"], Some(&web(2)));
    let balanced = |name: &str| {
        service(
            name,
            r#"{"type": "LoadBalancer", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 18080, "targetPort": "http"}]}"#,
        )
    };
    kc.ok_stdin(&["apply", "-f", "-"], Some(&balanced("web")));

    // The nodes' addresses are the Service's, as kubectl shows them.
    let external = |name: &str| {
        let table = kc.ok(&["get", "svc", name, "--no-headers"]);
        table.split_whitespace().nth(3).unwrap_or("").to_string()
    };
    wait_for("the nodes' addresses in EXTERNAL-IP", &agents[0], || {
        external("web") == "127.0.0.33,127.0.0.34"
    });
    assert_eq!(
        kc.jsonpath(
            &["get", "svc", "web"],
            "{.status.loadBalancer.ingress[*].ipMode}"
        ),
        "VIP VIP"
    );
    wait_for("two ready endpoints", &agents[0], || {
        kc.jsonpath(
            &["get", "endpoints", "web"],
            "{.subsets[*].addresses[*].ip}",
        )
        .split_whitespace()
        .count()
            == 2
    });
    // Every node answers at its own address on the Service's port.
    for ip in ips {
        let addr = format!("{ip}:18080");
        wait_for(&format!("{addr} answering"), &agents[0], || {
            http_get(&addr, "/warmup").0 == 200
        });
        assert_eq!(
            http_get(&addr, "/lb"),
            (
                200,
                "Hello from a Wasm function! You asked for GET /lb\n".into()
            )
        );
    }

    // A second Service asking for the same port waits, and says why.
    kc.ok_stdin(&["apply", "-f", "-"], Some(&balanced("later")));
    wait_for("the pending Service's event", &agents[0], || {
        kc.ok(&["describe", "svc", "later"]).contains(
            "port 18080/TCP of the nodes is already used by LoadBalancer Service default/web",
        )
    });
    assert_eq!(external("later"), "<pending>");
    // Once the port is free, it gets the nodes and their port.
    kc.ok(&["delete", "svc", "web"]);
    wait_for("the waiting Service's addresses", &agents[0], || {
        external("later") == "127.0.0.33,127.0.0.34"
    });
    for ip in ips {
        let addr = format!("{ip}:18080");
        wait_for(
            &format!("{addr} answering for the other Service"),
            &agents[0],
            || {
                http_get(&addr, "/later")
                    == (
                        200,
                        "Hello from a Wasm function! You asked for GET /later\n".into(),
                    )
            },
        );
    }
}

#[test]
fn a_restarted_agent_answers_the_node_ports_of_services_that_were_already_there() {
    let modules = components(&[("web", "hello-http")]);
    let server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let mut agents = agents(&server, &modules, &["127.0.0.35"]);
    wait_ready(&kc, &agents[0], &["edge-1"]);
    kc.ok_stdin(&["apply", "-f", "-"], Some(&web(1)));
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&service(
            "web",
            r#"{"type": "NodePort", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}"#,
        )),
    );
    let port = kc.jsonpath(&["get", "svc", "web"], "{.spec.ports[0].nodePort}");
    let addr = format!("127.0.0.35:{port}");
    wait_for("the NodePort", &agents[0], || {
        http_get(&addr, "/before").0 == 200
    });
    // A gateway reboot: the Service is in the agent's first list of Services, and no change to
    // it follows.
    agents[0].restart();
    wait_for("the NodePort after the restart", &agents[0], || {
        http_get(&addr, "/after")
            == (
                200,
                "Hello from a Wasm function! You asked for GET /after\n".into(),
            )
    });
}

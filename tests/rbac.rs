//! Service-account tokens and RBAC against a real `skiff server`, with the real kubectl: who
//! gets 401, what a service account confined to its namespace may do and the 403s it gets
//! elsewhere, `kubectl auth can-i`, escalation, aggregation, and nodes.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Kc, Kubectl, Server, eventually};
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};

/// The status code of `GET path` with `token` (none: anonymous).
async fn status_of(server: &Server, token: Option<&str>, path: &str) -> u16 {
    let mut req = server.client().get(format!("{}{path}", server.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Signs `claims` as a service-account token with `key`, as the server would.
fn forge(key: &ed25519_dalek::SigningKey, claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let signed = format!("{}.{}", part(&json!({"alg": "EdDSA"})), part(claims));
    let sig = key.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn server_key(server: &Server) -> ed25519_dalek::SigningKey {
    let text = std::fs::read_to_string(server.dir.path().join("pki/sa.key")).unwrap();
    let seed: [u8; 32] = STANDARD.decode(text.trim()).unwrap().try_into().unwrap();
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(uid: &str, iat: i64, exp: i64) -> Value {
    json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "sub": "system:serviceaccount:a:bot", "iat": iat, "nbf": iat, "exp": exp,
        "kubernetes.io": {"namespace": "a", "serviceaccount": {"name": "bot", "uid": uid}},
    })
}

#[tokio::test]
async fn only_valid_tokens_of_live_service_accounts_authenticate() {
    let server = Server::start();
    let k = Kc::new(Kubectl::version("33"), &server);
    let pods = "/api/v1/namespaces/a/pods";
    // Health needs nothing; everything else needs a credential.
    assert_eq!(status_of(&server, None, "/healthz").await, 200);
    assert_eq!(status_of(&server, None, "/version").await, 401);
    assert_eq!(status_of(&server, None, pods).await, 401);
    assert_eq!(status_of(&server, Some("not-a-token"), pods).await, 401);
    assert_eq!(status_of(&server, Some("a.b.c"), pods).await, 401);

    k.ok(&["create", "namespace", "a"]);
    k.ok(&["-n", "a", "create", "serviceaccount", "bot"]);
    k.ok(&[
        "-n",
        "a",
        "create",
        "rolebinding",
        "bot-view",
        "--clusterrole=view",
        "--serviceaccount=a:bot",
    ]);
    let token = k
        .ok(&["-n", "a", "create", "token", "bot"])
        .trim()
        .to_string();
    assert_eq!(status_of(&server, Some(&token), pods).await, 200);
    // The claims are upstream's.
    let payload = token.split('.').nth(1).unwrap();
    let c: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(c["sub"], "system:serviceaccount:a:bot");
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "bot");
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    let uid = k.jsonpath(&["-n", "a", "get", "sa", "bot"], "{.metadata.uid}");
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["uid"], uid.as_str());

    // --duration and its lower bound, as upstream.
    let short = k.ok(&["-n", "a", "create", "token", "bot", "--duration", "10m"]);
    let c: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(short.trim().split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);
    let err = k.fails(&["-n", "a", "create", "token", "bot", "--duration", "5m"]);
    assert!(
        err.contains(r#"TokenRequest.authentication.k8s.io "bot" is invalid: spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"#),
        "{err}"
    );
    let err = k.fails(&["-n", "a", "create", "token", "nobody"]);
    assert!(
        err.contains(r#"serviceaccounts "nobody" not found"#),
        "{err}"
    );

    // A token for another audience is not for this API.
    let vault = k.ok(&["-n", "a", "create", "token", "bot", "--audience", "vault"]);
    assert_eq!(status_of(&server, Some(vault.trim()), pods).await, 401);

    // Tokens signed with the server's key: accepted while current, refused once expired
    // (past the minute of leeway), and refused when signed by any other key.
    let key = server_key(&server);
    let t = now();
    let fresh = forge(&key, &claims(&uid, t, t + 600));
    assert_eq!(status_of(&server, Some(&fresh), pods).await, 200);
    let expired = forge(&key, &claims(&uid, t - 7200, t - 3600));
    assert_eq!(status_of(&server, Some(&expired), pods).await, 401);
    let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let forged = forge(&other, &claims(&uid, t, t + 600));
    assert_eq!(status_of(&server, Some(&forged), pods).await, 401);
    // Claiming to be another account breaks the signature.
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut c: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    c["sub"] = json!("system:serviceaccount:kube-system:default");
    let tampered = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
    parts[1] = &tampered;
    assert_eq!(status_of(&server, Some(&parts.join(".")), pods).await, 401);

    // A deleted service account's tokens die with it, and a new account of the same name
    // (another uid) does not revive them.
    k.ok(&["-n", "a", "delete", "sa", "bot"]);
    assert_eq!(status_of(&server, Some(&token), pods).await, 401);
    k.ok(&["-n", "a", "create", "sa", "bot"]);
    assert_eq!(status_of(&server, Some(&token), pods).await, 401);
    let renewed = k.ok(&["-n", "a", "create", "token", "bot"]);
    assert_eq!(status_of(&server, Some(renewed.trim()), pods).await, 200);

    // kubectl says what a 401 means.
    let err = k.fails(&["--token", token.as_str(), "-n", "a", "get", "pods"]);
    assert!(
        err.contains("You must be logged in to the server (Unauthorized)"),
        "{err}"
    );
}

/// kubectl as the token's service account.
fn as_token<'a>(args: &[&'a str], token: &'a str) -> Vec<&'a str> {
    let mut a = vec!["--token", token];
    a.extend_from_slice(args);
    a
}

#[test]
fn a_service_account_gets_exactly_what_its_roles_grant() {
    let server = Server::start();
    let k = Kc::new(Kubectl::version("33"), &server);
    for ns in ["a", "b"] {
        k.ok(&["create", "namespace", ns]);
    }
    k.ok(&["-n", "a", "create", "serviceaccount", "bot"]);
    k.ok(&[
        "-n",
        "a",
        "create",
        "rolebinding",
        "bot-edit",
        "--clusterrole=edit",
        "--serviceaccount=a:bot",
    ]);
    let listed = k.ok(&["-n", "a", "get", "rolebindings", "-o", "wide"]);
    assert!(
        listed.lines().any(|l| l.starts_with("bot-edit ")
            && l.contains(" ClusterRole/edit ")
            && l.trim_end().ends_with(" a/bot")),
        "{listed}"
    );
    let token = k.ok(&["-n", "a", "create", "token", "bot"]);
    let token = token.trim();
    let bot = |args: &[&str]| k.ok(&as_token(args, token));
    let refused = |args: &[&str]| k.fails(&as_token(args, token));

    // In its namespace, edit: pods and configmaps.
    bot(&["-n", "a", "run", "web", "--image=hello:1.0"]);
    bot(&[
        "-n",
        "a",
        "create",
        "configmap",
        "settings",
        "--from-literal=k=v",
    ]);
    assert!(bot(&["-n", "a", "get", "pods"]).contains("web"));
    assert!(bot(&["-n", "a", "get", "configmaps"]).contains("settings"));
    bot(&["-n", "a", "delete", "configmap", "settings"]);
    // edit does not manage roles or quotas.
    let err = refused(&[
        "-n",
        "a",
        "create",
        "role",
        "r",
        "--verb=get",
        "--resource=pods",
    ]);
    assert!(
        err.contains(r#"roles.rbac.authorization.k8s.io is forbidden: User "system:serviceaccount:a:bot" cannot create resource "roles" in API group "rbac.authorization.k8s.io" in the namespace "a""#),
        "{err}"
    );

    // Elsewhere, nothing, in upstream's words.
    k.ok(&["-n", "b", "run", "web", "--image=hello:1.0"]);
    let err = refused(&["-n", "b", "get", "pods"]);
    assert!(
        err.contains(r#"pods is forbidden: User "system:serviceaccount:a:bot" cannot list resource "pods" in API group "" in the namespace "b""#),
        "{err}"
    );
    let err = refused(&["get", "--raw", "/api/v1/namespaces/b/pods/web/log"]);
    assert!(
        err.contains(r#"pods "web" is forbidden: User "system:serviceaccount:a:bot" cannot get resource "pods/log" in API group "" in the namespace "b""#),
        "{err}"
    );
    let err = refused(&["get", "nodes"]);
    assert!(
        err.contains(r#"nodes is forbidden: User "system:serviceaccount:a:bot" cannot list resource "nodes" in API group "" at the cluster scope"#),
        "{err}"
    );
    let err = refused(&["-n", "b", "create", "configmap", "x"]);
    assert!(
        err.contains(r#"cannot create resource "configmaps" in API group "" in the namespace "b""#),
        "{err}"
    );
    refused(&["-n", "b", "delete", "pod", "web"]);

    // A Role granting only get on configmaps gives exactly that.
    k.ok(&[
        "-n",
        "b",
        "create",
        "configmap",
        "shared",
        "--from-literal=k=v",
    ]);
    k.ok(&[
        "-n",
        "b",
        "create",
        "role",
        "cm-get",
        "--verb=get",
        "--resource=configmaps",
    ]);
    k.ok(&[
        "-n",
        "b",
        "create",
        "rolebinding",
        "bot-cm-get",
        "--role=cm-get",
        "--serviceaccount=a:bot",
    ]);
    assert_eq!(
        bot(&[
            "-n",
            "b",
            "get",
            "configmap",
            "shared",
            "-o",
            "jsonpath={.data.k}"
        ]),
        "v"
    );
    let err = refused(&["-n", "b", "get", "configmaps"]);
    assert!(
        err.contains(r#"cannot list resource "configmaps" in API group "" in the namespace "b""#),
        "{err}"
    );
    let err = refused(&["-n", "b", "delete", "configmap", "shared"]);
    assert!(
        err.contains(r#"configmaps "shared" is forbidden: User "system:serviceaccount:a:bot" cannot delete resource "configmaps" in API group "" in the namespace "b""#),
        "{err}"
    );
    refused(&["-n", "b", "get", "secrets"]);
    refused(&["-n", "b", "get", "pods"]);

    // kubectl auth can-i, for the token's user and, impersonated, by the admin.
    let can_i = |args: &[&str]| {
        let out = k.run_stdin(args, None);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        can_i(&as_token(
            &["auth", "can-i", "create", "pods", "-n", "a"],
            token
        )),
        "yes"
    );
    assert_eq!(
        can_i(&as_token(
            &["auth", "can-i", "create", "pods", "-n", "b"],
            token
        )),
        "no"
    );
    assert_eq!(
        can_i(&as_token(
            &["auth", "can-i", "get", "configmaps", "-n", "b"],
            token
        )),
        "yes"
    );
    assert_eq!(
        can_i(&as_token(&["auth", "can-i", "list", "nodes"], token)),
        "no"
    );
    let as_bot = "--as=system:serviceaccount:a:bot";
    assert_eq!(
        can_i(&["auth", "can-i", "list", "pods", as_bot, "-n", "b"]),
        "no"
    );
    assert_eq!(
        can_i(&["auth", "can-i", "list", "pods", as_bot, "-n", "a"]),
        "yes"
    );
    assert_eq!(can_i(&["auth", "can-i", "delete", "nodes"]), "yes");
    // Impersonating is itself authorized: the bot may not pose as the admin's groups.
    let err = refused(&["get", "pods", "--as=alice", "--as-group=system:masters"]);
    assert!(
        err.contains(r#"users "alice" is forbidden: User "system:serviceaccount:a:bot" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{err}"
    );
    let whoami = bot(&["auth", "whoami"]);
    assert!(
        whoami.contains("system:serviceaccount:a:bot")
            && whoami.contains("system:serviceaccounts:a"),
        "{whoami}"
    );

    // The binding's roleRef never changes.
    let err = k.fails(&[
        "-n",
        "a",
        "patch",
        "rolebinding",
        "bot-edit",
        "--type=merge",
        "-p",
        r#"{"roleRef": {"name": "admin"}}"#,
    ]);
    assert!(
        err.contains(r#"The RoleBinding "bot-edit" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"ClusterRole", Name:"admin"}: cannot change roleRef"#),
        "{err}"
    );

    // Removing the binding removes the access at once.
    k.ok(&["-n", "b", "delete", "rolebinding", "bot-cm-get"]);
    refused(&["-n", "b", "get", "configmap", "shared"]);
}

#[test]
fn namespace_admins_cannot_grant_more_than_they_hold() {
    let server = Server::start();
    let k = Kc::new(Kubectl::version("33"), &server);
    k.ok(&["create", "namespace", "a"]);
    k.ok(&["-n", "a", "create", "serviceaccount", "boss"]);
    k.ok(&["-n", "a", "create", "serviceaccount", "bot"]);
    k.ok(&[
        "-n",
        "a",
        "create",
        "rolebinding",
        "boss-admin",
        "--clusterrole=admin",
        "--serviceaccount=a:boss",
    ]);
    let token = k.ok(&["-n", "a", "create", "token", "boss"]);
    let token = token.trim();
    let boss = |args: &[&str]| k.ok(&as_token(args, token));
    let refused = |args: &[&str]| k.fails(&as_token(args, token));

    // What the admin role holds, it may hand out in its namespace.
    boss(&[
        "-n",
        "a",
        "create",
        "rolebinding",
        "bot-view",
        "--clusterrole=view",
        "--serviceaccount=a:bot",
    ]);
    boss(&[
        "-n",
        "a",
        "create",
        "role",
        "reader",
        "--verb=get",
        "--resource=pods",
    ]);
    let held = r#"is attempting to grant RBAC permissions not currently held:"#;
    // Not cluster-admin, nor a role reaching beyond what it holds.
    let err = refused(&[
        "-n",
        "a",
        "create",
        "rolebinding",
        "grab",
        "--clusterrole=cluster-admin",
        "--serviceaccount=a:bot",
    ]);
    assert!(
        err.contains(r#"rolebindings.rbac.authorization.k8s.io "grab" is forbidden: user "system:serviceaccount:a:boss" (groups=["system:serviceaccounts" "system:serviceaccounts:a" "system:authenticated"])"#)
            && err.contains(held)
            && err.contains(r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#),
        "{err}"
    );
    let err = refused(&[
        "-n",
        "a",
        "create",
        "role",
        "quota",
        "--verb=create",
        "--resource=resourcequotas",
    ]);
    assert!(
        err.contains(held)
            && err.contains(r#"{APIGroups:[""], Resources:["resourcequotas"], Verbs:["create"]}"#),
        "{err}"
    );
    let err = refused(&[
        "-n",
        "a",
        "patch",
        "role",
        "reader",
        "--type=merge",
        "-p",
        r#"{"rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}"#,
    ]);
    assert!(err.contains(held), "{err}");
    // Nor at the cluster scope.
    refused(&[
        "create",
        "clusterrolebinding",
        "grab",
        "--clusterrole=view",
        "--serviceaccount=a:bot",
    ]);
    assert!(
        k.ok(&["-n", "a", "get", "role", "reader", "-o", "json"])
            .contains(r#""get""#)
    );
}

const EXTRA_VIEW: &str = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
  "metadata": {"name": "leases-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
  "rules": [{"apiGroups": ["coordination.k8s.io", "skiff.dev"], "resources": ["leases", "modules"], "verbs": ["get", "list"]}]}"#;

#[test]
fn labelled_cluster_roles_aggregate_into_view_edit_and_admin() {
    let server = Server::start();
    let k = Kc::new(Kubectl::version("33"), &server);
    let rules_of = |role: &str| {
        let out = k.ok(&["get", "clusterrole", role, "-o", "json"]);
        serde_json::from_str::<Value>(&out).unwrap()["rules"].clone()
    };
    let names_leases = |rules: &Value| {
        rules.as_array().into_iter().flatten().any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.contains(&json!("modules")))
        })
    };
    // The defaults are aggregated from the start.
    let view = rules_of("view");
    assert!(
        view.as_array().unwrap().iter().any(|r| r["resources"]
            .as_array()
            .unwrap()
            .contains(&json!("wasmpolicies"))),
        "{view}"
    );
    assert!(!names_leases(&view));
    k.ok_stdin(&["apply", "-f", "-"], Some(EXTRA_VIEW));
    for role in ["view", "edit", "admin"] {
        eventually(&format!("{role} to aggregate leases-view"), || {
            names_leases(&rules_of(role))
        });
    }
    // The aggregated rule works for whoever is bound to view.
    k.ok(&["create", "namespace", "a"]);
    k.ok(&["-n", "a", "create", "serviceaccount", "viewer"]);
    k.ok(&[
        "-n",
        "a",
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--serviceaccount=a:viewer",
    ]);
    let token = k.ok(&["-n", "a", "create", "token", "viewer"]);
    let can_i = |what: &str| {
        let out = k.run_stdin(
            &as_token(&["auth", "can-i", "list", what, "-n", "a"], token.trim()),
            None,
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(can_i("leases"), "yes");
    assert_eq!(can_i("secrets"), "no");
    k.ok(&["delete", "clusterrole", "leases-view"]);
    eventually("view to drop leases-view's rules", || {
        !names_leases(&rules_of("view"))
    });
    assert_eq!(can_i("leases"), "no");
}

/// Joins a node named `name` with a fresh key and returns its credential.
async fn join(server: &Server, name: &str, seed: u8) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let public = STANDARD.encode(key.verifying_key().as_bytes());
    let text = format!("skiff-join-v1\n{name}\n{public}\n");
    let join_token = std::fs::read_to_string(server.dir.path().join("node-token")).unwrap();
    let r = server
        .client()
        .post(format!("{}/skiff/join", server.url))
        .bearer_auth(join_token.trim())
        .json(
            &json!({"nodeName": name, "publicKey": public, "servingCert": "",
                      "signature": STANDARD.encode(key.sign(text.as_bytes()).to_bytes())}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn nodes_stay_confined_to_themselves() {
    let server = Server::start();
    let client = server.client();
    let edge1 = join(&server, "edge-1", 1).await;
    let edge2 = join(&server, "edge-2", 2).await;
    let send = |method: reqwest::Method, token: &str, path: &str, body: Value| {
        let req = client
            .request(method.clone(), format!("{}{path}", server.url))
            .bearer_auth(token);
        let req = if method == reqwest::Method::PATCH {
            req.header("content-type", "application/merge-patch+json")
                .body(body.to_string())
        } else {
            req.json(&body)
        };
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let node = |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    assert_eq!(
        send(
            reqwest::Method::POST,
            &edge1,
            "/api/v1/nodes",
            node("edge-1")
        )
        .await,
        201
    );
    assert_eq!(
        send(
            reqwest::Method::POST,
            &edge2,
            "/api/v1/nodes",
            node("edge-2")
        )
        .await,
        201
    );
    assert_eq!(
        send(
            reqwest::Method::POST,
            &edge1,
            "/api/v1/nodes",
            node("edge-3")
        )
        .await,
        403
    );
    let label = json!({"metadata": {"labels": {"owned": "yes"}}});
    assert_eq!(
        send(
            reqwest::Method::PATCH,
            &edge1,
            "/api/v1/nodes/edge-1",
            label.clone()
        )
        .await,
        200
    );
    assert_eq!(
        send(
            reqwest::Method::PATCH,
            &edge1,
            "/api/v1/nodes/edge-2",
            label.clone()
        )
        .await,
        403
    );
    // Nor can a node grant itself anything through RBAC.
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "mine"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:node:edge-1"}]});
    assert_eq!(
        send(
            reqwest::Method::POST,
            &edge1,
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            binding
        )
        .await,
        403
    );
    assert_eq!(
        send(
            reqwest::Method::POST,
            &edge1,
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            json!({"spec": {}})
        )
        .await,
        403
    );
}

/// Each kubectl (1.31 sends JSON, newer ones protobuf) creates RBAC objects and tokens and asks
/// `auth can-i` and `auth whoami`.
#[test]
fn every_kubectl_speaks_rbac_tokens_and_reviews() {
    let server = Server::start();
    for (i, kubectl) in [
        Kubectl::version("31"),
        Kubectl::version("33"),
        Kubectl::latest(),
    ]
    .into_iter()
    .enumerate()
    {
        let k = Kc::new(kubectl, &server);
        let ns = format!("t{i}");
        let n = ns.as_str();
        k.ok(&["create", "namespace", n]);
        k.ok(&["-n", n, "create", "serviceaccount", "bot"]);
        k.ok(&[
            "-n",
            n,
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
        ]);
        let sa = format!("--serviceaccount={n}:bot");
        k.ok(&[
            "-n",
            n,
            "create",
            "rolebinding",
            "bot",
            "--role=pod-reader",
            &sa,
        ]);
        let agg = format!("agg-{i}");
        k.ok(&[
            "create",
            "clusterrole",
            &agg,
            "--aggregation-rule=example.com/aggregate=true",
        ]);
        let group = format!("--group=team-{i}");
        k.ok(&[
            "create",
            "clusterrolebinding",
            &agg,
            &format!("--clusterrole={agg}"),
            &group,
        ]);
        assert!(
            k.ok(&["get", "clusterrolebinding", &agg, "-o", "wide"])
                .contains(&format!("team-{i}"))
        );
        let token = k.ok(&["-n", n, "create", "token", "bot", "--duration=20m"]);
        let token = token.trim();
        let can_i = |verb: &str| {
            let out = k.run_stdin(
                &as_token(&["auth", "can-i", verb, "pods", "-n", n], token),
                None,
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(
            (can_i("list"), can_i("delete")),
            ("yes".into(), "no".into()),
            "{}",
            k.kubectl.version
        );
        assert!(
            k.ok(&as_token(&["auth", "whoami"], token))
                .contains(&format!("system:serviceaccount:{n}:bot"))
        );
        let rules = k.ok(&as_token(&["auth", "can-i", "--list", "-n", n], token));
        assert!(
            rules
                .lines()
                .any(|l| l.starts_with("pods ") && l.contains("[get list]")),
            "{rules}"
        );
    }
}

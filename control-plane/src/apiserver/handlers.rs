//! Request parsing and dispatch: path → resource, method → verb, query → options.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use rand::Rng as _;
use serde_json::{Value, json};
use skiff_api::fields::FieldSelector;
use skiff_api::labels::Selector;

use super::table::{self, IncludeObject};
use super::{Server, User, access, discovery, protobuf, reviews};
use crate::api::resources::{self, ResourceDef};
use crate::api::{
    Api, ApiError, DeleteOptions, FieldValidation, ListOptions, PatchType, RawEvent, Target,
    WriteOptions, object,
};
use crate::auth::Attributes;

/// Request bodies larger than this are refused, as kube-apiserver does (3 MiB).
const MAX_BODY: usize = 3 << 20;

type Query = HashMap<String, String>;

/// Handles one request; never fails (errors become Status responses).
pub(super) async fn handle(
    server: Arc<Server>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let verb = method.as_str().to_string();
    let response = match route(&server, req).await {
        Ok(r) => r,
        Err(e) => status_response(&e),
    };
    server.count(&verb, response.status().as_u16());
    tracing::debug!(%method, %path, code = response.status().as_u16(), "request");
    response
}

async fn route(
    server: &Arc<Server>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    if matches!(path.as_str(), "/healthz" | "/livez") {
        return Ok(text(StatusCode::OK, "ok"));
    }
    if path == "/readyz" {
        return Ok(readyz(server, req.uri().query()));
    }
    if path == "/skiff/ca" && req.method() == Method::GET {
        return Ok(text(StatusCode::OK, &server.ca_pem));
    }
    if path == "/skiff/join" && req.method() == Method::POST {
        return join(server, req).await;
    }
    let Some(user) = server.authenticate(req.headers().get(header::AUTHORIZATION)) else {
        return Err(ApiError::unauthorized());
    };
    let user = if req
        .headers()
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-"))
    {
        access::impersonate(server, user, req.headers())?
    } else {
        user
    };
    let query: Query = req.uri().query().map(form_urlencoded).unwrap_or_default();
    if let Some(reference) = path.strip_prefix("/skiff/modules/") {
        let reference = percent_decode(reference);
        if let User::Subject(info) = &user {
            let verb = if req.method() == Method::PUT {
                "create"
            } else {
                "get"
            };
            access::check(
                server,
                info,
                &Attributes::resource(verb, "skiff.dev", "modules", "", "", ""),
            )?;
        }
        return match (req.method().clone(), &user) {
            (Method::PUT, User::Admin | User::Subject(_)) => {
                let (parts, body) = req.into_parts();
                let bytes = read_body_up_to(body, super::modules::MAX_MODULE)
                    .await
                    .map_err(|e| {
                        if e.code == 413 {
                            ApiError::new(
                                413,
                                "RequestEntityTooLarge",
                                format!(
                                    "module {reference} is larger than the {} MiB limit",
                                    super::modules::MAX_MODULE >> 20
                                ),
                            )
                        } else {
                            e
                        }
                    })?;
                super::modules::push(server, &reference, &parts.headers, bytes).await
            }
            (Method::GET, _) => super::modules::fetch(
                server,
                &reference,
                query.get("resolve").is_some_and(|v| v == "true"),
            ),
            (Method::PUT, User::Node(node)) => Err(ApiError::new(
                403,
                "Forbidden",
                format!("User \"system:node:{node}\" cannot push modules"),
            )),
            _ => Err(ApiError::new(405, "MethodNotAllowed", "use GET or PUT")),
        };
    }
    let segs: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let get = req.method() == Method::GET;
    let resource_request = matches!(segs.as_slice(), ["api", _, _, ..] | ["apis", _, _, _, ..]);
    if !resource_request && let User::Subject(info) = &user {
        let verb = req.method().as_str().to_ascii_lowercase();
        access::check(
            server,
            info,
            &Attributes::non_resource(&verb, req.uri().path()),
        )?;
    }
    if let Some((review, ns)) = reviews::find(&segs) {
        reviews::authorize(server, &user, review, ns.as_deref())?;
        if req.method() != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let (parts, body) = req.into_parts();
        let body = read_object(&parts.headers, body, review).await?;
        return reviews::review(server, &user, review, ns.as_deref(), body);
    }
    match segs.as_slice() {
        ["version"] if get => return Ok(json_response(StatusCode::OK, &discovery::version())),
        ["metrics"] if get => return Ok(text(StatusCode::OK, &metrics(server))),
        ["api"] if get => {
            return Ok(json_response(
                StatusCode::OK,
                &discovery::core_versions(&server.server_address),
            ));
        }
        ["apis"] if get => return Ok(json_response(StatusCode::OK, &discovery::groups())),
        ["api", v] if get => {
            return discovery::resource_list("", v)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(ApiError::path_not_found);
        }
        ["apis", g] if get => {
            return discovery::group(g)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(ApiError::path_not_found);
        }
        ["apis", g, v] if get => {
            return discovery::resource_list(g, v)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(ApiError::path_not_found);
        }
        ["openapi", "v3"] if get => {
            return Ok(json_response(StatusCode::OK, &discovery::openapi_index()));
        }
        ["openapi", "v3", rest @ ..] if get => {
            return discovery::openapi_group_version(&rest.join("/"))
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(ApiError::path_not_found);
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    let target = parse_resource_path(group, version, rest).ok_or_else(ApiError::path_not_found)?;
    // A subresource the kind does not serve is 404 before anyone is authorized for it, so no
    // authorizer can be asked about, or let through, a path that would be served as another.
    if let Some(sub) = &target.sub
        && !discovery::serves_subresource(target.res, sub)
    {
        return Err(ApiError::path_not_found());
    }
    let (parts, body) = req.into_parts();
    match &user {
        User::Admin => {}
        User::Node(node) => authorize_node(server, node, &parts.method, &target)?,
        User::Subject(info) => access::check(
            server,
            info,
            &request_attributes(&parts.method, &target, &query),
        )?,
    }
    dispatch(
        server,
        &user,
        &parts.method,
        &parts.headers,
        &query,
        target,
        body,
    )
    .await
}

/// `POST /skiff/join`: an agent presents the node join token and its public key, and gets its
/// node credential.
async fn join(
    server: &Arc<Server>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !server.nodes.is_join_token(token.trim()) {
        return Err(ApiError::unauthorized());
    }
    let raw = read_body(req.into_body()).await?;
    let request: super::nodes::JoinRequest = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::bad_request(format!("invalid join request: {e}")))?;
    let response = server.nodes.join(&request).map_err(ApiError::bad_request)?;
    tracing::info!(node = %request.node_name, "node joined");
    Ok(json_response(StatusCode::OK, &serde_json::json!(response)))
}

/// What a node may do: read, and write only its own Node and Lease, the status of pods bound
/// to it (and their final deletion), and events. Creates are checked on the object's name in
/// [`authorize_node_create`].
fn authorize_node(
    server: &Arc<Server>,
    node: &str,
    method: &Method,
    target: &ResourcePath,
) -> Result<(), ApiError> {
    let res = target.res;
    let name = target.name.as_deref().unwrap_or("");
    let own_pod = || {
        server
            .api
            .get(res, target.ns.as_deref(), name)
            .ok()
            .is_some_and(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
    };
    let allowed = match (method, target.name.as_deref(), target.sub.as_deref()) {
        // Secrets and ConfigMaps: only those a pod bound to this node names.
        (&Method::GET, Some(n), None) if matches!(res.kind, "Secret" | "ConfigMap") => {
            needed_by_node(
                server,
                node,
                target.ns.as_deref().unwrap_or(""),
                res.kind,
                n,
            )
        }
        (&Method::GET, None, _) if matches!(res.kind, "Secret" | "ConfigMap") => false,
        // Logs only of the pods it runs.
        (&Method::GET, Some(_), Some("log")) => res.kind == "Pod" && own_pod(),
        (&Method::GET, _, _) => true,
        (&Method::POST, None, None) => matches!(res.kind, "Node" | "Lease" | "Event"),
        (&Method::PUT | &Method::PATCH, Some(n), _) if res.kind == "Node" => n == node,
        (&Method::PUT | &Method::PATCH, Some(n), None) if res.kind == "Lease" => {
            n == node && target.ns.as_deref() == Some("kube-node-lease")
        }
        (&Method::PUT | &Method::PATCH, Some(_), Some("status")) if res.kind == "Pod" => own_pod(),
        (&Method::DELETE, Some(_), None) if res.kind == "Pod" => own_pod(),
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    Err(node_forbidden(node, method, target))
}

/// Whether a pod bound to `node` in `ns` names the Secret or ConfigMap `name` (env, envFrom or
/// a volume).
fn needed_by_node(server: &Server, node: &str, ns: &str, kind: &str, name: &str) -> bool {
    let Ok(fields) = skiff_api::fields::FieldSelector::parse(&format!("spec.nodeName={node}"))
    else {
        return false;
    };
    let opts = ListOptions {
        fields,
        ..Default::default()
    };
    let Ok(pods) = server.api.list(resources::core("pods"), Some(ns), &opts) else {
        return false;
    };
    let (env_ref, from_ref, volume, volume_key) = match kind {
        "Secret" => ("secretKeyRef", "secretRef", "secret", "secretName"),
        _ => ("configMapKeyRef", "configMapRef", "configMap", "name"),
    };
    let names = |v: &Value| v.as_str() == Some(name);
    pods.items.iter().any(|pod| {
        let spec = &pod["spec"];
        let containers = ["containers", "initContainers"]
            .iter()
            .flat_map(|k| spec[*k].as_array().into_iter().flatten());
        let in_containers = containers.clone().any(|c| {
            c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| names(&e["valueFrom"][env_ref]["name"]))
                || c["envFrom"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| names(&e[from_ref]["name"]))
        });
        in_containers
            || spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| names(&v[volume][volume_key]))
    })
}

fn node_forbidden(node: &str, method: &Method, target: &ResourcePath) -> ApiError {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    let resource = match &target.sub {
        Some(sub) => format!("{}/{sub}", target.res.plural),
        None => target.res.plural.to_string(),
    };
    let scope = match &target.ns {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    ApiError::forbidden(
        target.res,
        target.name.as_deref().unwrap_or(""),
        format!(
            "User \"system:node:{node}\" cannot {verb} resource \"{resource}\" in API group \"{}\"{scope}: a node may change only its own Node and Lease and the pods bound to it, and read only the secrets and configmaps those pods name",
            target.res.group
        ),
    )
}

/// A node creates only its own Node and Lease (in `kube-node-lease`), and events.
fn authorize_node_create(node: &str, target: &ResourcePath, obj: &Value) -> Result<(), ApiError> {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str);
    let ok = match target.res.kind {
        "Node" => name == Some(node),
        "Lease" => name == Some(node) && target.ns.as_deref() == Some("kube-node-lease"),
        "Event" => true,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(node_forbidden(node, &Method::POST, target))
}

/// The authorization attributes of a resource request, as upstream's RequestInfo derives
/// them: the verb from the method (a collection GET is `list`, or `watch`), a namespace's own
/// name as its namespace, and a list or watch of one `metadata.name` as a request for that name.
fn request_attributes<'a>(
    method: &Method,
    target: &'a ResourcePath,
    query: &'a Query,
) -> Attributes<'a> {
    let collection = target.name.is_none();
    let verb = match *method {
        Method::GET | Method::HEAD if collection => {
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                "watch"
            } else {
                "list"
            }
        }
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => "",
    };
    let name = match &target.name {
        Some(n) => n.as_str(),
        None if matches!(verb, "list" | "watch") => query
            .get("fieldSelector")
            .into_iter()
            .flat_map(|f| f.split(','))
            .find_map(|term| {
                term.strip_prefix("metadata.name==")
                    .or_else(|| term.strip_prefix("metadata.name="))
            })
            .filter(|n| !n.is_empty() && !n.contains(['/', '%']))
            .unwrap_or(""),
        None => "",
    };
    let namespace = if target.res.group.is_empty() && target.res.plural == "namespaces" {
        target.name.as_deref().unwrap_or("")
    } else {
        target.ns.as_deref().unwrap_or("")
    };
    Attributes::resource(
        verb,
        target.res.group,
        target.res.plural,
        target.sub.as_deref().unwrap_or(""),
        namespace,
        name,
    )
}

/// A parsed resource path.
struct ResourcePath {
    res: &'static ResourceDef,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_resource_path(group: &str, version: &str, rest: &[&str]) -> Option<ResourcePath> {
    let find = |plural: &str| resources::find(group, version, plural);
    let simple =
        |res: &'static ResourceDef, rest: &[&str], ns: Option<String>| -> Option<ResourcePath> {
            match rest {
                [] => Some(ResourcePath {
                    res,
                    ns,
                    name: None,
                    sub: None,
                }),
                [name] => Some(ResourcePath {
                    res,
                    ns,
                    name: Some(name.to_string()),
                    sub: None,
                }),
                [name, sub] => Some(ResourcePath {
                    res,
                    ns,
                    name: Some(name.to_string()),
                    sub: Some(sub.to_string()),
                }),
                _ => None,
            }
        };
    match rest {
        // /namespaces/<ns>/<namespaced resource>/...
        ["namespaces", ns, plural, tail @ ..]
            if !group.is_empty() || !matches!(*plural, "status" | "finalize") =>
        {
            let res = find(plural).filter(|r| r.namespaced)?;
            simple(res, tail, Some(ns.to_string()))
        }
        [plural, tail @ ..] => {
            let res = find(plural)?;
            if res.namespaced && !tail.is_empty() {
                return None;
            }
            simple(res, tail, None)
        }
        [] => None,
    }
}

async fn dispatch(
    server: &Arc<Server>,
    user: &User,
    method: &Method,
    headers: &HeaderMap,
    query: &Query,
    path: ResourcePath,
    body: hyper::body::Incoming,
) -> Result<Response<Body>, ApiError> {
    let api = &server.api;
    let res = path.res;
    let ns = path.ns.as_deref();
    let table_format = wants_table(headers);
    let write_opts = || -> Result<WriteOptions, ApiError> {
        Ok(WriteOptions {
            dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
            field_validation: FieldValidation::parse(
                query
                    .get("fieldValidation")
                    .map(String::as_str)
                    .unwrap_or(""),
            )?,
            field_manager: query.get("fieldManager").cloned(),
        })
    };
    match (method, path.name.as_deref(), path.sub.as_deref()) {
        (&Method::GET, None, None) => {
            let opts = list_options(query)?;
            if let Some(rv) = required_revision(query) {
                api.wait_for_revision(rv, FRESHNESS_WAIT).await;
            }
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch(server, res, ns, query, &opts, table_format);
            }
            if table_format {
                let list = api.list(res, ns, &opts)?;
                let t = table::table(
                    res,
                    &list.items,
                    list.resource_version,
                    list.continue_token.as_deref(),
                    include_object(query),
                    true,
                );
                return Ok(json_response(StatusCode::OK, &t));
            }
            // The items' JSON is made once per object version and shared with every other
            // list and watch that sends it.
            let list = api.list_raw(res, ns, &opts)?;
            let mut meta = json!({"resourceVersion": list.resource_version.to_string()});
            if let Some(c) = &list.continue_token {
                meta["continue"] = json!(c);
            }
            let mut body = serde_json::to_vec(
                &json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": meta}),
            )
            .expect("serializable");
            body.pop(); // the closing brace: the items follow
            body.extend_from_slice(b",\"items\":[");
            for (i, o) in list.items.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&Api::json_of(res, o)?);
            }
            body.extend_from_slice(b"]}");
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .expect("valid response"))
        }
        (&Method::GET, Some(name), sub) => {
            let obj = match sub {
                None | Some("status") => api.get(res, ns, name)?,
                Some("scale") => api.get_scale(res, ns, name)?,
                Some("log") if res.kind == "Pod" => {
                    return pod_log(server, ns.unwrap_or_default(), name, query).await;
                }
                _ => return Err(ApiError::path_not_found()),
            };
            if table_format && sub.is_none() {
                let rv = object::meta_str(&obj, "resourceVersion")
                    .parse()
                    .unwrap_or(0);
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(
                        res,
                        std::slice::from_ref(&obj),
                        rv,
                        None,
                        include_object(query),
                        true,
                    ),
                ));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (&Method::POST, None, None) => {
            let obj = read_object(headers, body, res).await?;
            match user {
                User::Node(node) => authorize_node_create(node, &path, &obj)?,
                User::Subject(info) => access::check_escalation(server, info, res, ns, &obj)?,
                User::Admin => {}
            }
            let written = api.create(res, ns, obj, &write_opts()?).await?;
            caught_up(server, res, &written.object).await;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &written.object),
                &written.warnings,
            ))
        }
        (&Method::POST, Some(name), Some("token")) if res.kind == "ServiceAccount" => {
            let request = read_object(headers, body, res).await?;
            reviews::token_request(server, ns.unwrap_or_default(), name, request).await
        }
        (&Method::POST, Some(name), Some("binding")) if res.kind == "Pod" => {
            let binding = read_object(headers, body, resources::core("pods")).await?;
            let status = api.bind(ns.unwrap_or_default(), name, &binding).await?;
            Ok(json_response(StatusCode::CREATED, &status))
        }
        (&Method::PUT, Some(name), sub) => {
            let target = target_of(res, sub)?;
            let obj = read_object(headers, body, res).await?;
            if let User::Subject(info) = user {
                access::check_escalation(server, info, res, ns, &obj)?;
            }
            let written = api
                .update(res, ns, name, obj, target, &write_opts()?)
                .await?;
            caught_up(server, res, &written.object).await;
            Ok(with_warnings(
                json_response(StatusCode::OK, &written.object),
                &written.warnings,
            ))
        }
        (&Method::PATCH, Some(name), sub) => {
            let target = target_of(res, sub)?;
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let patch_type = PatchType::from_content_type(ct)
                .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            let raw = read_body(body).await?;
            let patch: Value = if patch_type == PatchType::Apply {
                serde_yaml::from_slice(&raw)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
            } else {
                serde_json::from_slice(&raw)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
            };
            if let User::Subject(info) = user {
                // Server-side apply may create the object: that takes `create` too.
                if patch_type == PatchType::Apply
                    && matches!(api.get(res, ns, name), Err(e) if e.code == 404)
                {
                    access::check(
                        server,
                        info,
                        &request_attributes(&Method::POST, &path, query),
                    )?;
                }
                // Whoever may patch a role or binding may still grant only what they hold.
                if res.group == crate::auth::RBAC_GROUP {
                    let mut dry = write_opts()?;
                    dry.dry_run = true;
                    let would = api
                        .patch(res, ns, name, patch_type, patch.clone(), target, &dry)
                        .await?;
                    access::check_escalation(server, info, res, ns, &would.object)?;
                }
            }
            let written = api
                .patch(res, ns, name, patch_type, patch, target, &write_opts()?)
                .await?;
            caught_up(server, res, &written.object).await;
            Ok(with_warnings(
                json_response(StatusCode::OK, &written.object),
                &written.warnings,
            ))
        }
        (&Method::DELETE, Some(name), None) => {
            let opts = delete_options(query, read_body(body).await?)?;
            let obj = api.delete(res, ns, name, &opts).await?;
            caught_up(server, res, &obj).await;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (&Method::DELETE, None, None) => {
            let opts = delete_options(query, read_body(body).await?)?;
            let list = api.list(res, ns, &list_options(query)?)?;
            let mut deleted = Vec::new();
            for item in list.items {
                let item_ns = Some(object::namespace(&item)).filter(|n| !n.is_empty());
                match api.delete(res, item_ns, object::name(&item), &opts).await {
                    Ok(obj) => deleted.push(obj),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(last) = deleted.last() {
                caught_up(server, res, last).await;
            }
            let body = json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": {"resourceVersion": api.revision().to_string()}, "items": deleted});
            Ok(json_response(StatusCode::OK, &body))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// After a write of a role, binding or service account, waits until authentication and
/// authorization see it, so the writer's next request is judged by it.
async fn caught_up(server: &Server, res: &'static ResourceDef, written: &Value) {
    if crate::auth::Cache::follows(res)
        && let Ok(rv) = object::meta_str(written, "resourceVersion").parse()
    {
        server.auth.caught_up(res, rv).await;
    }
}

fn target_of(res: &ResourceDef, sub: Option<&str>) -> Result<Target, ApiError> {
    match sub {
        None => Ok(Target::Main),
        Some("status") if res.status => Ok(Target::Status),
        Some("scale") if res.scale => Ok(Target::Scale),
        Some("finalize") if res.kind == "Namespace" => Ok(Target::Finalize),
        _ => Err(ApiError::path_not_found()),
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| part.contains("as=Table") && part.contains("g=meta.k8s.io"))
}

fn include_object(query: &Query) -> IncludeObject {
    match query.get("includeObject").map(String::as_str) {
        Some("Object") => IncludeObject::Object,
        Some("None") => IncludeObject::None,
        _ => IncludeObject::Metadata,
    }
}

fn list_options(query: &Query) -> Result<ListOptions, ApiError> {
    let labels = match query.get("labelSelector") {
        Some(s) => Selector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Selector::everything(),
    };
    let fields = match query.get("fieldSelector") {
        Some(s) => FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => FieldSelector::default(),
    };
    // An int64 as upstream parses it; zero or negative means no limit (its storage pages only
    // when `limit > 0`).
    let limit = match query.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .map(|l| usize::try_from(l).unwrap_or(0))
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
        None => 0,
    };
    let opts = ListOptions {
        labels,
        fields,
        limit,
        continue_token: query.get("continue").filter(|c| !c.is_empty()).cloned(),
        resource_version: query
            .get("resourceVersion")
            .filter(|v| !v.is_empty())
            .cloned(),
        resource_version_match: query
            .get("resourceVersionMatch")
            .filter(|v| !v.is_empty())
            .cloned(),
        bookmarks: query
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true"),
    };
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watching && let Some(m) = &opts.resource_version_match {
        // kube-apiserver's ValidateListOptions, in its order and words.
        let forbidden =
            |msg: &str| skiff_api::validation::FieldError::forbidden("resourceVersionMatch", msg);
        let mut errors = Vec::new();
        if opts.resource_version.is_none() {
            errors.push(forbidden(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if opts.continue_token.is_some() {
            errors.push(forbidden(
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if m != "Exact" && m != "NotOlderThan" {
            errors.push(skiff_api::validation::FieldError::not_supported(
                "resourceVersionMatch",
                m,
                &["Exact", "NotOlderThan", ""],
            ));
        }
        if m == "Exact" && opts.resource_version.as_deref() == Some("0") {
            errors.push(forbidden(
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(&LIST_OPTIONS, "", &errors));
        }
    }
    Ok(opts)
}

/// What list option errors name, as kube-apiserver's `ListOptions.meta.k8s.io "" is invalid`.
static LIST_OPTIONS: ResourceDef = ResourceDef {
    group: "meta.k8s.io",
    version: "v1",
    plural: "listoptions",
    singular: "listoptions",
    kind: "ListOptions",
    namespaced: false,
    short_names: &[],
    categories: &[],
    status: false,
    scale: false,
    generation: false,
};

/// How long a read at a resourceVersion the server has not reached waits for it (as
/// kube-apiserver's watch cache) before answering "Too large resource version".
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

/// The resourceVersion a list or watch needs the server to have reached.
fn required_revision(query: &Query) -> Option<u64> {
    query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .filter(|rv| *rv > 0)
}

fn delete_options(query: &Query, body: Bytes) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let grace = match query.get("gracePeriodSeconds") {
        Some(g) => Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?,
        ),
        None => body["gracePeriodSeconds"].as_i64(),
    };
    let mut propagation = query
        .get("propagationPolicy")
        .cloned()
        .or_else(|| body["propagationPolicy"].as_str().map(String::from));
    // The legacy flag: orphanDependents=true means Orphan.
    if propagation.is_none()
        && (body["orphanDependents"] == json!(true)
            || query.get("orphanDependents").is_some_and(|o| o == "true"))
    {
        propagation = Some("Orphan".into());
    }
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All")
        || body["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d == "All"));
    Ok(DeleteOptions {
        grace_period_seconds: grace,
        propagation_policy: propagation,
        precondition_uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        precondition_rv: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        dry_run,
    })
}

async fn read_body(body: hyper::body::Incoming) -> Result<Bytes, ApiError> {
    read_body_up_to(body, MAX_BODY).await
}

async fn read_body_up_to(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError {
                code: 413,
                reason: "RequestEntityTooLarge",
                message: "the server has received a request that is too large".into(),
                details: None,
            })
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "failed to read the request body: {e}"
        ))),
    }
}

/// Decodes a request body by Content-Type: JSON (also when absent), YAML or protobuf.
async fn read_object(
    headers: &HeaderMap,
    body: hyper::body::Incoming,
    res: &ResourceDef,
) -> Result<Value, ApiError> {
    let raw = read_body(body).await?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    let value: Value = match media {
        "" | "application/json" | "*/*" => {
            serde_json::from_slice(&raw).map_err(|e| decode_error(res, e))?
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            serde_yaml::from_slice(&raw).map_err(|e| decode_error(res, e))?
        }
        "application/vnd.kubernetes.protobuf" => {
            protobuf::decode(&raw).map_err(|e| decode_error(res, e))?
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of the request must be a {} object",
            res.kind
        )));
    }
    Ok(value)
}

fn decode_error(res: &ResourceDef, e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
        kind = res.kind,
        v = res.version
    ))
}

fn watch(
    server: &Arc<Server>,
    res: &'static ResourceDef,
    ns: Option<&str>,
    query: &Query,
    opts: &ListOptions,
    table_format: bool,
) -> Result<Response<Body>, ApiError> {
    let send_initial = query.get("sendInitialEvents").is_some_and(|s| s == "true");
    // kube-apiserver's validateWatchOptions: sendInitialEvents, given at all (true or false),
    // needs resourceVersionMatch=NotOlderThan, and that match needs sendInitialEvents.
    let given = query.contains_key("sendInitialEvents");
    let matching = query
        .get("resourceVersionMatch")
        .map(String::as_str)
        .filter(|m| !m.is_empty());
    use skiff_api::validation::FieldError;
    let mut errors = Vec::new();
    if given && matching != Some("NotOlderThan") {
        errors.push(FieldError::forbidden(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan",
        ));
    }
    if let Some(m) = matching {
        if !given {
            errors.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if m != "NotOlderThan" {
            errors.push(FieldError::not_supported(
                "resourceVersionMatch",
                m,
                &["NotOlderThan"],
            ));
        }
        if opts.continue_token.is_some() {
            errors.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(res, "", &errors));
    }
    let rv = query.get("resourceVersion").map(String::as_str);
    let events = server.api.watch_raw(res, ns, opts, rv, send_initial)?;
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t}")))?,
        None => 0,
    };
    // kube-apiserver's default, also for 0: between 30 and 60 minutes.
    let timeout = match timeout {
        0 => Duration::from_secs(rand::rng().random_range(1800..3600)),
        t => Duration::from_secs(t),
    };
    let include = include_object(query);
    let state = WatchState {
        events,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        shutdown: server.shutdown.clone(),
        res,
        table: table_format,
        include,
        first: true,
        done: false,
    };
    let stream =
        futures::stream::unfold(state, WatchState::next).map(Ok::<_, std::convert::Infallible>);
    let content_type = if table_format {
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    } else {
        "application/json"
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

struct WatchState {
    events: BoxStream<'static, RawEvent>,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    shutdown: tokio_util::sync::CancellationToken,
    res: &'static ResourceDef,
    table: bool,
    include: IncludeObject,
    first: bool,
    done: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Bytes, Self)> {
        if self.done {
            return None;
        }
        let event = tokio::select! {
            ev = self.events.next() => ev?,
            _ = self.deadline.as_mut() => return None,
            _ = self.shutdown.cancelled() => return None,
        };
        let (kind, object) = match event {
            RawEvent::Added(o) => ("ADDED", o),
            RawEvent::Modified(o) => ("MODIFIED", o),
            RawEvent::Deleted(o) => ("DELETED", o),
            RawEvent::Bookmark {
                revision,
                initial_end,
            } => {
                let mut meta = json!({"resourceVersion": revision.to_string()});
                if initial_end {
                    meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                }
                let object = json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": meta});
                return Some((watch_line("BOOKMARK", &object), self));
            }
            RawEvent::Error(e) => {
                self.done = true;
                return Some((error_line(&e), self));
            }
        };
        if self.table {
            let obj = match Api::decode_cached(self.res, &object) {
                Ok(obj) => obj,
                Err(e) => {
                    self.done = true;
                    return Some((error_line(&e), self));
                }
            };
            let t = table::table(
                self.res,
                std::slice::from_ref(&obj),
                object.kv.mod_revision,
                None,
                self.include,
                self.first,
            );
            self.first = false;
            return Some((watch_line(kind, &t), self));
        }
        // The object's JSON is shared by every watcher the event reaches.
        match Api::json_of(self.res, &object) {
            Ok(json) => {
                let mut line = Vec::with_capacity(json.len() + 32);
                line.extend_from_slice(b"{\"type\":\"");
                line.extend_from_slice(kind.as_bytes());
                line.extend_from_slice(b"\",\"object\":");
                line.extend_from_slice(&json);
                line.extend_from_slice(b"}\n");
                Some((Bytes::from(line), self))
            }
            Err(e) => {
                self.done = true;
                Some((error_line(&e), self))
            }
        }
    }
}

/// A watch ERROR event; the Status keeps kube-apiserver's field order (clients compare error
/// text).
fn error_line(e: &ApiError) -> Bytes {
    let mut line = br#"{"type":"ERROR","object":"#.to_vec();
    line.extend(e.status_json());
    line.extend(b"}\n");
    Bytes::from(line)
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serializable");
    line.push(b'\n');
    Bytes::from(line)
}

/// `pods/<name>/log`. Containers run on agents; until a pod is running there is no log, and the
/// answer says why, as the kubelet would.
async fn pod_log(
    server: &Server,
    ns: &str,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let api = &server.api;
    let pods = resources::core("pods");
    let pod = api.get(pods, Some(ns), name)?;
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    let container = match query.get("container") {
        Some(c) if containers.contains(c) || init.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            let init = if init.is_empty() {
                String::new()
            } else {
                format!(" or one of the init containers: [{}]", init.join(" "))
            };
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]{init}",
                containers.join(" ")
            )));
        }
    };
    let status = ["/status/containerStatuses", "/status/initContainerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .find(|s| s["name"] == container.as_str())
        .cloned()
        .unwrap_or_default();
    let has_run =
        status["containerID"].is_string() || status.pointer("/lastState/terminated").is_some();
    match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
        Some(node) if has_run => {
            let passed: Vec<String> = [
                "follow",
                "tailLines",
                "timestamps",
                "previous",
                "sinceSeconds",
                "sinceTime",
                "limitBytes",
            ]
            .iter()
            .filter_map(|k| {
                let v = query.get(*k)?;
                let safe = v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-:.".contains(c));
                safe.then(|| format!("{k}={v}"))
            })
            .collect();
            let path = format!("/containerLogs/{ns}/{name}/{container}");
            super::agents::container_logs(server, node, &path, &passed.join("&")).await
        }
        _ => {
            let reason = status
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .unwrap_or("ContainerCreating");
            Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
            )))
        }
    }
}

fn metrics(server: &Server) -> String {
    let mut out = String::from(
        "# HELP skiff_apiserver_requests_total Requests served, by HTTP method and code.\n# TYPE skiff_apiserver_requests_total counter\n",
    );
    for ((verb, code), n) in server
        .metrics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        out.push_str(&format!(
            "skiff_apiserver_requests_total{{verb=\"{verb}\",code=\"{code}\"}} {n}\n"
        ));
    }
    let store = server.api.store();
    out.push_str(&format!(
        "# HELP skiff_store_revision The store's current revision.\n# TYPE skiff_store_revision gauge\nskiff_store_revision {}\n# HELP skiff_store_compacted_revision The oldest revision a watch can resume from.\n# TYPE skiff_store_compacted_revision gauge\nskiff_store_compacted_revision {}\n",
        store.revision(),
        server.api.oldest_revision()
    ));
    out.push_str(&format!(
        "# HELP skiff_watch_cache_offers_total Changes offered to watchers by the watch cache's dispatch.\n# TYPE skiff_watch_cache_offers_total counter\nskiff_watch_cache_offers_total {}\n# HELP skiff_watch_cache_watchers Watches the watch cache serves.\n# TYPE skiff_watch_cache_watchers gauge\nskiff_watch_cache_watchers {}\n# HELP skiff_events_dropped_total Events dropped because too many were waiting to be written.\n# TYPE skiff_events_dropped_total counter\nskiff_events_dropped_total {}\n# HELP skiff_cache_decodes_total Cached versions decoded for in-process readers (controllers, the scheduler), each shared by all of them.\n# TYPE skiff_cache_decodes_total counter\nskiff_cache_decodes_total {}\n",
        server.api.watch_offers(),
        server.api.watchers(),
        server.api.events_dropped(),
        server.api.decodes()
    ));
    out
}

fn form_urlencoded(q: &str) -> Query {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("serializable")))
        .expect("valid response")
}

/// `/readyz[?verbose]`: the health checks (every controller), 500 while any fails.
fn readyz(server: &Server, query: Option<&str>) -> Response<Body> {
    let verbose = query
        .map(form_urlencoded)
        .is_some_and(|q| q.contains_key("verbose"));
    let report = server.checks.report();
    let code = if report.passed() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    text(code, &report.body("readyz", verbose))
}

fn text(code: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body.to_string()))
        .expect("valid response")
}

fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let value = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            r.headers_mut().append("Warning", v);
        }
    }
    r
}

/// The one place an [`ApiError`] becomes an HTTP response.
pub(super) fn status_response(e: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(e.status_json()))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_reports_a_dead_controller_with_500_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::store::SledStore::open(crate::store::SledConfig::new(dir.path().join("db")))
                .unwrap();
        let api = crate::api::Api::new(Arc::new(store), crate::api::Config::default());
        api.bootstrap().await.unwrap();
        let identity = super::super::pki::Identity::load_or_create(dir.path(), &[]).unwrap();
        let checks = crate::health::Checks::default();
        let server = Server::new(
            api.clone(),
            &identity,
            crate::auth::Cache::load(&api).unwrap(),
            super::super::nodes::NodeRegistry::load(
                dir.path().join("nodes"),
                identity.node_secret.clone(),
            )
            .unwrap(),
            super::super::modules::ModuleStore::new(dir.path().join("modules")),
            "127.0.0.1:0".into(),
            checks.clone(),
            tokio_util::sync::CancellationToken::new(),
        );
        let get = async |query: Option<&str>| {
            let r = readyz(&server, query);
            let code = r.status().as_u16();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (code, String::from_utf8(body.to_vec()).unwrap())
        };
        checks.pass("controller/job");
        checks.pass("controller/deployment");
        assert_eq!(get(None).await, (200, "ok".to_string()));
        assert_eq!(
            get(Some("verbose")).await,
            (
                200,
                "[+]ping ok\n[+]controller/deployment ok\n[+]controller/job ok\nreadyz check passed\n"
                    .to_string()
            )
        );
        checks.fail("controller/job", "panicked: boom");
        let failed = (
            500,
            "[+]ping ok\n[+]controller/deployment ok\n[-]controller/job failed: panicked: boom\nreadyz check failed\n"
                .to_string(),
        );
        assert_eq!(get(Some("verbose")).await, failed);
        assert_eq!(get(None).await, failed);
        checks.pass("controller/job");
        assert_eq!(get(None).await, (200, "ok".to_string()));
    }

    #[test]
    fn decodes_query_strings() {
        let q = form_urlencoded("labelSelector=app%3Dweb%2Ctier+notin+%28db%29&limit=500&x=%zz");
        assert_eq!(q["labelSelector"], "app=web,tier notin (db)");
        assert_eq!(q["limit"], "500");
        assert_eq!(q["x"], "%zz");
    }

    #[test]
    fn a_negative_or_zero_limit_lists_everything_and_a_bad_one_names_it() {
        let limit =
            |l: &str| list_options(&form_urlencoded(&format!("limit={l}"))).map(|o| o.limit);
        assert_eq!(limit("-1").unwrap(), 0);
        assert_eq!(limit("-9223372036854775808").unwrap(), 0);
        assert_eq!(limit("0").unwrap(), 0);
        assert_eq!(limit("9223372036854775807").unwrap(), 9223372036854775807);
        for bad in ["9223372036854775808", "x", "1.5"] {
            let e = limit(bad).unwrap_err();
            assert_eq!(e.code, 400);
            assert!(e.message.contains("limit"), "{}", e.message);
        }
    }

    #[test]
    fn parses_resource_paths() {
        let p = parse_resource_path(
            "",
            "v1",
            &["namespaces", "default", "pods", "web", "status"],
        )
        .unwrap();
        assert_eq!(
            (
                p.res.plural,
                p.ns.as_deref(),
                p.name.as_deref(),
                p.sub.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let p = parse_resource_path("", "v1", &["namespaces", "kube-system", "status"]).unwrap();
        assert_eq!(
            (p.res.plural, p.name.as_deref(), p.sub.as_deref()),
            ("namespaces", Some("kube-system"), Some("status"))
        );
        let p = parse_resource_path("", "v1", &["namespaces", "x"]).unwrap();
        assert_eq!((p.res.plural, p.name.as_deref()), ("namespaces", Some("x")));
        let p = parse_resource_path("apps", "v1", &["deployments"]).unwrap();
        assert_eq!((p.res.plural, p.ns), ("deployments", None));
        assert!(parse_resource_path("", "v1", &["pods", "x"]).is_none());
        assert!(parse_resource_path("", "v1", &["nope"]).is_none());
    }
}

//! Service ClusterIPs, allocated as kube-apiserver allocates them: from the service range
//! (`--service-cluster-ip-range`, default 10.96.0.0/12), the requested address when it lies in
//! the range and is free (422 with upstream's messages otherwise), a random free one when none
//! is requested, none for headless (`clusterIP: None`) and ExternalName Services. Random
//! addresses come from the upper part of the range first: its lower part (upstream's
//! `min(max(16, size/16), 256)` addresses) is left for requested ones, and its first address
//! is the `kubernetes` Service's.
//!
//! Each allocated address is a key in the store (`/registry/ranges/serviceips/<ip>`, holding
//! its Service's `namespace/name`) created only where absent, so two Services never share one,
//! even when written at once; the Service is written after, and a failed write releases the
//! address. The keys live in the store, so allocations survive restarts; at start,
//! [`Api::repair_ranges`] makes them (and the node ports') match the stored Services again,
//! releasing what a crash between the two writes left behind.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use bytes::Bytes;
use rand::Rng as _;
use serde_json::{Value, json};
use skiff_api::validation::FieldError;

use super::resources::{self, ResourceDef};
use super::{
    Api, ApiError, ListOptions, Result, WriteOptions, node_port_key, node_ports_of, object,
};
use crate::store;

/// Where the allocation keys of ClusterIPs live.
const SERVICE_IPS: &str = "/registry/ranges/serviceips/";

/// Where the allocation keys of node ports live.
pub(super) const NODE_PORTS: &str = "/registry/ranges/servicenodeports/";

/// An IPv4 service range, `--service-cluster-ip-range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    network: u32,
    prefix: u8,
}

impl Default for ServiceCidr {
    /// 10.96.0.0/12, kube-apiserver's default.
    fn default() -> Self {
        Self {
            network: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
            prefix: 12,
        }
    }
}

impl FromStr for ServiceCidr {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (expected e.g. 10.96.0.0/12)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| {
            format!("{s:?} is not an IPv4 CIDR (expected e.g. 10.96.0.0/12; IPv6 service ranges are not supported)")
        })?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{s:?} has an invalid prefix length"))?;
        // As kube-apiserver: at most 2^20 addresses; at least a few to hand out.
        if !(12..=30).contains(&prefix) {
            return Err(format!(
                "{s:?}: the prefix length must be between /12 and /30"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            network: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

impl ServiceCidr {
    /// Addresses to hand out: the range without its network and broadcast addresses.
    pub fn size(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    /// The `offset`th address to hand out (0: the first, the `kubernetes` Service's).
    pub fn address(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1 + offset)
    }

    /// Where `ip` lies among the addresses to hand out, if it is one.
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(ip).checked_sub(self.network + 1)?;
        (offset < self.size()).then_some(offset)
    }

    /// How many addresses at the start of the range random allocation leaves for requested
    /// ones (upstream's `calculateRangeOffset`).
    pub fn static_band(&self) -> u32 {
        let whole = 1u32 << (32 - self.prefix);
        if whole <= 16 {
            return 0;
        }
        (whole / 16).clamp(16, 256)
    }
}

fn cluster_ip_key(ip: &str) -> String {
    format!("{SERVICE_IPS}{ip}")
}

/// `namespace/name`: who holds an allocation key.
fn owner(service: &Value) -> String {
    format!("{}/{}", object::namespace(service), object::name(service))
}

/// Whether a Service gets a ClusterIP: every type but ExternalName, unless headless.
pub(super) fn needs_cluster_ip(service: &Value) -> bool {
    service["spec"]["type"] != "ExternalName" && service["spec"]["clusterIP"] != "None"
}

/// The ClusterIP a Service holds, if any.
fn held_ip(service: &Value) -> Option<&str> {
    service["spec"]["clusterIP"]
        .as_str()
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// `clusterIPs` as Go prints a `[]string` in a field error: `[]string{"10.96.0.5"}`.
pub(super) fn go_strings(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

impl Api {
    /// Gives a Service that needs one its ClusterIP (on create, or when an update turns an
    /// ExternalName Service into another type): the requested `clusterIP` or a free one, set in
    /// `clusterIP` and `clusterIPs`. Returns the address allocated, to release if the write
    /// fails; a dry run only checks the requested address.
    pub(super) async fn allocate_cluster_ip(
        &self,
        res: &'static ResourceDef,
        obj: &mut Value,
        dry_run: bool,
    ) -> Result<Option<String>> {
        if !needs_cluster_ip(obj) {
            return Ok(None);
        }
        let cidr = self.inner.config.service_cidr;
        let name = object::name(obj).to_string();
        let holder = Bytes::from(owner(obj));
        let ip = match held_ip(obj).map(String::from) {
            Some(requested) => {
                let refuse = |why: String| {
                    ApiError::invalid(
                        res,
                        &name,
                        &[FieldError::invalid(
                            "spec.clusterIPs",
                            go_strings(&[requested.as_str()]),
                            &format!("failed to allocate IP {requested}: {why}"),
                        )],
                    )
                };
                let ip = requested
                    .parse::<Ipv4Addr>()
                    .ok()
                    .filter(|ip| cidr.offset_of(*ip).is_some())
                    .ok_or_else(|| {
                        refuse(format!(
                            "the provided IP ({requested}) is not in the valid range. The range of valid IPs is {cidr}"
                        ))
                    })?;
                let key = cluster_ip_key(&ip.to_string());
                let taken = || refuse("provided IP is already allocated".into());
                if dry_run {
                    let held = self
                        .inner
                        .store
                        .get(&key)
                        .map_err(|e| ApiError::from_store(res, &name, e))?;
                    return match held {
                        Some(_) => Err(taken()),
                        None => Ok(None),
                    };
                }
                match self.inner.store.create(&key, holder).await {
                    Ok(_) => ip,
                    Err(store::Error::AlreadyExists(_)) => return Err(taken()),
                    Err(e) => return Err(ApiError::from_store(res, &name, e)),
                }
            }
            None if dry_run => return Ok(None),
            None => self.allocate_next(res, &name, cidr, holder).await?,
        };
        let ip = ip.to_string();
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
        Ok(Some(ip))
    }

    /// A free address: random ones from the part of the range left to random allocation,
    /// then from the whole range, then (the range nearly full) the first free one.
    async fn allocate_next(
        &self,
        res: &'static ResourceDef,
        name: &str,
        cidr: ServiceCidr,
        holder: Bytes,
    ) -> Result<Ipv4Addr> {
        let claim = |ip: Ipv4Addr| {
            let holder = holder.clone();
            async move {
                match self
                    .inner
                    .store
                    .create(&cluster_ip_key(&ip.to_string()), holder)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(store::Error::AlreadyExists(_)) => Ok(false),
                    Err(e) => Err(ApiError::from_store(res, name, e)),
                }
            }
        };
        let (size, band) = (cidr.size(), cidr.static_band());
        for low in [band, 0] {
            for _ in 0..32 {
                if low >= size {
                    break;
                }
                let ip = cidr.address(rand::rng().random_range(low..size));
                if claim(ip).await? {
                    return Ok(ip);
                }
            }
        }
        let taken: HashSet<String> = self
            .range_keys(SERVICE_IPS)
            .map_err(|e| ApiError::from_store(res, name, e))?
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        for offset in (band..size).chain(0..band.min(size)) {
            let ip = cidr.address(offset);
            if !taken.contains(&cluster_ip_key(&ip.to_string())) && claim(ip).await? {
                return Ok(ip);
            }
        }
        Err(ApiError::internal(
            "failed to allocate a serviceIP: range is full",
        ))
    }

    /// Releases the ClusterIP a Service held, unless another Service holds it now.
    pub(super) async fn release_cluster_ip(&self, service: &Value) {
        let Some(ip) = held_ip(service) else { return };
        let key = cluster_ip_key(ip);
        if let Ok(Some(kv)) = self.inner.store.get(&key)
            && kv.value == owner(service).as_bytes()
        {
            let _ = self.inner.store.delete(&key, kv.mod_revision).await;
        }
    }

    /// Every key under `prefix`.
    fn range_keys(&self, prefix: &str) -> store::Result<Vec<store::KeyValue>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.inner.store.range(prefix, after.as_deref(), 0)?;
            after = page.kvs.last().map(|kv| kv.key.clone());
            out.extend(page.kvs);
            if !page.more || after.is_none() {
                return Ok(out);
            }
        }
    }

    /// Makes the allocation keys of ClusterIPs and node ports match the stored Services: each
    /// Service holds its own, and keys no Service holds are released.
    pub(super) async fn repair_ranges(&self) -> Result<()> {
        let services = self.list(resources::core("services"), None, &ListOptions::default())?;
        let mut wanted: HashMap<String, String> = HashMap::new();
        for svc in &services.items {
            if let Some(ip) = held_ip(svc) {
                wanted.insert(cluster_ip_key(ip), owner(svc));
            }
            for port in node_ports_of(svc) {
                wanted.insert(node_port_key(port), owner(svc));
            }
        }
        let internal = |e: store::Error| ApiError::internal(e.to_string());
        for prefix in [SERVICE_IPS, NODE_PORTS] {
            for kv in self.range_keys(prefix).map_err(internal)? {
                let result = match wanted.remove(&kv.key) {
                    Some(holder) if kv.value == holder.as_bytes() => continue,
                    Some(holder) => {
                        tracing::warn!(key = %kv.key, service = %holder, "allocation held in another name; repairing");
                        self.inner
                            .store
                            .update(&kv.key, kv.mod_revision, Bytes::from(holder))
                            .await
                    }
                    None => {
                        tracing::info!(key = %kv.key, "releasing an allocation no Service holds");
                        self.inner
                            .store
                            .delete(&kv.key, kv.mod_revision)
                            .await
                            .map(|_| 0)
                    }
                };
                result.map_err(internal)?;
            }
        }
        for (key, holder) in wanted {
            tracing::warn!(%key, service = %holder, "a Service's allocation was missing; repairing");
            match self.inner.store.create(&key, Bytes::from(holder)).await {
                Ok(_) | Err(store::Error::AlreadyExists(_)) => {}
                Err(e) => return Err(internal(e)),
            }
        }
        Ok(())
    }

    /// Creates the `kubernetes` Service in `default` (the range's first address, port 443) and
    /// its Endpoints naming the API server at `ip:port`, as kube-apiserver does, or points
    /// existing ones at the current address.
    pub async fn ensure_kubernetes_service(&self, ip: &str, port: u16) -> Result<()> {
        let services = resources::core("services");
        let first = self.inner.config.service_cidr.address(0).to_string();
        let service = |cluster_ip: Option<&str>| {
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                             "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": cluster_ip,
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}})
        };
        let opts = WriteOptions::default();
        match self.get(services, Some("default"), "kubernetes") {
            Ok(existing) => {
                if existing.pointer("/spec/ports/0/targetPort") != Some(&json!(port)) {
                    let patch = json!({"spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}});
                    self.patch(
                        services,
                        Some("default"),
                        "kubernetes",
                        super::PatchType::Merge,
                        patch,
                        super::Target::Main,
                        &opts,
                    )
                    .await?;
                }
            }
            Err(e) if e.code == 404 => {
                // The first address may have been requested by another Service meanwhile.
                let created = self
                    .create(services, Some("default"), service(Some(&first)), &opts)
                    .await;
                match created {
                    Err(e) if e.code == 422 => {
                        self.create(services, Some("default"), service(None), &opts)
                            .await?;
                    }
                    other => {
                        other?;
                    }
                }
            }
            Err(e) => return Err(e),
        }
        let endpoints = resources::core("endpoints");
        let wanted = json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip}],
                         "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
        match self.get(endpoints, Some("default"), "kubernetes") {
            Ok(existing) if existing["subsets"] == wanted["subsets"] => {}
            Ok(_) => {
                self.update(
                    endpoints,
                    Some("default"),
                    "kubernetes",
                    wanted,
                    super::Target::Main,
                    &opts,
                )
                .await?;
            }
            Err(e) if e.code == 404 => {
                self.create(endpoints, Some("default"), wanted, &opts)
                    .await?;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Carries the ClusterIP an update leaves out over from the stored Service, and makes
/// `clusterIP` and `clusterIPs` agree, as upstream does before validating an update
/// (`patchAllocatedValues`, `normalizeClusterIPs`, `dropTypeDependentFields`).
pub(super) fn prepare_update(old: &Value, new: &mut Value) {
    let spec_of = |v: &Value, field: &str| v["spec"][field].clone();
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        if new["spec"]["clusterIP"].as_str().is_none_or(str::is_empty) {
            new["spec"]["clusterIP"] = spec_of(old, "clusterIP");
        }
        if new["spec"]["clusterIPs"]
            .as_array()
            .is_none_or(|a| a.is_empty())
        {
            new["spec"]["clusterIPs"] = spec_of(old, "clusterIPs");
        }
    }
    let same_ips = new["spec"]["clusterIPs"] == old["spec"]["clusterIPs"];
    if new["spec"]["type"] == "ExternalName" && old["spec"]["type"] != "ExternalName" {
        // Turning into an ExternalName drops what only the old type had, unless changed.
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if new["spec"][field] == old["spec"][field]
                && let Some(spec) = new["spec"].as_object_mut()
            {
                spec.remove(field);
            }
        }
        return;
    }
    if new["spec"]["clusterIP"] != old["spec"]["clusterIP"] && same_ips {
        match new["spec"]["clusterIP"]
            .as_str()
            .filter(|ip| !ip.is_empty())
        {
            Some(ip) => new["spec"]["clusterIPs"] = json!([ip]),
            None => {
                if let Some(spec) = new["spec"].as_object_mut() {
                    spec.remove("clusterIPs");
                }
            }
        }
    }
}

/// Makes `clusterIPs` name the requested `clusterIP` when only that is given.
pub(super) fn prepare_create(new: &mut Value) {
    if let Some(ip) = new["spec"]["clusterIP"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        && new["spec"]["clusterIPs"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    {
        new["spec"]["clusterIPs"] = json!([ip]);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::{Config, DeleteOptions, PatchType, Target};
    use crate::store::{SledConfig, SledStore};

    async fn api_on(dir: &std::path::Path, range: &str) -> Api {
        // A store just dropped may hold its lock a moment longer (sled's flusher thread).
        let mut attempts = 0;
        let store = loop {
            match SledStore::open(SledConfig::new(dir.join("db"))) {
                Ok(store) => break store,
                Err(_) if attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot open the store again: {e}"),
            }
        };
        let config = Config {
            service_cidr: range.parse().unwrap(),
            ..Config::default()
        };
        let api = Api::new(Arc::new(store), config);
        api.bootstrap().await.unwrap();
        api
    }

    fn svc(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name}, "spec": spec})
    }

    async fn create(api: &Api, obj: Value) -> Result<Value> {
        let written = api
            .create(
                resources::core("services"),
                Some("default"),
                obj,
                &WriteOptions::default(),
            )
            .await?;
        Ok(written.object)
    }

    fn ip_of(obj: &Value) -> String {
        obj["spec"]["clusterIP"].as_str().unwrap_or("").to_string()
    }

    #[tokio::test]
    async fn cluster_ips_are_allocated_checked_kept_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let api = api_on(dir.path(), "10.96.0.0/12").await;
        let ports = json!([{"port": 80}]);
        let cidr = ServiceCidr::default();

        // Random addresses come from the range, past the band left for requested ones.
        let a = create(&api, svc("a", json!({"ports": ports})))
            .await
            .unwrap();
        let ip: Ipv4Addr = ip_of(&a).parse().unwrap();
        assert!(cidr.offset_of(ip).unwrap() >= cidr.static_band(), "{ip}");
        assert_eq!(a["spec"]["clusterIPs"], json!([ip.to_string()]));
        assert_eq!(a["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(a["spec"]["ipFamilyPolicy"], "SingleStack");

        // A requested address is checked, with upstream's messages.
        let b = create(
            &api,
            svc("b", json!({"clusterIP": "10.96.0.5", "ports": ports})),
        )
        .await
        .unwrap();
        assert_eq!(b["spec"]["clusterIPs"], json!(["10.96.0.5"]));
        let err = create(
            &api,
            svc("c", json!({"clusterIP": "10.96.0.5", "ports": ports})),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            r#"Service "c" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.0.5"}: failed to allocate IP 10.96.0.5: provided IP is already allocated"#
        );
        let err = create(
            &api,
            svc("c", json!({"clusterIP": "192.168.0.5", "ports": ports})),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.message,
            r#"Service "c" is invalid: spec.clusterIPs: Invalid value: []string{"192.168.0.5"}: failed to allocate IP 192.168.0.5: the provided IP (192.168.0.5) is not in the valid range. The range of valid IPs is 10.96.0.0/12"#
        );
        let err = create(
            &api,
            svc("c", json!({"clusterIP": "fd00::5", "ports": ports})),
        )
        .await
        .unwrap_err();
        assert!(
            err.message
                .contains("IPv6 is not configured on this cluster"),
            "{}",
            err.message
        );
        // Headless and ExternalName Services get none.
        let headless = create(&api, svc("h", json!({"clusterIP": "None", "ports": ports})))
            .await
            .unwrap();
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        let external = create(
            &api,
            svc(
                "x",
                json!({"type": "ExternalName", "externalName": "example.com"}),
            ),
        )
        .await
        .unwrap();
        assert!(external["spec"].get("clusterIP").is_none(), "{external}");

        // The address may not change; an update that leaves it out keeps it.
        let services = resources::core("services");
        let w = WriteOptions::default();
        let err = api
            .patch(
                services,
                Some("default"),
                "b",
                PatchType::Merge,
                json!({"spec": {"clusterIP": "10.96.0.6"}}),
                Target::Main,
                &w,
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            r#"Service "b" is invalid: spec.clusterIPs[0]: Invalid value: []string{"10.96.0.6"}: may not change once set"#
        );
        let replaced = api
            .update(
                services,
                Some("default"),
                "b",
                svc("b", json!({"ports": ports})),
                Target::Main,
                &w,
            )
            .await
            .unwrap()
            .object;
        assert_eq!(ip_of(&replaced), "10.96.0.5");

        // Turning into an ExternalName releases the address; turning back allocates one.
        api.patch(
            services,
            Some("default"),
            "b",
            PatchType::Merge,
            json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
            Target::Main,
            &w,
        )
        .await
        .unwrap();
        let c = create(
            &api,
            svc("c", json!({"clusterIP": "10.96.0.5", "ports": ports})),
        )
        .await
        .unwrap();
        assert_eq!(ip_of(&c), "10.96.0.5");
        let back = api
            .patch(
                services,
                Some("default"),
                "b",
                PatchType::Merge,
                json!({"spec": {"type": "ClusterIP", "externalName": null}}),
                Target::Main,
                &w,
            )
            .await
            .unwrap()
            .object;
        assert!(
            cidr.offset_of(ip_of(&back).parse().unwrap()).is_some(),
            "{back}"
        );

        // Deleting a Service frees its address.
        api.delete(services, Some("default"), "c", &DeleteOptions::default())
            .await
            .unwrap();
        create(
            &api,
            svc("d", json!({"clusterIP": "10.96.0.5", "ports": ports})),
        )
        .await
        .unwrap();

        // Allocations outlive a restart; one no Service holds (a crash between the two writes)
        // is released at start.
        let leaked = cluster_ip_key("10.96.0.9");
        api.inner
            .store
            .create(&leaked, Bytes::from("default/gone"))
            .await
            .unwrap();
        api.shutdown().await;
        drop(api);
        let api = api_on(dir.path(), "10.96.0.0/12").await;
        let err = create(
            &api,
            svc("e", json!({"clusterIP": ip_of(&a), "ports": ports})),
        )
        .await
        .unwrap_err();
        assert!(
            err.message.contains("provided IP is already allocated"),
            "{}",
            err.message
        );
        assert!(api.inner.store.get(&leaked).unwrap().is_none());
        create(
            &api,
            svc("e", json!({"clusterIP": "10.96.0.9", "ports": ports})),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_full_range_is_reported_and_the_kubernetes_service_takes_the_first_address() {
        let dir = tempfile::tempdir().unwrap();
        let api = api_on(dir.path(), "10.0.0.0/29").await;
        api.ensure_kubernetes_service("127.0.0.1", 6443)
            .await
            .unwrap();
        let services = resources::core("services");
        let k = api.get(services, Some("default"), "kubernetes").unwrap();
        assert_eq!(ip_of(&k), "10.0.0.1");
        assert_eq!(k["spec"]["ports"][0]["port"], 443);
        let ep = api
            .get(resources::core("endpoints"), Some("default"), "kubernetes")
            .unwrap();
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
        // Again, at another port: the same Service, pointed at it.
        api.ensure_kubernetes_service("127.0.0.1", 7443)
            .await
            .unwrap();
        let k = api.get(services, Some("default"), "kubernetes").unwrap();
        assert_eq!(
            (ip_of(&k).as_str(), &k["spec"]["ports"][0]["targetPort"]),
            ("10.0.0.1", &json!(7443))
        );

        // Six addresses: the kubernetes Service's and five more.
        let mut ips = vec![ip_of(&k)];
        for i in 0..5 {
            let s = create(
                &api,
                svc(&format!("s{i}"), json!({"ports": [{"port": 80}]})),
            )
            .await
            .unwrap();
            ips.push(ip_of(&s));
        }
        ips.sort();
        assert_eq!(
            ips,
            [
                "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"
            ]
        );
        let err = create(&api, svc("full", json!({"ports": [{"port": 80}]})))
            .await
            .unwrap_err();
        assert_eq!(err.code, 500);
        assert_eq!(
            err.message,
            "Internal error occurred: failed to allocate a serviceIP: range is full"
        );
    }

    #[test]
    fn the_range_parses_and_bounds_its_addresses() {
        let cidr: ServiceCidr = "10.96.0.0/12".parse().unwrap();
        assert_eq!(cidr, ServiceCidr::default());
        assert_eq!(cidr.to_string(), "10.96.0.0/12");
        assert_eq!(cidr.size(), (1 << 20) - 2);
        assert_eq!(cidr.address(0), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(cidr.offset_of(Ipv4Addr::new(10, 96, 0, 1)), Some(0));
        assert_eq!(
            cidr.offset_of(Ipv4Addr::new(10, 111, 255, 254)),
            Some((1 << 20) - 3)
        );
        // Network and broadcast addresses, and anything outside, are not in the range.
        for outside in [
            "10.96.0.0",
            "10.111.255.255",
            "10.112.0.1",
            "10.95.255.255",
            "1.1.1.1",
        ] {
            assert_eq!(cidr.offset_of(outside.parse().unwrap()), None, "{outside}");
        }
        assert_eq!(cidr.static_band(), 256);
        // Host bits are masked off; small ranges keep a smaller band, tiny ones none.
        let small: ServiceCidr = "192.168.7.9/24".parse().unwrap();
        assert_eq!(small.to_string(), "192.168.7.0/24");
        assert_eq!((small.size(), small.static_band()), (254, 16));
        let tiny: ServiceCidr = "10.0.0.0/29".parse().unwrap();
        assert_eq!((tiny.size(), tiny.static_band()), (6, 0));
        for bad in [
            "10.96.0.0",
            "fd00::/108",
            "10.0.0.0/8",
            "10.0.0.0/31",
            "x/12",
        ] {
            assert!(bad.parse::<ServiceCidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn updates_keep_the_allocated_address_and_the_two_fields_agree() {
        let old = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.7",
                                  "clusterIPs": ["10.96.0.7"]}});
        // A replacement that leaves the address out keeps it.
        let mut new = json!({"spec": {"type": "ClusterIP"}});
        prepare_update(&old, &mut new);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.7");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.7"]));
        // Changing only `clusterIP` changes `clusterIPs` with it (for validation to refuse).
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.96.0.8");
        prepare_update(&old, &mut new);
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.8"]));
        // Turning into an ExternalName drops the address.
        let mut new = old.clone();
        new["spec"]["type"] = json!("ExternalName");
        prepare_update(&old, &mut new);
        assert!(new["spec"].get("clusterIP").is_none(), "{new}");
        assert!(new["spec"].get("clusterIPs").is_none(), "{new}");

        let mut created = json!({"spec": {"clusterIP": "10.96.0.9"}});
        prepare_create(&mut created);
        assert_eq!(created["spec"]["clusterIPs"], json!(["10.96.0.9"]));
        assert_eq!(
            go_strings(&["10.96.0.9", "fd00::9"]),
            r#"[]string{"10.96.0.9", "fd00::9"}"#
        );
    }
}

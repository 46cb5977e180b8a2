//! WasmPolicy admission: a pod must satisfy every `WasmPolicy` of its namespace (host paths of
//! its volumes, publisher signatures of its modules). The policy's egress rules are the agents'
//! to enforce, request by request; agents also check signatures and host paths again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::Value;
use sha2::Digest as _;
use skiff_api::policy::{WasmPolicy, first_refusal};

use super::resources::{self, ResourceDef};
use super::{Api, ApiError, ListOptions, Result, object};

/// Module digests already checked against their stored bytes, by file identity, so a pod
/// creation does not hash a module it has hashed before.
#[derive(Default)]
pub(crate) struct CheckedModules(Mutex<HashMap<(String, u64, std::time::SystemTime), [u8; 32]>>);

/// What of a pod WasmPolicies look at: its containers' images and its volumes. An update that
/// changes neither (a binding, a label) is not checked again.
pub(crate) fn what_policies_judge(pod: &Value) -> (Vec<&Value>, &Value) {
    let spec = &pod["spec"];
    let images = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| spec[*field].as_array().into_iter().flatten())
        .map(|c| &c["image"])
        .collect();
    (images, &spec["volumes"])
}

impl Api {
    /// The namespace's policies; an unparsable one (only possible if it was stored before
    /// validation knew its fields) is skipped with a log line rather than blocking every pod.
    pub(crate) fn wasm_policies(&self, ns: &str) -> Result<Vec<WasmPolicy>> {
        let Some(def) = resources::find("skiff.dev", "v1", "wasmpolicies") else {
            return Ok(Vec::new());
        };
        Ok(self
            .list(def, Some(ns), &ListOptions::default())?
            .items
            .iter()
            .filter_map(|p| match WasmPolicy::parse(p) {
                Ok(p) => Some(p),
                Err(problems) => {
                    tracing::warn!(
                        namespace = ns,
                        policy = object::name(p),
                        ?problems,
                        "invalid WasmPolicy ignored"
                    );
                    None
                }
            })
            .collect())
    }

    /// Checks a pod (create, or an update that may change its images or volumes) against the
    /// WasmPolicies of `ns`: 403 naming the policy and the reason.
    pub(crate) fn admit_wasm_policies(
        &self,
        res: &ResourceDef,
        ns: &str,
        pod: &Value,
    ) -> Result<()> {
        let policies = self.wasm_policies(ns)?;
        if policies.is_empty() {
            return Ok(());
        }
        let name = object::name(pod);
        let refuse = |policy: &str, why: String| {
            ApiError::forbidden(res, name, format!("violates WasmPolicy {policy:?}: {why}"))
        };
        let spec = &pod["spec"];
        for v in spec["volumes"].as_array().into_iter().flatten() {
            if let Some(path) = v["hostPath"]["path"].as_str()
                && let Some((policy, why)) = first_refusal(&policies, |p| p.check_host_path(path))
            {
                let volume = v["name"].as_str().unwrap_or_default();
                return Err(refuse(&policy, format!("volume {volume:?}: {why}")));
            }
        }
        let Some(needs_signature) = policies.iter().find(|p| !p.publishers.is_empty()) else {
            return Ok(());
        };
        // OCI containers (containerd) are outside what a Wasm policy can vouch for.
        if spec["runtimeClassName"].as_str() == Some("containerd") {
            return Ok(());
        }
        let containers = ["initContainers", "containers", "ephemeralContainers"]
            .iter()
            .flat_map(|field| spec[*field].as_array().into_iter().flatten());
        for c in containers {
            let container = c["name"].as_str().unwrap_or_default();
            let image = c["image"].as_str().unwrap_or_default();
            let (digest, signature) = self.stored_module(image).map_err(|why| {
                refuse(
                    &needs_signature.name,
                    format!("container {container:?}: {why}"),
                )
            })?;
            if let Some((policy, why)) = first_refusal(&policies, |p| {
                p.check_signature(&digest, signature.as_deref())
            }) {
                return Err(refuse(
                    &policy,
                    format!("container {container:?}: module {image}: {why}"),
                ));
            }
        }
        Ok(())
    }

    /// The digest of the module `image` names in the module store, checked against the stored
    /// bytes (a module changed on disk is refused), and its signature.
    fn stored_module(
        &self,
        image: &str,
    ) -> std::result::Result<([u8; 32], Option<Vec<u8>>), String> {
        let dir: &PathBuf = self
            .inner
            .config
            .modules_dir
            .as_ref()
            .ok_or("the module store is not available to check signatures")?;
        let hex = self.module_digest(image)?;
        let blob = dir.join("sha256").join(format!("{hex}.wasm"));
        let meta = std::fs::metadata(&blob)
            .map_err(|_| format!("module {image} is not in the module store"))?;
        let id = (
            hex.clone(),
            meta.len(),
            meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        );
        let cached = self
            .inner
            .checked_modules
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied();
        let digest = match cached {
            Some(d) => d,
            None => {
                let bytes =
                    std::fs::read(&blob).map_err(|e| format!("cannot read module {image}: {e}"))?;
                let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
                let actual: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                if actual != hex {
                    return Err(format!(
                        "module {image}: the stored bytes do not match its digest sha256:{hex}"
                    ));
                }
                self.inner
                    .checked_modules
                    .0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, digest);
                digest
            }
        };
        let signature = std::fs::read(blob.with_extension("sig")).ok();
        Ok((digest, signature))
    }

    /// `name:tag`, `name:tag@sha256:HEX` or `sha256:HEX` → HEX, from the Module objects.
    fn module_digest(&self, image: &str) -> std::result::Result<String, String> {
        if let Some((_, hex)) = image.split_once("sha256:") {
            if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Ok(hex.to_ascii_lowercase());
            }
            return Err(format!("invalid digest in {image}"));
        }
        let (repository, tag) = skiff_api::module::parse_reference(image)?;
        let def = resources::find("skiff.dev", "v1", "modules").expect("modules are served");
        let module = self
            .get(
                def,
                None,
                &skiff_api::module::object_name(&repository, &tag),
            )
            .map_err(|_| format!("module {image} is not in the module store"))?;
        module
            .pointer("/spec/digest")
            .and_then(Value::as_str)
            .and_then(|d| d.strip_prefix("sha256:"))
            .map(str::to_string)
            .ok_or_else(|| format!("module {image} has no digest"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::what_policies_judge;

    #[test]
    fn only_images_and_volumes_are_judged_again() {
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "a:1"}],
                                  "volumes": [{"name": "v", "emptyDir": {}}]}});
        let mut bound = pod.clone();
        bound["spec"]["nodeName"] = json!("edge");
        assert_eq!(what_policies_judge(&bound), what_policies_judge(&pod));
        let mut new_image = pod.clone();
        new_image["spec"]["containers"][0]["image"] = json!("b:1");
        assert_ne!(what_policies_judge(&new_image), what_policies_judge(&pod));
        let mut host = pod.clone();
        host["spec"]["volumes"][0] = json!({"name": "v", "hostPath": {"path": "/etc"}});
        assert_ne!(what_policies_judge(&host), what_policies_judge(&pod));
    }
}

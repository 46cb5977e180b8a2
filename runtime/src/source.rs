//! Where modules come from. The agent supplies a source (the control plane's module store);
//! [`DirSource`] serves local files for development and [`MemorySource`] serves tests.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// A fetched module and, when its publisher signed it, the ed25519 signature.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The module's bytes.
    pub bytes: Vec<u8>,
    /// Signature over the module (see [`crate::sign_module`]).
    pub signature: Option<Vec<u8>>,
}

/// The future a [`ModuleSource`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Fetched>> + Send + 'a>>;

/// Fetches modules by image reference (`name[:tag][@sha256:digest]`).
pub trait ModuleSource: Send + Sync + 'static {
    /// The module. The runtime checks the digest named in the reference and the signature.
    fn fetch<'a>(&'a self, image: &'a str) -> FetchFuture<'a>;
}

/// The reference without tag or digest: `hello:1.0@sha256:...` → `hello`.
pub(crate) fn image_name(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// Modules as files in a directory: `hello:1.0` is `<dir>/hello.wasm`, its signature (if any)
/// `<dir>/hello.wasm.sig` (64 raw bytes or base64).
#[derive(Debug, Clone)]
pub struct DirSource {
    dir: PathBuf,
}

impl DirSource {
    /// Serves `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl ModuleSource for DirSource {
    fn fetch<'a>(&'a self, image: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let path = self.dir.join(format!("{}.wasm", image_name(image)));
            let bytes = tokio::fs::read(&path).await.map_err(|e| Error::Pull {
                image: image.into(),
                reason: format!("{}: {e}", path.display()),
            })?;
            let signature = tokio::fs::read(path.with_extension("wasm.sig"))
                .await
                .ok()
                .map(|raw| {
                    use base64::Engine as _;
                    let text = String::from_utf8_lossy(&raw);
                    base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .unwrap_or(raw)
                });
            Ok(Fetched { bytes, signature })
        })
    }
}

/// Modules held in memory, by name (tests and benchmarks).
#[derive(Debug, Default)]
pub struct MemorySource {
    modules: Mutex<HashMap<String, Fetched>>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an unsigned module under `name` (any tag resolves to it).
    pub fn insert(&self, name: &str, bytes: Vec<u8>) {
        self.insert_signed(name, bytes, None);
    }

    /// Adds a module with its signature.
    pub fn insert_signed(&self, name: &str, bytes: Vec<u8>, signature: Option<Vec<u8>>) {
        self.modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Fetched { bytes, signature });
    }
}

impl ModuleSource for MemorySource {
    fn fetch<'a>(&'a self, image: &'a str) -> FetchFuture<'a> {
        let found = self
            .modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(image_name(image))
            .cloned();
        Box::pin(async move {
            found.ok_or_else(|| Error::Pull {
                image: image.into(),
                reason: "no such module".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::image_name;

    #[test]
    fn names_without_tag_or_digest() {
        assert_eq!(image_name("hello:1.0"), "hello");
        assert_eq!(image_name("hello@sha256:abc"), "hello");
        assert_eq!(image_name("registry:5000/hello"), "registry:5000/hello");
        assert_eq!(image_name("hello"), "hello");
    }
}

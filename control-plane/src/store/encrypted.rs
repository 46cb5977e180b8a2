//! Secrets encrypted at rest: a [`Store`] wrapper that seals the values of keys under
//! `/registry/secrets/` with ChaCha20-Poly1305 before they reach the backend, and opens them on
//! every read and watch event, so the data directory never holds a Secret's data in the clear.
//!
//! A sealed value is `k8s:enc:aead:v1:<key name>:` followed by a 12-byte random nonce and the
//! ciphertext with its tag; the key's name is bound as associated data together with the store
//! key, so a sealed value cannot be moved to another Secret. Values that do not start with the
//! prefix (written before encryption was on) are read as they are and sealed on their next write.
//!
//! Keys live in `DIR/pki/secrets.keys` (mode 0600), one `name base64-key` per line, the first
//! the one that seals. Rotating: [`Keyring::rotate`] (`skiff rotate-secrets-key`) puts a new
//! key first and keeps the old ones for reading; at its next start the server rewrites every
//! Secret sealed with another key ([`reseal`]). Once that has run, old keys may be removed.

use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

use super::{CommitListener, Error, Event, KeyValue, Range, Result, Store};

const PREFIX: &[u8] = b"k8s:enc:aead:v1:";
const SECRETS: &str = "/registry/secrets/";
const KEY_LEN: usize = 32;

/// The named keys; the first seals, all open.
pub struct Keyring {
    keys: Vec<(String, LessSafeKey)>,
    rng: SystemRandom,
}

impl Keyring {
    /// Reads `DIR/pki/secrets.keys`, creating it with one fresh key the first time.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("pki").join("secrets.keys");
        if !path.exists() {
            std::fs::create_dir_all(path.parent().unwrap_or(data_dir))?;
            write_private(&path, &new_key_line()?)?;
        }
        let text = std::fs::read_to_string(&path)?;
        let invalid = |line: usize, why: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: line {line}: {why}", path.display()),
            )
        };
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, encoded) = line
                .split_once(' ')
                .ok_or_else(|| invalid(i + 1, "expected `NAME BASE64-KEY`"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| invalid(i + 1, "the key is not base64"))?;
            if bytes.len() != KEY_LEN || name.contains(':') {
                return Err(invalid(
                    i + 1,
                    "expected a 32-byte key and a name without ':'",
                ));
            }
            let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
                .map_err(|_| invalid(i + 1, "unusable key"))?;
            keys.push((name.to_string(), LessSafeKey::new(key)));
        }
        if keys.is_empty() {
            return Err(invalid(0, "no keys"));
        }
        Ok(Self {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// Puts a new key first in `DIR/pki/secrets.keys` (the old ones stay, for reading); returns
    /// its name. The server seals with it, and rewrites older Secrets, from its next start.
    pub fn rotate(data_dir: &Path) -> std::io::Result<String> {
        let path = data_dir.join("pki").join("secrets.keys");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let line = new_key_line()?;
        let name = line.split(' ').next().unwrap_or_default().to_string();
        write_private(&path, &format!("{line}{old}"))?;
        Ok(name)
    }

    fn seal(&self, store_key: &str, plain: &[u8]) -> Result<Bytes> {
        let (name, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| backend("no randomness for a nonce"))?;
        let mut data = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(name, store_key)),
            &mut data,
        )
        .map_err(|_| backend("cannot seal a secret"))?;
        let mut out = Vec::with_capacity(PREFIX.len() + name.len() + 1 + NONCE_LEN + data.len());
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(out.into())
    }

    /// The plaintext of a stored value, and whether it is sealed with the current key.
    fn open(&self, store_key: &str, stored: &Bytes) -> Result<(Bytes, bool)> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok((stored.clone(), false));
        };
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| backend("a sealed secret without a key name"))?;
        let name = std::str::from_utf8(&rest[..colon]).unwrap_or("");
        let (current, key) = self
            .keys
            .iter()
            .enumerate()
            .find(|(_, (n, _))| n == name)
            .map(|(i, (_, k))| (i == 0, k))
            .ok_or_else(|| {
                backend(&format!(
                    "secret {store_key} is sealed with unknown key {name:?}"
                ))
            })?;
        let body = &rest[colon + 1..];
        if body.len() < NONCE_LEN {
            return Err(backend("a sealed secret too short for its nonce"));
        }
        let nonce = Nonce::try_assume_unique_for_key(&body[..NONCE_LEN])
            .map_err(|_| backend("a bad nonce"))?;
        let mut data = body[NONCE_LEN..].to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(aad(name, store_key)), &mut data)
            .map_err(|_| {
                backend(&format!(
                    "secret {store_key} does not decrypt (tampered, or another key)"
                ))
            })?;
        Ok((Bytes::copy_from_slice(plain), current))
    }
}

fn aad(key_name: &str, store_key: &str) -> Vec<u8> {
    format!("{key_name}\n{store_key}").into_bytes()
}

fn backend(message: &str) -> Error {
    Error::Backend(message.to_string().into())
}

fn new_key_line() -> std::io::Result<String> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| std::io::Error::other("no randomness for a key"))?;
    let mut tag = [0u8; 4];
    SystemRandom::new()
        .fill(&mut tag)
        .map_err(|_| std::io::Error::other("no randomness for a key name"))?;
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    // Named by when it was made, and unique even when two are made in one second.
    let name = format!("key-{}-{tag}", jiff::Timestamp::now().as_second());
    Ok(format!(
        "{name} {}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A store whose Secrets are sealed at rest.
pub struct Encrypted<S> {
    inner: S,
    keys: std::sync::Arc<Keyring>,
}

impl<S: Store> Encrypted<S> {
    /// Wraps `inner`, sealing with `keys`.
    pub fn new(inner: S, keys: Keyring) -> Self {
        Self {
            inner,
            keys: std::sync::Arc::new(keys),
        }
    }

    fn seal(&self, key: &str, value: Bytes) -> Result<Bytes> {
        if key.starts_with(SECRETS) {
            self.keys.seal(key, &value)
        } else {
            Ok(value)
        }
    }
}

fn open_kv(keys: &Keyring, mut kv: KeyValue) -> Result<KeyValue> {
    if kv.key.starts_with(SECRETS) && !kv.value.is_empty() {
        kv.value = keys.open(&kv.key, &kv.value)?.0;
    }
    Ok(kv)
}

fn open_event(keys: &Keyring, mut e: Event) -> Result<Event> {
    e.kv = open_kv(keys, e.kv)?;
    e.prev = e.prev.map(|p| open_kv(keys, p)).transpose()?;
    Ok(e)
}

impl<S: Store> Store for Encrypted<S> {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner
            .get(key)?
            .map(|kv| open_kv(&self.keys, kv))
            .transpose()
    }

    fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Range> {
        let mut range = self.inner.range(prefix, start_after, limit)?;
        range.kvs = range
            .kvs
            .into_iter()
            .map(|kv| open_kv(&self.keys, kv))
            .collect::<Result<_>>()?;
        Ok(range)
    }

    fn changes(&self, after: u64) -> Result<Vec<Event>> {
        self.inner
            .changes(after)?
            .into_iter()
            .map(|e| open_event(&self.keys, e))
            .collect()
    }

    fn on_commit(&self, listener: CommitListener) {
        let keys = self.keys.clone();
        self.inner
            .on_commit(std::sync::Arc::new(move |events: &[Event]| {
                if !events.iter().any(|e| e.kv.key.starts_with(SECRETS)) {
                    return listener(events);
                }
                let opened: Vec<Event> = events
                    .iter()
                    .map(|e| {
                        open_event(&keys, e.clone()).unwrap_or_else(|err| {
                            // The store just sealed this value with the current key, so opening
                            // it can only fail on a bug; never hand a sealed value on.
                            panic!("cannot open committed secret {}: {err}", e.kv.key)
                        })
                    })
                    .collect();
                listener(&opened)
            }));
    }

    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64>> {
        match self.seal(key, value) {
            Ok(sealed) => self.inner.create(key, sealed),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn update(&self, key: &str, expected: u64, value: Bytes) -> BoxFuture<'_, Result<u64>> {
        match self.seal(key, value) {
            Ok(sealed) => self.inner.update(key, expected, sealed),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn delete(&self, key: &str, expected: u64) -> BoxFuture<'_, Result<KeyValue>> {
        let deleting = self.inner.delete(key, expected);
        let keys = self.keys.clone();
        Box::pin(async move { open_kv(&keys, deleting.await?) })
    }

    fn watch(&self, prefix: &str, after: u64) -> Result<BoxStream<'static, Result<Event>>> {
        let keys = self.keys.clone();
        let events = self.inner.watch(prefix, after)?;
        Ok(events.map(move |e| open_event(&keys, e?)).boxed())
    }

    fn compact(&self, revision: u64) -> Result<()> {
        self.inner.compact(revision)
    }

    fn revision(&self) -> u64 {
        self.inner.revision()
    }

    fn compacted_revision(&self) -> u64 {
        self.inner.compacted_revision()
    }
}

/// Rewrites every Secret not sealed with the current key (after a rotation, or written before
/// encryption); returns how many. Compare-and-swap, so a concurrent write simply wins.
pub async fn reseal<S: Store>(store: &Encrypted<S>) -> Result<usize> {
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let page = store.inner.range(SECRETS, after.as_deref(), 500)?;
        for kv in &page.kvs {
            let (plain, current) = store.keys.open(&kv.key, &kv.value)?;
            if !current {
                match store.update(&kv.key, kv.mod_revision, plain).await {
                    Ok(_) => count += 1,
                    Err(Error::Conflict { .. } | Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => after = Some(last.key.clone()),
            _ => return Ok(count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SledConfig, SledStore};

    fn read_all_files(dir: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                all.extend(read_all_files(&path));
            } else {
                all.extend(std::fs::read(&path).unwrap_or_default());
            }
        }
        all
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test]
    async fn secrets_are_sealed_on_disk_and_open_for_readers_and_watchers() {
        let dir = tempfile::tempdir().unwrap();
        let open = |dir: &Path| {
            let keys = Keyring::load_or_create(dir).unwrap();
            Encrypted::new(
                SledStore::open(SledConfig::new(dir.join("store"))).unwrap(),
                keys,
            )
        };
        let store = open(dir.path());
        let key = "/registry/secrets/default/db";
        let value = Bytes::from_static(b"{\"data\":{\"password\":\"aHVudGVyMi1zZWNyZXQ=\"}}");
        let mut events = store.watch("/registry/secrets/", 0).unwrap();
        store.create(key, value.clone()).await.unwrap();
        store
            .create(
                "/registry/configmaps/default/c",
                Bytes::from_static(b"{\"plain\":1}"),
            )
            .await
            .unwrap();
        assert_eq!(store.get(key).unwrap().unwrap().value, value);
        assert_eq!(
            store.range("/registry/secrets/", None, 0).unwrap().kvs[0].value,
            value
        );
        assert_eq!(events.next().await.unwrap().unwrap().kv.value, value);
        drop(events);
        drop(store);
        let files = read_all_files(dir.path());
        assert!(
            !contains(&files, b"aHVudGVyMi1zZWNyZXQ="),
            "the secret is on disk in the clear"
        );
        assert!(contains(&files, b"{\"plain\":1}"));

        // Tampering is detected, not read as garbage.
        let raw = SledStore::open(SledConfig::new(dir.path().join("store"))).unwrap();
        let mut sealed = raw.get(key).unwrap().unwrap();
        let last = sealed.value.len() - 1;
        let mut bytes = sealed.value.to_vec();
        bytes[last] ^= 1;
        sealed.value = bytes.into();
        raw.update(key, sealed.mod_revision, sealed.value)
            .await
            .unwrap();
        drop(raw);
        let store = open(dir.path());
        assert!(store.get(key).is_err());
        store.update(key, 0, value.clone()).await.unwrap();

        // Rotation: a new key seals; the old one still opens until the server reseals.
        drop(store);
        Keyring::rotate(dir.path()).unwrap();
        let store = open(dir.path());
        assert_eq!(store.get(key).unwrap().unwrap().value, value);
        assert_eq!(reseal(&store).await.unwrap(), 1);
        assert_eq!(reseal(&store).await.unwrap(), 0);
        drop(store);
        // Only the new key is needed now.
        let path = dir.path().join("pki/secrets.keys");
        let text = std::fs::read_to_string(&path).unwrap();
        write_private(&path, text.lines().next().unwrap()).unwrap();
        let store = open(dir.path());
        assert_eq!(store.get(key).unwrap().unwrap().value, value);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

//! The server's identity: a CA made at first start, a serving certificate signed by it at every
//! start (so a changed listen address is covered), the bearer tokens, and the key that signs
//! service-account tokens (`pki/sa.key`).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::Rng as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};

/// Failures setting up the server's identity.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("cannot generate certificates")]
    Cert(#[from] rcgen::Error),
    /// A stored file is damaged.
    #[error("{0} is damaged; remove it to generate a new one")]
    Damaged(PathBuf),
}

/// The CA, the serving certificate and the tokens.
pub struct Identity {
    /// The CA certificate (PEM), embedded in kubeconfigs and pinned by join tokens.
    pub ca_pem: String,
    /// SHA-256 of the CA certificate (DER), hex.
    pub ca_hash: String,
    /// Serving certificate chain.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Serving key.
    pub key: PrivateKeyDer<'static>,
    /// The admin bearer token.
    pub admin_token: String,
    /// The secret part of the node join token.
    pub node_secret: String,
    /// The ed25519 key that signs service-account tokens.
    pub service_account_key: ed25519_dalek::SigningKey,
}

impl Identity {
    /// Loads the CA and tokens from `dir` (creating them on first start) and issues a serving
    /// certificate for `hosts` (IP addresses or DNS names).
    pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Self, Error> {
        let pki = dir.join("pki");
        fs::create_dir_all(&pki).map_err(|source| Error::Io {
            path: pki.clone(),
            source,
        })?;
        let ca_key_path = pki.join("ca.key");
        let ca_crt_path = pki.join("ca.crt");
        let ca_params = ca_params();
        let (ca_key, ca_pem) = if ca_key_path.exists() && ca_crt_path.exists() {
            let key_pem = read(&ca_key_path)?;
            let key =
                KeyPair::from_pem(&key_pem).map_err(|_| Error::Damaged(ca_key_path.clone()))?;
            (key, read(&ca_crt_path)?)
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params.self_signed(&key)?;
            write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
            write_private(&ca_crt_path, cert.pem().as_bytes())?;
            (key, cert.pem())
        };
        let ca_der = pem_to_der(&ca_pem).ok_or_else(|| Error::Damaged(ca_crt_path.clone()))?;
        let ca_hash = hex(&Sha256::digest(&ca_der));
        let issuer = Issuer::new(ca_params, ca_key);

        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        names.extend(hosts.iter().filter(|h| !h.is_empty()).cloned());
        names.sort();
        names.dedup();
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "skiff-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let leaf_key = KeyPair::generate()?;
        let leaf = params.signed_by(&leaf_key, &issuer)?;

        let admin_token = load_or_create_secret(&dir.join("pki").join("admin.token"))?;
        let node_secret = load_or_create_secret(&dir.join("pki").join("node.secret"))?;
        let service_account_key = load_or_create_signing_key(&pki.join("sa.key"))?;
        Ok(Self {
            ca_pem,
            ca_hash,
            cert_chain: vec![leaf.der().clone(), CertificateDer::from(ca_der)],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            admin_token,
            node_secret,
            service_account_key,
        })
    }

    /// The node join token: it names the CA's hash so an agent can pin it.
    pub fn node_token(&self) -> String {
        format!("skiff1:{}:{}", self.ca_hash, self.node_secret)
    }

    /// Writes `DIR/node-token` and then `DIR/kubeconfig` (admin), both mode 0600: once the
    /// kubeconfig is there, so is the token (tools and tests wait for the kubeconfig).
    pub fn write_client_files(&self, dir: &Path, server_url: &str) -> Result<(), Error> {
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "skiff", "cluster": {
                "server": server_url,
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
            }}],
            "users": [{"name": "admin", "user": {"token": self.admin_token}}],
            "contexts": [{"name": "skiff", "context": {"cluster": "skiff", "user": "admin", "namespace": "default"}}],
            "current-context": "skiff",
            "preferences": {},
        });
        let yaml = serde_yaml::to_string(&kubeconfig).expect("kubeconfig serializes");
        write_private(
            &dir.join("node-token"),
            format!("{}\n", self.node_token()).as_bytes(),
        )?;
        write_private(&dir.join("kubeconfig"), yaml.as_bytes())?;
        Ok(())
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "skiff-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    params
}

fn load_or_create_secret(path: &Path) -> Result<String, Error> {
    if path.exists() {
        return Ok(read(path)?.trim().to_string());
    }
    let bytes: [u8; 24] = rand::rng().random();
    let token = hex(&bytes);
    write_private(path, token.as_bytes())?;
    Ok(token)
}

/// An ed25519 key stored as its base64 seed (mode 0600), made on first use.
fn load_or_create_signing_key(path: &Path) -> Result<ed25519_dalek::SigningKey, Error> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if path.exists() {
        let seed: [u8; 32] = b64
            .decode(read(path)?.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Damaged(path.into()))?;
        return Ok(ed25519_dalek::SigningKey::from_bytes(&seed));
    }
    let seed: [u8; 32] = rand::rng().random();
    write_private(path, format!("{}\n", b64.encode(seed)).as_bytes())?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })
}

/// Writes a file readable only by its owner, replacing it atomically.
fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

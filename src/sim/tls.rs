//! Throwaway certificates: a CA and a `localhost` / `127.0.0.1` leaf signed by it.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

pub struct TestCerts {
    /// The CA certificate (PEM) clients must trust.
    pub ca_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub ca_path: PathBuf,
}

/// Writes `cert.pem` (leaf + CA chain), `key.pem` and `ca.pem` into `dir`.
pub fn generate(dir: &Path) -> Result<TestCerts, String> {
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fb-openchannel throwaway CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).map_err(e)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().map_err(e)?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(e)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(e)?;

    let io = |e: std::io::Error| e.to_string();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem())).map_err(io)?;
    std::fs::write(&key_path, leaf_key.serialize_pem()).map_err(io)?;
    std::fs::write(&ca_path, ca.pem()).map_err(io)?;
    Ok(TestCerts {
        ca_pem: ca.pem(),
        cert_path,
        key_path,
        ca_path,
    })
}

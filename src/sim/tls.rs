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
    generate_valid_for(dir, None)
}

/// The civil date (year, month, day) `days` days from now, UTC.
fn date_in(days: i64) -> (i32, u8, u8) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // Howard Hinnant's days-to-civil algorithm.
    let z = now / 86_400 + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y as i32, m as u8, d as u8)
}

/// Like [`generate`], with a leaf that expires `days` days from now (when given).
pub fn generate_valid_for(dir: &Path, days: Option<i64>) -> Result<TestCerts, String> {
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
    if let Some(days) = days {
        let (y, m, d) = date_in(-1);
        leaf_params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = date_in(days);
        leaf_params.not_after = rcgen::date_time_ymd(y, m, d);
    }
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

/// A client certificate authority, as Meta's for its webhook client certificates.
pub struct ClientCa {
    /// The CA certificate (PEM), for `public.client_ca`.
    pub pem: String,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

/// A client certificate and its key (PEM), for a TLS client to present.
pub struct ClientCert {
    /// Leaf then CA.
    pub chain_pem: String,
    pub key_pem: String,
}

impl ClientCa {
    pub fn new(name: &str) -> Result<ClientCa, String> {
        let e = |e: rcgen::Error| e.to_string();
        let key = KeyPair::generate().map_err(e)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(e)?;
        Ok(ClientCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// A client certificate named `name` (common name and DNS name), signed by this CA.
    pub fn issue(&self, name: &str) -> Result<ClientCert, String> {
        self.issue_named(name, &[name])
    }

    /// A client certificate with this common name and these DNS names (none: no
    /// subject alternative names at all), signed by this CA.
    pub fn issue_named(&self, common_name: &str, dns: &[&str]) -> Result<ClientCert, String> {
        let e = |e: rcgen::Error| e.to_string();
        let key = KeyPair::generate().map_err(e)?;
        let sans: Vec<String> = dns.iter().map(|d| (*d).to_owned()).collect();
        let mut params = CertificateParams::new(sans).map_err(e)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(e)?;
        Ok(ClientCert {
            chain_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A TLS acceptor serving the leaf of `certs` (for a simulated peer behind `https`).
pub fn acceptor(certs: &TestCerts) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&certs.cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_file(&certs.key_path).map_err(|e| e.to_string())?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

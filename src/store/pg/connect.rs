//! Reaching the server: its settings, TLS, and a connection off the async runtime.

use super::*;

/// The server's connection settings (see [`StorageConfig::postgres`]).
pub fn settings(storage: &StorageConfig) -> Result<postgres::Config, String> {
    storage.postgres()
}

/// Where the queue is, for messages: the SQLite file, or `PostgreSQL at host:port/db`.
pub fn place(storage: &StorageConfig) -> String {
    if !storage.is_postgres() {
        return storage.path.display().to_string();
    }
    settings(storage)
        .map(|c| format!("PostgreSQL at {}", describe(&c)))
        .unwrap_or_else(|_| "PostgreSQL (storage.url)".into())
}

/// Where the server is, for people: `host:port/database`, never the password.
pub fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// Runs `f` on a thread of its own and waits for it. PostgreSQL's client blocks on a
/// runtime of its own, which tokio forbids on a thread that runs async tasks (`doctor`,
/// the tests, the daemon's start): everything outside the store's workers goes through
/// here. A panic in `f` is an error.
pub fn off_runtime<R: Send, E: From<String> + Send>(
    f: impl FnOnce() -> Result<R, E> + Send,
) -> Result<R, E> {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|_| Err(E::from("PostgreSQL's client panicked".to_owned())))
    })
}

pub(super) fn connect(target: &Target) -> Result<PgConn, String> {
    off_runtime(|| connect_here(target))
}

pub(super) fn connect_here(target: &Target) -> Result<PgConn, String> {
    let connected = match &target.tls {
        Some(tls) => target.config.connect(tls.clone()),
        None => target.config.connect(postgres::NoTls),
    };
    let database = target.config.get_dbname().unwrap_or("postgres");
    connected
        .map(|client| PgConn::new(client, database))
        .map_err(|e| {
            let mut text = match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => e.to_string(),
            };
            // The TLS error is the source's source: say it.
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        })
}

/// How to reach the server: its settings, and TLS when `sslmode=require`.
#[derive(Clone)]
pub struct Target {
    pub config: postgres::Config,
    /// The same settings for the asynchronous client (the wake-ups between nodes).
    pub(in crate::store) listen: tokio_postgres::Config,
    pub(in crate::store) tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// The server's settings and, with `sslmode=require` in `storage.url`, TLS with the
/// server's certificate verified against `storage.ca_file` (else the system's roots).
/// `sslmode=prefer` (the default) and `disable` connect without TLS: a certificate this
/// daemon cannot verify must not pass for one it did.
pub fn target(storage: &StorageConfig) -> Result<Target, String> {
    let listen = storage.postgres_async()?;
    let tls = match listen.get_ssl_mode() {
        tokio_postgres::config::SslMode::Require => Some(client_tls(storage.ca_file.as_deref())?),
        _ => None,
    };
    Ok(Target {
        config: listen.clone().into(),
        listen,
        tls,
    })
}

pub(super) fn client_tls(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?;
    let config = match ca_file {
        Some(file) => {
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("cannot read storage.ca_file {}: {e}", file.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("storage.ca_file {}: {e}", file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("storage.ca_file {}: {e}", file.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "storage.ca_file {} holds no certificate",
                    file.display()
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .with_platform_verifier()
            .map_err(|e| format!("the system's certificate roots: {e}"))?
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A connection for a command beside the daemon (`queue`, `doctor`): the schema must
/// be there already (the daemon makes it).
pub fn connect_for_tools(storage: &StorageConfig) -> Result<PgConn, String> {
    let target = target(storage)?;
    let server = describe(&target.config);
    let mut conn = connect(&target)
        .map_err(|e| format!("cannot connect to PostgreSQL at {server} (storage.url): {e}"))?;
    let version = off_runtime(|| pg_schema::version(&mut conn.client).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read the queue's schema at {server}: {e}"))?;
    if version == 0 {
        return Err(format!(
            "no queue in PostgreSQL at {server} yet: has the daemon run with this storage.url?"
        ));
    }
    Ok(conn)
}

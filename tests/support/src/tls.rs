//! TLS test helpers: a directory of throw-away certificates, a rustls client (the
//! proxy's own provider) and curl.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use switchyard_lab::system;
use switchyard_lab::tls::{Ca, Files};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A path as text, for TOML and command lines.
pub fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// A `[listeners.NAME]` table on `listen` for `pool`, with the lines `keys` in it,
/// terminating TLS with `cert` (bound to `names`; any name when empty); the lines
/// `extra` go in its tls table.
pub fn tls_listener(
    name: &str,
    listen: &str,
    pool: &str,
    keys: &str,
    cert: &Files,
    names: &[&str],
    extra: &str,
) -> String {
    let names = if names.is_empty() {
        String::new()
    } else {
        format!(", server_names = {names:?}")
    };
    format!(
        "[listeners.{name}]\nlisten = \"{listen}\"\npool = \"{pool}\"\n{keys}\n[listeners.{name}.tls]\n\
         certificates = [{{ cert = \"{}\", key = \"{}\"{names} }}]\n{extra}\n",
        path_text(&cert.cert),
        path_text(&cert.key)
    )
}

/// A temp directory for certificate files.
pub fn cert_dir(prefix: &str) -> PathBuf {
    system::temp_dir(prefix).expect("temp dir")
}

/// A CA written to `dir/name.ca.pem`, with its path.
pub fn ca(dir: &Path, name: &str) -> (Ca, PathBuf) {
    let ca = Ca::new(name).expect("CA");
    let path = ca.write(dir, &format!("{name}.ca.pem")).expect("write CA");
    (ca, path)
}

/// A server certificate for `names` issued by `ca`, written as `dir/file.{pem,key}`.
pub fn server_cert(ca: &Ca, dir: &Path, file: &str, names: &[&str]) -> Files {
    ca.server(names).expect("issue").write(dir, file).expect("write cert")
}

/// A TLS connector trusting only the CA in `ca_file`.
pub fn connector(ca_file: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Connects and handshakes with SNI `name`; a peer that stalls for 15 s is an error.
pub async fn connect_tls(
    addr: SocketAddr,
    name: &str,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(name.to_string()).expect("server name");
    let handshake = async { connector.connect(name, TcpStream::connect(addr).await?).await };
    tokio::time::timeout(std::time::Duration::from_secs(15), handshake)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Runs a command off the async workers; returns (success, stdout, stderr).
pub async fn run(mut command: Command) -> (bool, String, String) {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("spawn");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `curl -sS --max-time 10` with `args`; installs curl if missing.
pub async fn curl(args: &[&str]) -> (bool, String, String) {
    system::ensure_packages(&[("curl", "curl")]).expect("curl installed");
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "10"]).args(args);
    run(command).await
}

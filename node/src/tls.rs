//! TLS on the client and peer ports, configured by etcd's flags with etcd's meaning.
//!
//! - `--cert-file`/`--key-file`: the client listener (`https://` in `--listen-client-urls`)
//!   serves gRPC over TLS with this certificate.
//! - `--trusted-ca-file`: clients must present a certificate signed by this CA. As in etcd, a
//!   trusted CA alone already requires client certificates; `--client-cert-auth` states it
//!   explicitly and needs the CA to check against.
//! - `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`, `--peer-client-cert-auth`:
//!   the same for the peer listener. A member's own connections to other members (Raft
//!   messages, requests forwarded to the leader, ReadIndex, Publish, the member list asked for
//!   when joining) verify the other member against `--peer-trusted-ca-file` and present
//!   `--peer-cert-file` as their client certificate, as etcd's peer transport does.
//!
//! The metrics and health listener stays plain HTTP, like etcd's `--listen-metrics-urls`, so
//! probes and Prometheus need no certificates.
//!
//! Every inconsistency (an `https://` URL without a certificate, a certificate without an
//! `https://` URL, unreadable or malformed PEM, a key that does not match its certificate) is a
//! start error: a member that silently served plaintext where TLS was asked for would be worse
//! than one that does not start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

use crate::config::NodeFlags;

/// How long an accepted connection may take to finish its TLS handshake before it is dropped,
/// so half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {}: cannot read: {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {}: not a PEM certificate file: {reason}", path.display())]
    BadCertificate { flag: &'static str, path: PathBuf, reason: String },
    #[error("{flag} {}: not a PEM private key file: {reason}", path.display())]
    BadKey { flag: &'static str, path: PathBuf, reason: String },
    #[error("{set} is set but {missing} is not; give both")]
    Incomplete { set: &'static str, missing: &'static str },
    #[error("{urls_flag} has https:// URLs, which need {cert_flag} and {key_flag}")]
    HttpsWithoutCert { urls_flag: &'static str, cert_flag: &'static str, key_flag: &'static str },
    #[error("{cert_flag} is set but {urls_flag} has no https:// URL; use https:// URLs to serve TLS")]
    CertWithoutHttps { cert_flag: &'static str, urls_flag: &'static str },
    #[error("{urls_flag} mixes http:// and https:// URLs; use one scheme")]
    MixedSchemes { urls_flag: &'static str },
    #[error("--listen-peer-urls and --initial-advertise-peer-urls must both be http:// or both https://")]
    PeerSchemesDisagree,
    #[error("{flag} needs {cert_flag} and {key_flag} (TLS on that port)")]
    NeedsCert { flag: &'static str, cert_flag: &'static str, key_flag: &'static str },
    #[error("{auth_flag} needs {ca_flag}, the CA that signs the certificates to accept")]
    AuthWithoutCa { auth_flag: &'static str, ca_flag: &'static str },
    #[error(
        "https:// peer URLs need --peer-trusted-ca-file: members verify each other's certificates against it"
    )]
    PeerCaMissing,
    #[error(
        "--listen-metrics-urls {url}: the metrics and health listener serves plain HTTP only (as etcd's); use http://"
    )]
    MetricsHttps { url: String },
    #[error("{side} TLS: certificate or key refused: {message}")]
    Refused { side: &'static str, message: String },
}

/// Why a connection to another member could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PeerEndpointError {
    #[error("invalid peer URL {url:?}: {message}")]
    InvalidUrl { url: String, message: String },
    #[error(
        "peer URL {url} is https:// but this member has no peer TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)"
    )]
    NoTls { url: String },
    #[error("peer URL {url}: TLS setup failed: {message}")]
    Tls { url: String, message: String },
}

/// How this member dials other members' peer URLs: `http://` URLs in plaintext, `https://`
/// URLs with the peer CA and the peer certificate as client certificate.
#[derive(Clone, Debug, Default)]
pub struct PeerTls {
    config: Option<ClientTlsConfig>,
}

impl PeerTls {
    /// An endpoint for `url`, with TLS when the URL is `https://`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, PeerEndpointError> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| PeerEndpointError::InvalidUrl { url: url.to_string(), message: error_chain(&e) })?;
        if !is_https(url) {
            return Ok(endpoint);
        }
        let config = self.config.clone().ok_or_else(|| PeerEndpointError::NoTls { url: url.to_string() })?;
        // Certificates name IPv6 hosts without the URL's brackets.
        let host = endpoint.uri().host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let config = config.domain_name(host);
        endpoint
            .tls_config(config)
            .map_err(|e| PeerEndpointError::Tls { url: url.to_string(), message: error_chain(&e) })
    }

    /// Whether `https://` peer URLs can be dialed.
    pub fn is_enabled(&self) -> bool {
        self.config.is_some()
    }
}

/// A member's TLS settings, checked and loaded from its flags.
#[derive(Debug, Default)]
pub struct NodeTls {
    client: Option<ServerTlsConfig>,
    peer: Option<ServerTlsConfig>,
    /// How this member connects to other members.
    pub peer_client: PeerTls,
    /// Whether the client listener requires client certificates.
    pub client_cert_required: bool,
}

impl NodeTls {
    /// Reads and checks the certificate files named by the flags. Fails on anything
    /// inconsistent (see the module documentation); never serves plaintext where TLS was asked
    /// for.
    pub fn from_flags(flags: &NodeFlags) -> Result<Self, TlsError> {
        let (client, peer) = sides(flags)?;
        let client = client.load()?;
        let peer = peer.load()?;
        let mut tls = NodeTls::default();
        if let Some(loaded) = client {
            tls.client_cert_required = loaded.ca.is_some();
            tls.client = Some(loaded.server_config());
        }
        if let Some(loaded) = peer {
            // `check` made the CA mandatory for peers.
            let ca = loaded.ca.clone().ok_or(TlsError::PeerCaMissing)?;
            tls.peer = Some(loaded.server_config());
            tls.peer_client = PeerTls {
                config: Some(
                    ClientTlsConfig::new()
                        .ca_certificate(ca)
                        .identity(loaded.identity.clone())
                        .timeout(HANDSHAKE_TIMEOUT),
                ),
            };
        }
        // Let rustls check what only it can (a key that does not match its certificate, a
        // certificate it cannot use) now rather than on the first connection.
        tls.client_server()?;
        tls.peer_server()?;
        if tls.peer_client.is_enabled() {
            tls.peer_client
                .endpoint("https://127.0.0.1")
                .map_err(|e| TlsError::Refused { side: "peer client", message: e.to_string() })?;
        }
        Ok(tls)
    }

    /// A server builder for the client listener: with TLS when `--cert-file` is set.
    pub fn client_server(&self) -> Result<Server, TlsError> {
        builder("client", self.client.as_ref())
    }

    /// A server builder for the peer listener: with TLS when `--peer-cert-file` is set.
    pub fn peer_server(&self) -> Result<Server, TlsError> {
        builder("peer", self.peer.as_ref())
    }

    /// Whether the client listener serves TLS.
    pub fn client_enabled(&self) -> bool {
        self.client.is_some()
    }

    /// Whether the peer listener serves TLS (then always requiring member certificates signed
    /// by the peer CA, as etcd does once a trusted CA is given).
    pub fn peer_enabled(&self) -> bool {
        self.peer.is_some()
    }
}

/// Checks the TLS flags against each other and the URLs without reading any file, so the
/// operator's tests can prove the command line they render is one kvnode accepts.
pub fn check_flags(flags: &NodeFlags) -> Result<(), TlsError> {
    let (client, peer) = sides(flags)?;
    client.check()?;
    peer.check()?;
    Ok(())
}

/// The client and peer sides of `flags`, after the checks that span both.
fn sides(flags: &NodeFlags) -> Result<(Side<'_>, Side<'_>), TlsError> {
    if let Some(url) = flags.listen_metrics_urls.iter().find(|u| is_https(u)) {
        return Err(TlsError::MetricsHttps { url: url.clone() });
    }
    let client = Side {
        name: "client",
        urls_flag: "--listen-client-urls",
        cert_flag: "--cert-file",
        key_flag: "--key-file",
        ca_flag: "--trusted-ca-file",
        auth_flag: "--client-cert-auth",
        https: uniform_https("--listen-client-urls", &flags.listen_client_urls)?,
        cert: flags.cert_file.as_deref(),
        key: flags.key_file.as_deref(),
        ca: flags.trusted_ca_file.as_deref(),
        auth: flags.client_cert_auth,
        ca_required: false,
    };
    let listen_peer_https = uniform_https("--listen-peer-urls", &flags.listen_peer_urls)?;
    let advertise_peer_https =
        uniform_https("--initial-advertise-peer-urls", &flags.initial_advertise_peer_urls)?;
    if listen_peer_https != advertise_peer_https {
        // Peers would dial TLS to a plaintext listener, or the other way round.
        return Err(TlsError::PeerSchemesDisagree);
    }
    let peer = Side {
        name: "peer",
        urls_flag: "--listen-peer-urls",
        cert_flag: "--peer-cert-file",
        key_flag: "--peer-key-file",
        ca_flag: "--peer-trusted-ca-file",
        auth_flag: "--peer-client-cert-auth",
        https: listen_peer_https,
        cert: flags.peer_cert_file.as_deref(),
        key: flags.peer_key_file.as_deref(),
        ca: flags.peer_trusted_ca_file.as_deref(),
        auth: flags.peer_client_cert_auth,
        // This member dials other members' https:// peer URLs and must verify them.
        ca_required: true,
    };
    Ok((client, peer))
}

fn builder(side: &'static str, config: Option<&ServerTlsConfig>) -> Result<Server, TlsError> {
    let server = Server::builder();
    match config {
        None => Ok(server),
        Some(c) => {
            server.tls_config(c.clone()).map_err(|e| TlsError::Refused { side, message: error_chain(&e) })
        }
    }
}

/// The flags and files of one listener (client or peer).
struct Side<'a> {
    name: &'static str,
    urls_flag: &'static str,
    cert_flag: &'static str,
    key_flag: &'static str,
    ca_flag: &'static str,
    auth_flag: &'static str,
    https: bool,
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
    ca: Option<&'a Path>,
    auth: bool,
    /// Whether TLS on this side needs the CA (peers verify each other with it).
    ca_required: bool,
}

/// A listener's certificate, key and (optional) CA, read and parsed.
struct Loaded {
    identity: Identity,
    ca: Option<Certificate>,
}

impl Loaded {
    fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(self.identity.clone()).timeout(HANDSHAKE_TIMEOUT);
        match &self.ca {
            // As etcd: a trusted CA means client certificates are required and checked.
            Some(ca) => config.client_ca_root(ca.clone()).client_auth_optional(false),
            None => config,
        }
    }
}

impl Side<'_> {
    /// Checks the flags of this side against each other; the certificate and key files when
    /// this side serves TLS, `None` when it serves plaintext.
    fn check(&self) -> Result<Option<(&Path, &Path)>, TlsError> {
        let (cert, key) = match (self.cert, self.key) {
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => {
                return Err(TlsError::Incomplete { set: self.cert_flag, missing: self.key_flag });
            }
            (None, Some(_)) => {
                return Err(TlsError::Incomplete { set: self.key_flag, missing: self.cert_flag });
            }
            (None, None) => {
                if self.https {
                    return Err(TlsError::HttpsWithoutCert {
                        urls_flag: self.urls_flag,
                        cert_flag: self.cert_flag,
                        key_flag: self.key_flag,
                    });
                }
                let stray = [(self.ca_flag, self.ca.is_some()), (self.auth_flag, self.auth)];
                if let Some((flag, _)) = stray.iter().find(|(_, set)| *set) {
                    return Err(TlsError::NeedsCert {
                        flag,
                        cert_flag: self.cert_flag,
                        key_flag: self.key_flag,
                    });
                }
                return Ok(None);
            }
        };
        if !self.https {
            return Err(TlsError::CertWithoutHttps { cert_flag: self.cert_flag, urls_flag: self.urls_flag });
        }
        if self.ca.is_none() {
            if self.ca_required {
                return Err(TlsError::PeerCaMissing);
            }
            if self.auth {
                return Err(TlsError::AuthWithoutCa { auth_flag: self.auth_flag, ca_flag: self.ca_flag });
            }
        }
        Ok(Some((cert, key)))
    }

    /// Checks, then reads and parses the files; `None` when this side serves plaintext.
    fn load(&self) -> Result<Option<Loaded>, TlsError> {
        let Some((cert, key)) = self.check()? else { return Ok(None) };
        let cert_pem = read_certificates(self.cert_flag, cert)?;
        let key_pem = read_key(self.key_flag, key)?;
        let ca = self.ca.map(|ca| read_certificates(self.ca_flag, ca)).transpose()?;
        tracing::debug!(side = self.name, "TLS files loaded");
        Ok(Some(Loaded {
            identity: Identity::from_pem(cert_pem, key_pem),
            ca: ca.map(Certificate::from_pem),
        }))
    }
}

/// Whether every URL is `https://` (false when none is); mixing schemes is refused, since
/// one listener serves one of them.
fn uniform_https(urls_flag: &'static str, urls: &[String]) -> Result<bool, TlsError> {
    let https = urls.iter().filter(|u| is_https(u)).count();
    match https {
        0 => Ok(false),
        n if n == urls.len() => Ok(true),
        _ => Err(TlsError::MixedSchemes { urls_flag }),
    }
}

fn is_https(url: &str) -> bool {
    url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { flag, path: path.to_path_buf(), source })
}

/// Reads a PEM file that must hold at least one certificate.
fn read_certificates(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = read(flag, path)?;
    let bad = |reason: String| TlsError::BadCertificate { flag, path: path.to_path_buf(), reason };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".to_string()));
    }
    Ok(bytes)
}

/// Reads a PEM file that must hold a private key (PKCS#8, PKCS#1 or SEC1).
fn read_key(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = read(flag, path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(_) => Ok(bytes),
        Err(pem::Error::NoItemsFound) => Err(TlsError::BadKey {
            flag,
            path: path.to_path_buf(),
            reason: "no PRIVATE KEY block".to_string(),
        }),
        Err(e) => Err(TlsError::BadKey { flag, path: path.to_path_buf(), reason: e.to_string() }),
    }
}

/// An error and its causes on one line (tonic's transport errors say little at the top).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_must_agree() {
        let urls = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!uniform_https("f", &urls(&["http://a:1", "b:2"])).expect("plain"));
        assert!(uniform_https("f", &urls(&["https://a:1", "HTTPS://b:2"])).expect("tls"));
        assert!(matches!(
            uniform_https("f", &urls(&["https://a:1", "http://b:2"])),
            Err(TlsError::MixedSchemes { .. })
        ));
    }

    #[test]
    fn plain_http_peer_urls_need_no_tls() {
        let endpoint = PeerTls::default().endpoint("http://127.0.0.1:2380").expect("plain endpoint");
        assert_eq!(endpoint.uri().scheme_str(), Some("http"));
        assert!(matches!(
            PeerTls::default().endpoint("https://127.0.0.1:2380"),
            Err(PeerEndpointError::NoTls { .. })
        ));
    }
}

//! A throwaway certificate authority for the TLS tests: generated at test time (rcgen), written
//! as PEM files into a temp dir that is removed with it.

use std::path::{Path, PathBuf};

use kvnode::config::NodeFlags;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// A PEM certificate and its private key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA, a member certificate for loopback (server and client use, as etcd's peer certs), a
/// client certificate, and a certificate from an unrelated CA.
pub struct TestPki {
    pub dir: TempDir,
    pub ca: PathBuf,
    /// For `127.0.0.1`, `::1` and `localhost`; members serve it and present it to each other.
    pub member: CertFiles,
    /// A client certificate signed by the CA.
    pub client: CertFiles,
    /// Signed by another CA: must be refused wherever client certificates are checked.
    pub stranger: CertFiles,
    /// The other CA's certificate.
    pub stranger_ca: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("self-signed ca")
}

fn leaf(
    dir: &Path,
    name: &str,
    sans: &[&str],
    usages: Vec<ExtendedKeyUsagePurpose>,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> CertFiles {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("signed leaf");
    let files = CertFiles { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) };
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}

impl TestPki {
    /// Generates every certificate into a fresh temp dir.
    pub fn generate() -> Self {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let dir = tempfile::tempdir().expect("pki dir");
        let authority = ca("raftkv test CA");
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, authority.pem()).expect("write ca");
        let member = leaf(
            dir.path(),
            "member",
            &["127.0.0.1", "::1", "localhost"],
            vec![ServerAuth, ClientAuth],
            &authority,
        );
        let client = leaf(dir.path(), "client", &[], vec![ClientAuth], &authority);
        let other = ca("some other CA");
        let stranger_ca = dir.path().join("stranger-ca.crt");
        std::fs::write(&stranger_ca, other.pem()).expect("write other ca");
        let stranger =
            leaf(dir.path(), "stranger", &["127.0.0.1", "localhost"], vec![ServerAuth, ClientAuth], &other);
        Self { dir, ca: ca_path, member, client, stranger, stranger_ca }
    }

    /// Writes `contents` into a file of the PKI dir (for malformed-file tests).
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// etcd-client TLS trusting the CA, presenting `identity` (if any) as client certificate.
    pub fn client_tls(&self, identity: Option<&CertFiles>) -> etcd_client::TlsOptions {
        let ca = std::fs::read(&self.ca).expect("read ca");
        let options = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
        match identity {
            Some(files) => options.identity(etcd_client::Identity::from_pem(
                std::fs::read(&files.cert).expect("read cert"),
                std::fs::read(&files.key).expect("read key"),
            )),
            None => options,
        }
    }
}

/// Which listeners of a member serve TLS.
#[derive(Debug, Clone, Copy)]
pub struct TlsMode {
    /// Client port over TLS (`--cert-file`, `--key-file`).
    pub client: bool,
    /// Require client certificates (`--trusted-ca-file`, `--client-cert-auth`).
    pub client_cert_auth: bool,
    /// Peer port over mutual TLS (all four `--peer-*` flags).
    pub peer: bool,
}

fn to_https(urls: &mut [String]) {
    for u in urls {
        *u = u.replacen("http://", "https://", 1);
    }
}

/// Switches a member's flags (from `test_flags`) to https:// URLs and the PKI's files. Call
/// before `--initial-cluster` is built from the peer URLs.
pub fn use_tls(flags: &mut NodeFlags, pki: &TestPki, mode: TlsMode) {
    if mode.client {
        to_https(&mut flags.listen_client_urls);
        to_https(&mut flags.advertise_client_urls);
        flags.cert_file = Some(pki.member.cert.clone());
        flags.key_file = Some(pki.member.key.clone());
        if mode.client_cert_auth {
            flags.trusted_ca_file = Some(pki.ca.clone());
            flags.client_cert_auth = true;
        }
    }
    if mode.peer {
        to_https(&mut flags.listen_peer_urls);
        to_https(&mut flags.initial_advertise_peer_urls);
        flags.peer_cert_file = Some(pki.member.cert.clone());
        flags.peer_key_file = Some(pki.member.key.clone());
        flags.peer_trusted_ca_file = Some(pki.ca.clone());
        flags.peer_client_cert_auth = true;
    }
}

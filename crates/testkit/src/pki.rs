//! A test CA and server certificates, generated per run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A test CA and a server certificate for `localhost` and `127.0.0.1`.
#[derive(Debug)]
pub struct Pki {
    /// The CA certificate (PEM): what clients trust (`tls-ca-file`).
    pub ca_pem: PathBuf,
    /// Server certificate followed by the CA (PEM).
    pub chain_pem: PathBuf,
    /// Server private key (PEM).
    pub key_pem: PathBuf,
}

impl Pki {
    /// Generates a fresh CA and server certificate into `dir`.
    #[must_use]
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "mailferry test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");

        let pki = Self {
            ca_pem: dir.join("ca.pem"),
            chain_pem: dir.join("server-chain.pem"),
            key_pem: dir.join("server.key"),
        };
        std::fs::write(&pki.ca_pem, ca_cert.pem()).expect("write CA");
        std::fs::write(
            &pki.chain_pem,
            format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        )
        .expect("write chain");
        std::fs::write(&pki.key_pem, leaf_key.serialize_pem()).expect("write key");
        std::fs::set_permissions(&pki.key_pem, std::fs::Permissions::from_mode(0o600))
            .expect("chmod key");
        pki
    }
}

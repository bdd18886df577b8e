//! TLS for the mail servers: the system's roots plus the private CA a `ca_file` names,
//! on rustls with the aws-lc-rs provider.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Reads the certificates of a PEM file (`ca_file`): at least one, each one parsable.
/// The error says what is wrong with the file, for the setting's key path.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read {}: {e}; name a readable PEM file of the CA that signed the server's \
             certificate",
            path.display()
        )
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate: it must contain `-----BEGIN CERTIFICATE-----` blocks (PEM)",
            path.display()
        ));
    }
    let mut store = RootCertStore::empty();
    for cert in &certs {
        store.add(cert.clone()).map_err(|e| {
            format!(
                "{} holds a certificate that cannot be a trust anchor: {e}",
                path.display()
            )
        })?;
    }
    Ok(certs)
}

/// A client configuration trusting the system's roots and `ca_file`'s certificates.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "no trusted root certificates found on this system: install the CA certificates \
             package, or name the server's CA in ca_file"
                .into(),
        );
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Says plainly what a failed handshake means, for an operator reading a log line.
pub fn explain_handshake_error(error: &std::io::Error) -> String {
    let text = error.to_string();
    if text.contains("invalid peer certificate") {
        let hint = if text.contains("UnknownIssuer") {
            "it is not signed by a CA this system trusts: if the server uses a private CA, name \
             its PEM file in ca_file"
        } else if text.contains("NotValidForName") {
            "it is not issued for the host name connected to: set host to a name the \
             certificate carries"
        } else if text.contains("Expired") {
            "it has expired: the server's certificate must be renewed"
        } else {
            "check the server's certificate, or name its CA in ca_file"
        };
        format!("the server's TLS certificate is not trusted ({text}): {hint}")
    } else {
        format!("TLS handshake failed: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_non_pem_ca_file_is_named_with_its_problem() {
        let dir = std::env::temp_dir().join(format!("lp-ca-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        assert!(read_ca_file(&missing).unwrap_err().contains("cannot read"));
        let text = dir.join("text.pem");
        std::fs::write(&text, "not a certificate\n").unwrap();
        assert!(
            read_ca_file(&text)
                .unwrap_err()
                .contains("holds no certificate")
        );
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_ca_file(&broken).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! TLS on edgekv's gRPC links (rustls): the server side from a certificate and
//! key file, the client side from a CA file, and the rule that an `https://`
//! endpoint is refused — never called in clear — when no CA is configured.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The TLS of a server from PEM files: its certificate chain and private key.
pub fn server(cert: &Path, key: &Path) -> Result<ServerTlsConfig, String> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path)
            .map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))
    };
    let (cert, key) = (read(cert, "certificate")?, read(key, "key")?);
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
}

/// Reads the PEM file of the CA a client trusts.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the TLS CA {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "the TLS CA {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(pem)
}

/// The client TLS for `url`: none for `http://`; for `https://`, trust in `ca`
/// (PEM), and an error when no CA is configured — credentials are never sent in
/// clear to an endpoint that asked for TLS.
pub fn client_for(url: &str, ca: Option<&[u8]>) -> Result<Option<ClientTlsConfig>, String> {
    if !url.starts_with("https://") {
        return Ok(None);
    }
    let ca = ca.ok_or_else(|| {
        format!("{url} is an https endpoint, but no TLS CA is configured (--tls-ca): refused")
    })?;
    Ok(Some(
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_https_endpoint_needs_a_ca_and_http_needs_none() {
        assert!(client_for("http://127.0.0.1:7001", None).unwrap().is_none());
        let refused = client_for("https://origin:7001", None).unwrap_err();
        assert!(refused.contains("--tls-ca"), "{refused}");
        assert!(
            client_for("https://origin:7001", Some(b"pem"))
                .unwrap()
                .is_some()
        );
        let dir = std::env::temp_dir().join(format!("edgekv-tls-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate").unwrap();
        assert!(read_ca(&dir).unwrap_err().contains("no PEM"));
        let _ = std::fs::remove_file(&dir);
    }
}

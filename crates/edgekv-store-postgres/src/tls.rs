//! TLS to the database (rustls), with the URL parameters and meanings of libpq,
//! which the managed PostgreSQL services document:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | if the server offers it | checked against `sslrootcert` when one is given, else not checked |
//! | `require` | always | as `prefer` |
//! | `verify-ca` | always | signed by a CA of `sslrootcert` |
//! | `verify-full` | always | signed by a CA of `sslrootcert`, and names the host |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the
//! machine's CA bundle; `verify-ca` and `verify-full` without it use
//! `~/.postgresql/root.crt`, as libpq does, and refuse to start when it is
//! missing. `sslcert` and `sslkey` (PEM) give a client certificate. `allow`
//! (plain first, TLS if refused) is not offered: say `prefer`.
//!
//! SCRAM channel binding is not offered (`channel_binding=require` on the
//! server refuses the connection); the TLS session itself is.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// How a connection uses TLS (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never.
    Disable,
    /// When the server offers it.
    Prefer,
    /// Always; the certificate is checked only against a given `sslrootcert`.
    Require,
    /// Always, with a certificate signed by a trusted CA.
    VerifyCa,
    /// Always, with a certificate signed by a trusted CA that names the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "sslmode={other} is not offered: use disable, prefer, require, verify-ca or verify-full"
            )),
        }
    }

    fn wire(self) -> WireMode {
        match self {
            SslMode::Disable => WireMode::Disable,
            SslMode::Prefer => WireMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireMode::Require,
        }
    }
}

/// The TLS parameters of a URL, taken out of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TlsParams {
    /// `sslmode` (absent: prefer).
    pub mode: Option<SslMode>,
    /// `sslrootcert`.
    pub root_cert: Option<String>,
    /// `sslcert`.
    pub cert: Option<PathBuf>,
    /// `sslkey`.
    pub key: Option<PathBuf>,
}

/// Splits a `postgres://` URL into the URL without its TLS parameters and those
/// parameters (percent-decoded). A URL of another form is given back whole.
pub fn split_url(url: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_string(), params));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || decode(value).map_err(|e| format!("the URL's {name}: {e}"));
        match name {
            "sslmode" => params.mode = Some(SslMode::parse(&decoded()?)?),
            "sslrootcert" => params.root_cert = Some(decoded()?),
            "sslcert" => params.cert = Some(PathBuf::from(decoded()?)),
            "sslkey" => params.key = Some(PathBuf::from(decoded()?)),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, params))
}

/// Percent-decodes a URL parameter's value.
fn decode(value: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| "not UTF-8 once decoded".to_string())
}

/// Where the machine keeps its CA bundle: `SSL_CERT_FILE`, else the first of
/// the usual places that exists.
fn system_bundle() -> Result<PathBuf, String> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return Ok(PathBuf::from(file));
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
    .ok_or_else(|| {
        "sslrootcert=system: no CA bundle on this machine (set SSL_CERT_FILE, or install \
         ca-certificates)"
            .to_string()
    })
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

/// The CA certificates of `sslrootcert` (or its default, for the verify modes).
fn roots(params: &TlsParams) -> Result<Option<RootCertStore>, String> {
    let path = match params.root_cert.as_deref() {
        Some("system") => system_bundle()?,
        Some(path) => PathBuf::from(path),
        None => match params.mode {
            Some(SslMode::VerifyCa | SslMode::VerifyFull) => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                let default = home.map(|h| h.join(".postgresql/root.crt"));
                match default.filter(|path| path.exists()) {
                    Some(path) => path,
                    None => {
                        return Err(
                            "sslmode=verify-ca and verify-full need the CA to trust: add \
                             sslrootcert=PATH (a PEM file) or sslrootcert=system to the URL"
                                .into(),
                        );
                    }
                }
            }
            _ => return Ok(None),
        },
    };
    let pem = read_pem(&path, "sslrootcert")?;
    let mut store = RootCertStore::empty();
    let mut found = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
        // A bundle may hold a certificate rustls cannot use; the others count.
        if store.add(cert).is_ok() {
            found += 1;
        }
    }
    if found == 0 {
        return Err(format!(
            "sslrootcert {} holds no usable PEM certificate",
            path.display()
        ));
    }
    Ok(Some(store))
}

/// The client certificate of `sslcert` and `sslkey`.
fn client_identity(
    params: &TlsParams,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
    let (cert, key) = match (&params.cert, &params.key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => return Err("sslcert and sslkey go together: give both, or neither".into()),
    };
    let pem = read_pem(cert, "sslcert")?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("sslcert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "sslcert {} holds no PEM certificate",
            cert.display()
        ));
    }
    let pem = read_pem(key, "sslkey")?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("sslkey {}: {e}", key.display()))?
        .ok_or_else(|| format!("sslkey {} holds no PEM private key", key.display()))?;
    Ok(Some((chain, key)))
}

/// The TLS of a database URL's connections, made once (its files read) when
/// the store opens.
#[derive(Clone)]
pub struct MakeTls {
    config: Arc<ClientConfig>,
    mode: SslMode,
}

impl std::fmt::Debug for MakeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeTls").field("mode", &self.mode).finish()
    }
}

impl MakeTls {
    /// The TLS of `params`; sets the connection's mode in `config`.
    ///
    /// A mode the URL gave where [`split_url`] did not look (a key=value
    /// string, say) was read by the URL's parser: it is kept, never lowered.
    /// Over Unix sockets TLS is not used, whatever the mode (as libpq).
    pub fn new(params: &TlsParams, config: &mut tokio_postgres::Config) -> Result<Self, String> {
        let mode = match params.mode {
            Some(mode) => mode,
            None if config.get_ssl_mode() == WireMode::Require => SslMode::Require,
            None if config.get_ssl_mode() == WireMode::Disable => SslMode::Disable,
            None => SslMode::Prefer,
        };
        let sockets_only = (config.get_hosts().iter())
            .all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)));
        if sockets_only && !config.get_hosts().is_empty() {
            config.ssl_mode(WireMode::Disable);
        } else {
            config.ssl_mode(mode.wire());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = roots(params)?;
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            Some(roots) => {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("sslrootcert: {e}"))?;
                Arc::new(Verify {
                    webpki: Some(webpki),
                    names: mode == SslMode::VerifyFull,
                    provider: provider.clone(),
                })
            }
            None => Arc::new(Verify {
                webpki: None,
                names: false,
                provider: provider.clone(),
            }),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match client_identity(params)? {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("sslcert/sslkey: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        Ok(MakeTls {
            config: Arc::new(config),
            mode,
        })
    }

    /// The mode, for messages.
    pub fn mode(&self) -> SslMode {
        self.mode
    }
}

/// The check of the server's certificate for each mode: the CA's signature
/// (with roots), the host's name (`verify-full`), and always the signature of
/// the handshake (the server holds the certificate's key).
#[derive(Debug)]
struct Verify {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    names: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl<S> MakeTlsConnect<S> for MakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Tls<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        // No host name (a socket directory, or `hostaddr` alone): nothing to
        // check a certificate's name against, which only verify-full needs.
        let domain = match (domain, self.mode) {
            ("", SslMode::VerifyFull) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "sslmode=verify-full needs a host name to check the certificate against \
                     (host=, not hostaddr= alone)",
                ));
            }
            ("", _) => "postgres",
            (domain, _) => domain,
        };
        let name = ServerName::try_from(domain.to_string()).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("host {domain:?}: {e}"))
        })?;
        Ok(Connect {
            config: self.config.clone(),
            name,
        })
    }
}

/// The TLS handshake of one connection.
pub struct Connect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Tls<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Tls<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            let stream = connector.connect(self.name, stream).await?;
            Ok(Tls(Box::new(stream)))
        })
    }
}

/// A connection's TLS stream.
pub struct Tls<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Tls<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Tls<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Tls<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_url() {
        let (url, params) = split_url(
            "postgres://u@h1,h2/db?target_session_attrs=read-write&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%20x.pem&sslcert=/c.pem&sslkey=/k.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h1,h2/db?target_session_attrs=read-write");
        assert_eq!(
            params,
            TlsParams {
                mode: Some(SslMode::VerifyFull),
                root_cert: Some("/etc/ca x.pem".into()),
                cert: Some("/c.pem".into()),
                key: Some("/k.pem".into()),
            }
        );
        let (url, params) = split_url("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(
            (url.as_str(), params.mode),
            ("postgres://u@h/db", Some(SslMode::Disable))
        );
        let (url, params) = split_url("postgres://u@h/db").unwrap();
        assert_eq!(
            (url.as_str(), params),
            ("postgres://u@h/db", TlsParams::default())
        );
    }

    #[test]
    fn a_mode_that_is_not_offered_is_refused_by_name() {
        let err = split_url("postgres://u@h/db?sslmode=allow").unwrap_err();
        assert!(
            err.contains("sslmode=allow") && err.contains("verify-full"),
            "{err}"
        );
        let err = split_url("postgres://u@h/db?sslrootcert=%FF").unwrap_err();
        assert!(err.contains("sslrootcert"), "{err}");
    }

    #[test]
    fn the_verify_modes_need_a_ca_and_the_files_must_be_there() {
        let mut config = tokio_postgres::Config::new();
        let params = TlsParams {
            mode: Some(SslMode::VerifyFull),
            root_cert: Some("/nonexistent/ca.pem".into()),
            ..TlsParams::default()
        };
        let err = MakeTls::new(&params, &mut config).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let params = TlsParams {
            mode: Some(SslMode::Require),
            cert: Some("/c.pem".into()),
            ..TlsParams::default()
        };
        let err = MakeTls::new(&params, &mut config).unwrap_err();
        assert!(err.contains("sslcert and sslkey"), "{err}");
        let mut config = tokio_postgres::Config::new();
        let made = MakeTls::new(&TlsParams::default(), &mut config).unwrap();
        assert_eq!(made.mode(), SslMode::Prefer);
        assert_eq!(config.get_ssl_mode(), WireMode::Prefer);
    }

    #[test]
    fn a_mode_the_url_parser_read_is_never_lowered() {
        // A key=value string: split_url does not look into it.
        let (url, params) = split_url("host=db user=u dbname=d sslmode=require").unwrap();
        let mut config: tokio_postgres::Config = url.parse().unwrap();
        let made = MakeTls::new(&params, &mut config).unwrap();
        assert_eq!(made.mode(), SslMode::Require);
        assert_eq!(config.get_ssl_mode(), WireMode::Require);
        // Over a Unix socket alone, TLS is not used (libpq ignores sslmode there).
        let mut config: tokio_postgres::Config =
            "host=/var/run/postgresql user=u dbname=d".parse().unwrap();
        MakeTls::new(&TlsParams::default(), &mut config).unwrap();
        assert_eq!(config.get_ssl_mode(), WireMode::Disable);
    }

    #[test]
    fn without_a_host_name_only_verify_full_refuses() {
        let mut config = tokio_postgres::Config::new();
        let mut prefer = MakeTls::new(&TlsParams::default(), &mut config).unwrap();
        assert!(MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(&mut prefer, "").is_ok());
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let params = TlsParams {
            mode: Some(SslMode::VerifyFull),
            root_cert: Some(ca_file.display().to_string()),
            ..TlsParams::default()
        };
        let mut full = MakeTls::new(&params, &mut config).unwrap();
        let err = MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(&mut full, "")
            .err()
            .unwrap();
        assert!(err.to_string().contains("verify-full"), "{err}");
    }
}

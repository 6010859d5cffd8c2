//! How the PostgreSQL sink connects: `sslmode` and `sslrootcert` taken from the URL (as libpq
//! reads them), TLS through rustls.
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it, else plain (a warning per connection) | not checked |
//! | `require` | always | not checked; with `sslrootcert`, its chain is (like `verify-ca`) |
//! | `verify-ca` | always | chain to `sslrootcert` (or the Mozilla roots) |
//! | `verify-full` | always | chain and host name |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the Mozilla root set
//! (`webpki-roots`), which is also what `verify-ca` and `verify-full` use without it.

use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{AuditError, AuditErrorKind};

/// How much TLS a connection insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported (it tries plain first); use prefer, which tries TLS first"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }
}

/// A parsed connection: the driver's settings, the TLS connector, and the mode.
pub(crate) struct Connect {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
    pub(crate) mode: SslMode,
}

fn config_error(message: impl Into<String>) -> AuditError {
    AuditError::new(AuditErrorKind::Config, message)
}

/// Parses a URL (`postgres://…?sslmode=verify-full&sslrootcert=/etc/ca.pem`) or a
/// `key=value` connection string. Errors never repeat the URL (it may hold a password).
pub(crate) fn connect(url: &str) -> Result<Connect, AuditError> {
    let (rest, mode, root) = take_ssl_params(url).map_err(config_error)?;
    let mode = match mode {
        Some(m) => m.parse::<SslMode>().map_err(config_error)?,
        None => SslMode::Prefer,
    };
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
        config_error(format!(
            "not a valid PostgreSQL URL ({e}); use postgres://user:password@host:port/db"
        ))
    })?;
    config.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    let tls = MakeRustlsConnect::new(client_config(mode, root.as_deref())?);
    Ok(Connect { config, tls, mode })
}

/// The URL without `sslmode` and `sslrootcert` (which the driver does not know in full), and
/// their values.
fn take_ssl_params(url: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            mode = Some(value);
            true
        }
        "sslrootcert" => {
            root = Some(value);
            true
        }
        _ => false,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), None, None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|v| v.into_owned())
                    .map_err(|_| format!("the URL's {key} is not valid UTF-8"))
            };
            if !take(&decode(key)?, decode(value)?) {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, mode, root));
    }
    // `key=value key='quoted value'`, as libpq and tokio-postgres read it.
    let mut rest = String::new();
    let mut chars = url.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "the connection string has {key:?} without a value; write key=value pairs or a postgres:// URL"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut raw = String::new();
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            raw.push('\'');
            loop {
                match chars.next() {
                    Some('\\') => {
                        let escaped = chars
                            .next()
                            .ok_or("the connection string ends in a backslash")?;
                        raw.push('\\');
                        raw.push(escaped);
                        value.push(escaped);
                    }
                    Some('\'') => {
                        raw.push('\'');
                        break;
                    }
                    Some(c) => {
                        raw.push(c);
                        value.push(c);
                    }
                    None => return Err(format!("the value of {key} has no closing quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                raw.push(c);
                value.push(c);
            }
        }
        if !take(&key, value) {
            if !rest.is_empty() {
                rest.push(' ');
            }
            rest.push_str(&key);
            rest.push('=');
            rest.push_str(&raw);
        }
    }
    Ok((rest, mode, root))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trusted roots: the PEM file `sslrootcert`, or the Mozilla set for `system` / none.
fn roots(root: Option<&str>) -> Result<RootCertStore, AuditError> {
    let Some(path) = root.filter(|r| *r != "system") else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let bad = |why: String| config_error(format!("sslrootcert {path}: {why}"));
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(format!("cannot read: {e}")))? {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        store
            .add(cert)
            .map_err(|e| bad(format!("a certificate in it cannot be used: {e}")))?;
    }
    if store.is_empty() {
        return Err(bad(
            "holds no certificate (expected PEM `-----BEGIN CERTIFICATE-----` blocks)".into(),
        ));
    }
    Ok(store)
}

fn client_config(mode: SslMode, root: Option<&str>) -> Result<ClientConfig, AuditError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("cannot set up TLS: {e}")))?;
    let verify_ca = |root: Option<&str>| -> Result<ClientConfig, AuditError> {
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root)?), provider.clone())
                .build()
                .map_err(|e| config_error(format!("cannot set up TLS: {e}")))?;
        Ok(builder
            .clone()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
            .with_no_client_auth())
    };
    Ok(match (mode, root) {
        (SslMode::VerifyFull, _) => builder
            .clone()
            .with_root_certificates(roots(root)?)
            .with_no_client_auth(),
        (SslMode::VerifyCa, _) | (SslMode::Require, Some(_)) => verify_ca(root)?,
        _ => builder
            .clone()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider.clone())))
            .with_no_client_auth(),
    })
}

/// `prefer` and `require` without `sslrootcert`: encrypted, the certificate not checked (as
/// libpq does), but the handshake's signatures still are.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the host name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parts(url: &str) -> (String, Option<String>, Option<String>) {
        take_ssl_params(url).unwrap()
    }

    #[test]
    fn ssl_parameters_are_taken_out_of_urls_and_connection_strings() {
        assert_eq!(
            parts(
                "postgres://u:p@db:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x"
            ),
            (
                "postgres://u:p@db:5432/app?application_name=x".into(),
                Some("verify-full".into()),
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            parts("postgresql://db/app?sslmode=require"),
            ("postgresql://db/app".into(), Some("require".into()), None)
        );
        assert_eq!(
            parts("postgres://db/app"),
            ("postgres://db/app".into(), None, None)
        );
        assert_eq!(
            parts(
                "host=db user=app password='it\\'s x' sslmode = verify-ca sslrootcert='/a b.pem'"
            ),
            (
                "host=db user=app password='it\\'s x'".into(),
                Some("verify-ca".into()),
                Some("/a b.pem".into())
            )
        );
        assert!(take_ssl_params("host=db password='open").is_err());
        assert!(take_ssl_params("host").is_err());
    }

    #[test]
    fn modes_map_onto_the_driver_and_bad_ones_are_named() {
        let c = connect("postgres://u:secret-pw@db/app").unwrap();
        assert_eq!(c.mode, SslMode::Prefer, "prefer by default");
        assert_eq!(
            c.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
        for (mode, driver) in [
            ("disable", tokio_postgres::config::SslMode::Disable),
            ("require", tokio_postgres::config::SslMode::Require),
            ("verify-ca", tokio_postgres::config::SslMode::Require),
            ("verify-full", tokio_postgres::config::SslMode::Require),
        ] {
            let c = connect(&format!("postgres://db/app?sslmode={mode}")).unwrap();
            assert_eq!(c.config.get_ssl_mode(), driver, "{mode}");
        }
        for (url, says) in [
            ("postgres://u:secret-pw@db/app?sslmode=verify", "not one of"),
            ("postgres://u:secret-pw@db/app?sslmode=allow", "use prefer"),
            (
                "postgres://u:secret-pw@db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
                "sslrootcert /nonexistent/ca.pem: cannot read",
            ),
            (
                "postgres://u:secret-pw@db:port/app",
                "not a valid PostgreSQL URL",
            ),
        ] {
            let err = connect(url).err().unwrap().to_string();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("secret-pw"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let err = connect(&format!(
            "postgres://db/app?sslmode=verify-full&sslrootcert={}",
            empty.display()
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("holds no certificate"), "{err}");
    }
}

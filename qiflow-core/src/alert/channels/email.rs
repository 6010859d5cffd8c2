//! `kind = "email"`: SMTP through lettre.

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{DEFAULT_BODY, Render};
use crate::alert::model::Notification;
use crate::alert::template::oneline;
use crate::alert::{AlertChannel, SendError};
use crate::config::{ChannelConfig, Config, SmtpTls};
use crate::worker::BoxFuture;

/// Sends a plain-text mail per notification to every address in `to`, over SMTP: `tls = "none"`
/// (plain, port 25), `"starttls"` (the default, port 587) or `"tls"` (implicit TLS, port 465),
/// with `username`/`password` when set. The server's certificate must be valid for `smtp_host`
/// and chain to a built-in root or to one in `ca_file`.
///
/// The subject is the `subject` template on one line: a line break in any alert field becomes a
/// space, so no field can add a mail header; the body is encoded by lettre (quoted-printable or
/// base64 as needed). SMTP 4xx answers and connection failures are retried, 5xx answers are not.
///
/// Built with qiflow-core's `email` feature (on by default).
pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Mailboxes,
    render: Render,
    server: String,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field("to", &self.to.to_string())
            .finish_non_exhaustive()
    }
}

impl EmailChannel {
    pub(super) fn from_config(
        config: &Config,
        ch: &ChannelConfig,
        name: &str,
        base: &str,
    ) -> Result<Self, String> {
        let host = ch
            .smtp_host
            .clone()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{base}.smtp_host: is required for an email channel"))?;
        let port = ch.smtp_port.unwrap_or(match ch.tls {
            SmtpTls::None => 25,
            SmtpTls::Tls => 465,
            _ => 587,
        });
        let tls = |host: &str| -> Result<TlsParameters, String> {
            let mut params = TlsParameters::builder(host.to_owned());
            if let Some(path) = &ch.ca_file {
                params = params.add_root_certificate(
                    read_ca_file(path).map_err(|why| format!("{base}.ca_file: {why}"))?,
                );
            }
            params
                .build()
                .map_err(|e| format!("{base}.smtp_host: cannot set up TLS for {host:?}: {e}"))
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host);
        let mut builder = match ch.tls {
            SmtpTls::None => transport,
            SmtpTls::Tls => transport.tls(Tls::Wrapper(tls(&host)?)),
            _ => transport.tls(Tls::Required(tls(&host)?)),
        }
        .port(port)
        .timeout(Some(ch.timeout));
        if let Some(user) = ch.username.as_ref().filter(|u| !u.is_empty()) {
            let password = ch
                .password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let from: Mailbox = ch
            .from
            .as_deref()
            .ok_or_else(|| format!("{base}.from: is required for an email channel"))?
            .parse()
            .map_err(|e| format!("{base}.from: not a usable address ({e})"))?;
        let mut to = Mailboxes::new();
        for (i, addr) in ch.to.iter().enumerate() {
            to.push(
                addr.parse().map_err(|e| {
                    format!("{base}.to.{i}: {addr:?} is not a usable address ({e})")
                })?,
            );
        }
        if to.iter().next().is_none() {
            return Err(format!("{base}.to: needs at least one recipient address"));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            to,
            render: Render::new(config, ch, name, base, DEFAULT_BODY)?,
            server: format!("{host}:{port}"),
        })
    }

    /// The message for `n`.
    pub(crate) fn message(&self, n: &Notification) -> Result<Message, SendError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(oneline(&self.render.subject(n)))
            .header(ContentType::TEXT_PLAIN);
        for to in self.to.iter() {
            builder = builder.to(to.clone());
        }
        builder
            .body(
                self.render
                    .body(n, "\n\n----------------------------------------\n\n"),
            )
            .map_err(|e| SendError::permanent(format!("email: cannot build the message: {e}")))
    }
}

/// Reads `ca_file`: the root certificates (PEM) to trust besides the built-in ones. The error
/// says what is wrong with the file; the caller adds the key path.
pub(crate) fn read_ca_file(path: &std::path::Path) -> Result<Certificate, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA's certificate in PEM form",
            path.display()
        ));
    }
    Certificate::from_pem(&pem).map_err(|e| {
        format!(
            "{} is not a readable PEM certificate file ({e})",
            path.display()
        )
    })
}

impl AlertChannel for EmailChannel {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let message = self.message(n)?;
            match self.transport.send(message).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let text = format!("email: {} failed: {e}", self.server);
                    Err(if e.is_permanent() {
                        SendError::permanent(text)
                    } else {
                        SendError::retryable(text)
                    })
                }
            }
        })
    }
}

//! Sends one outbox message: an HTTP POST (Slack, webhook) with its idempotency key and,
//! for webhooks, the HMAC signature; or an email over SMTP (lettre). Blocking: it runs on
//! the outbox worker's thread.

use std::time::Duration;

use super::{ActionsConfig, Channel, SmtpConfig};

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// One message as the outbox stores it.
#[derive(Debug, Clone)]
pub struct Message {
    pub channel: String,
    /// `slack`, `webhook` or `email`.
    pub kind: String,
    /// URL or email address.
    pub target: String,
    pub subject: Option<String>,
    pub body: String,
    pub idempotency_key: String,
}

/// What an attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Try again later (network error, 5xx, 408, 429, a transient SMTP error).
    Retry(String),
    /// Trying again cannot help (4xx, a permanent SMTP error, a channel no longer configured).
    Fatal(String),
}

pub fn send(message: &Message, config: &ActionsConfig, smtp_password: Option<&str>) -> Outcome {
    match message.kind.as_str() {
        "slack" | "webhook" => {
            let secret = match config.channels.get(&message.channel) {
                Some(Channel::Webhook { secret, .. }) => secret.clone(),
                Some(Channel::Slack { .. }) => None,
                _ if message.kind == "slack" => None,
                _ => {
                    return Outcome::Fatal(format!(
                        "channel {:?} is no longer a webhook in the config",
                        message.channel
                    ))
                }
            };
            post(message, secret.as_deref())
        }
        "email" => match &config.smtp {
            Some(smtp) => email(message, smtp, smtp_password),
            None => Outcome::Fatal("no [actions.smtp] configured".into()),
        },
        other => Outcome::Fatal(format!("unknown message kind {other:?}")),
    }
}

/// A URL's scheme and host, without its path: what may be shown or logged of a webhook
/// (Slack's URLs carry their token in the path).
pub fn origin(url: &str) -> String {
    url.split('/').take(3).collect::<Vec<_>>().join("/")
}

fn post(message: &Message, secret: Option<&str>) -> Outcome {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(ATTEMPT_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent
        .post(&message.target)
        .header("content-type", "application/json")
        .header("idempotency-key", &message.idempotency_key)
        .header(
            "user-agent",
            concat!("bellwether/", env!("CARGO_PKG_VERSION")),
        );
    let signature;
    if let Some(secret) = secret {
        signature = super::signature(
            secret,
            chrono::Utc::now().timestamp(),
            message.body.as_bytes(),
        );
        request = request.header("x-bellwether-signature", &signature);
    }
    match request.send(message.body.as_bytes()) {
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200..=299 => Outcome::Sent,
                408 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
                _ => Outcome::Fatal(format!("HTTP {status}")),
            }
        }
        // The URL is a secret (Slack's carries its token): the reason, which is logged and
        // stored, names its scheme and host only.
        Err(error) => {
            let origin = origin(&message.target);
            Outcome::Retry(error.to_string().replace(&message.target, &origin))
        }
    }
}

fn email(message: &Message, smtp: &SmtpConfig, password: Option<&str>) -> Outcome {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{SmtpTransport, Transport};
    let built = (|| -> Result<lettre::Message, String> {
        lettre::Message::builder()
            .from(smtp.from.parse().map_err(|e| format!("from: {e}"))?)
            .to(message
                .target
                .parse()
                .map_err(|e| format!("to {:?}: {e}", message.target))?)
            .subject(message.subject.clone().unwrap_or_default())
            // The idempotency key as Message-ID lets a mail system drop a resent copy.
            .message_id(Some(format!(
                "<{}@bellwether>",
                message.idempotency_key.replace(['<', '>', '@', ' '], "-")
            )))
            .header(ContentType::TEXT_PLAIN)
            .body(message.body.clone())
            .map_err(|e| e.to_string())
    })();
    let mail = match built {
        Ok(mail) => mail,
        Err(reason) => return Outcome::Fatal(reason),
    };
    let builder = match smtp.tls.as_str() {
        "tls" => SmtpTransport::relay(&smtp.host),
        "starttls" => SmtpTransport::starttls_relay(&smtp.host),
        _ => Ok(SmtpTransport::builder_dangerous(&smtp.host)),
    };
    let mut builder = match builder {
        Ok(b) => b.port(smtp.port).timeout(Some(ATTEMPT_TIMEOUT)),
        Err(e) => return Outcome::Fatal(format!("smtp: {e}")),
    };
    if let (Some(user), Some(password)) = (&smtp.username, password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.to_string()));
    }
    match builder.build().send(&mail) {
        Ok(_) => Outcome::Sent,
        Err(e) if e.is_permanent() => Outcome::Fatal(format!("smtp: {e}")),
        Err(e) => Outcome::Retry(format!("smtp: {e}")),
    }
}

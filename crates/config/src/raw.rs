//! The configuration file as written: every field optional, every value in its TOML type.
//! [`crate::Config::from_raw`] turns this into the checked [`crate::Config`].

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RawConfig {
    /// `[daemon]`
    pub daemon: Option<RawDaemon>,
    /// `[[destination]]`
    #[serde(default)]
    pub destination: Vec<RawDestination>,
    /// `[[account]]`
    #[serde(default)]
    pub account: Vec<RawAccount>,
    /// `[notify]`
    pub notify: Option<RawNotify>,
}

/// `[notify]`: telling the user when an account breaks and recovers.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RawNotify {
    /// Notices into the account's own destination (default true).
    pub in_destination: Option<bool>,
    /// URL that gets a JSON POST per notice.
    pub webhook: Option<String>,
    /// URL called (GET) after every successful run: a dead man's switch.
    pub ping_url: Option<String>,
    /// Failed runs in a row before a notice (default 3).
    pub notify_after: Option<u32>,
}

/// `[daemon]`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RawDaemon {
    /// Directory of the SQLite state.
    pub state_dir: Option<String>,
    /// Floor for every account's interval.
    pub min_interval: Option<String>,
    /// Timeout for DNS + TCP connect + TLS handshake.
    pub connect_timeout: Option<String>,
    /// Timeout for each network read or command round trip.
    pub io_timeout: Option<String>,
    /// Allows `min-interval` below 10 minutes.
    pub allow_short_intervals: Option<bool>,
    /// Connections to one server host at once (a safety limit over all accounts).
    pub max_connections_per_host: Option<u32>,
    /// Connections of one account at once (its polls and pushed folders).
    pub max_connections_per_account: Option<u32>,
    /// Address for Prometheus metrics and /healthz.
    pub metrics_listen: Option<String>,
    /// Largest message fetched: bytes, or e.g. "150MB".
    pub max_message_size: Option<toml_size::Size>,
}

/// A size in bytes, written as a number or as text with a unit.
pub mod toml_size {
    /// `150000000`, `"150MB"`, `"2 MiB"`, `"512kB"`.
    #[derive(Debug, Clone, serde::Deserialize)]
    #[serde(untagged)]
    pub enum Size {
        /// Bytes.
        Bytes(u64),
        /// Text with a unit.
        Text(String),
    }

    impl Size {
        /// The number of bytes, or why the text is not a size.
        ///
        /// # Errors
        /// When the text is not a number with a known unit.
        pub fn bytes(&self) -> Result<u64, String> {
            match self {
                Self::Bytes(n) => Ok(*n),
                Self::Text(t) => {
                    let t = t.trim();
                    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                    let (num, unit) = t.split_at(split);
                    let n: u64 = num
                        .parse()
                        .map_err(|_| format!("{t:?} is not a size; write e.g. \"150MB\""))?;
                    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                        "" | "b" => 1,
                        "kb" => 1_000,
                        "kib" | "k" => 1 << 10,
                        "mb" => 1_000_000,
                        "mib" | "m" => 1 << 20,
                        "gb" => 1_000_000_000,
                        "gib" | "g" => 1 << 30,
                        other => {
                            return Err(format!(
                                "{other:?} is not a unit; use B, kB, MB, GB, KiB, MiB or GiB"
                            ));
                        }
                    };
                    n.checked_mul(factor)
                        .ok_or_else(|| format!("{t:?} is too large"))
                }
            }
        }
    }
}

/// `[[destination]]`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RawDestination {
    /// Name that accounts refer to.
    pub name: Option<String>,
    /// `smtp`
    pub kind: Option<String>,
    /// Server host.
    pub host: Option<String>,
    /// Server port.
    pub port: Option<u16>,
    /// `implicit`, `starttls` or `none`.
    pub tls: Option<String>,
    /// PEM file of a private CA to trust.
    pub tls_ca_file: Option<String>,
    /// SMTP AUTH user name.
    pub username: Option<String>,
    /// File holding the SMTP password.
    pub password_file: Option<String>,
    /// Environment variable holding the SMTP password.
    pub password_env: Option<String>,
    /// Envelope recipients.
    pub envelope_to: Option<Vec<String>>,
    /// Fixed envelope sender.
    pub envelope_from: Option<String>,
    /// EHLO name.
    pub hello_name: Option<String>,
    /// SMTP AUTH with OAuth2, or the Gmail API's sign-in:
    /// `{ method = "oauth2", provider = ..., client-id = ... }`.
    pub auth: Option<RawAuth>,
    /// Gmail: `import` or `insert`.
    pub mode: Option<String>,
    /// Gmail: labels every message gets (default `["INBOX", "UNREAD"]`).
    pub labels: Option<Vec<String>>,
    /// Gmail: the API's base URL.
    pub api_url: Option<String>,
    /// Gmail: `dateHeader` or `receivedTime`.
    pub internal_date_source: Option<String>,
    /// Gmail import: never send to spam.
    pub never_mark_spam: Option<bool>,
    /// Gmail import: process calendar invitations.
    pub process_for_calendar: Option<bool>,
    /// Gmail: look interrupted imports up before importing again.
    pub exactly_once: Option<bool>,
    /// Gmail: requests per second.
    pub max_rate: Option<f64>,
    /// Gmail: deliveries in flight at once.
    pub concurrency: Option<u32>,
}

/// `[[account]]`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RawAccount {
    /// Unique name.
    pub name: Option<String>,
    /// Preset name.
    pub provider: Option<String>,
    /// `imap`
    pub protocol: Option<String>,
    /// Server host (overrides the preset).
    pub host: Option<String>,
    /// Server port (overrides the preset).
    pub port: Option<u16>,
    /// `implicit`, `starttls` or `none`.
    pub tls: Option<String>,
    /// PEM file of a private CA to trust.
    pub tls_ca_file: Option<String>,
    /// Login name.
    pub username: Option<String>,
    /// How to log in.
    pub auth: Option<RawAuth>,
    /// Folders to fetch.
    pub folders: Option<Vec<String>>,
    /// How often to fetch.
    pub interval: Option<String>,
    /// Name of a `[[destination]]`.
    pub destination: Option<String>,
    /// `keep` or `delete`.
    pub after_delivery: Option<String>,
    /// POP3: send RETR commands together when the server offers PIPELINING.
    pub pipelining: Option<bool>,
    /// Gmail destination: extra labels for this account's messages.
    pub labels: Option<Vec<String>>,
    /// Folders whose messages are delivered as spam (Gmail: `SPAM` instead of `INBOX`).
    pub spam_folders: Option<Vec<String>>,
    /// `false` keeps the account configured but idle.
    pub enabled: Option<bool>,
    /// `all`, `new-only` or `since:YYYY-MM-DD`.
    pub first_run: Option<String>,
    /// `idle` or `off`.
    pub push: Option<String>,
    /// Folders watched with IDLE.
    pub push_folders: Option<Vec<String>>,
    /// How often an IDLE is renewed.
    pub idle_refresh: Option<String>,
}

/// `auth = { ... }` of an account.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RawAuth {
    /// `password`
    pub method: Option<String>,
    /// File holding the password.
    pub password_file: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding an OAuth2 access token kept fresh by something else (`method = "oauth2"`).
    pub access_token_file: Option<String>,
    /// OAuth2: `microsoft`, `google` or `custom`.
    pub provider: Option<String>,
    /// OAuth2: the application (client) id of the user's app registration.
    pub client_id: Option<String>,
    /// OAuth2: file holding the client secret (Google desktop apps).
    pub client_secret_file: Option<String>,
    /// OAuth2: environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// OAuth2, Microsoft: `consumers` (default), `common`, `organizations` or a tenant id.
    pub tenant: Option<String>,
    /// OAuth2: authorization endpoint (overrides the provider's).
    pub authorize_url: Option<String>,
    /// OAuth2: token endpoint (overrides the provider's).
    pub token_url: Option<String>,
    /// OAuth2: device authorization endpoint (overrides the provider's).
    pub device_url: Option<String>,
    /// OAuth2: scopes to request (replace the provider's defaults).
    pub scopes: Option<Vec<String>>,
    /// OAuth2: how `mailferry auth` signs in: `device` or `browser`.
    pub flow: Option<String>,
    /// OAuth2: the redirect URI registered with the app (browser flow), when it is not
    /// `http://127.0.0.1:PORT/`: `http://localhost` (the port is chosen at sign-in), or
    /// any other (then the URL the browser ends on is pasted).
    pub redirect_uri: Option<String>,
}

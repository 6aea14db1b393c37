//! Provider presets: the hosts and ports users would otherwise look up.

/// Known settings of one mail provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The preset's name as written in `provider = "..."`.
    pub name: &'static str,
    /// IMAP host, implicit TLS on port 993.
    pub imap_host: &'static str,
    /// POP3 host, implicit TLS on port 995.
    pub pop3_host: &'static str,
    /// Whether the provider refuses password (and app-password) logins.
    pub password_login_refused: bool,
}

const PRESETS: &[Preset] = &[
    Preset {
        name: "outlook",
        imap_host: "outlook.office365.com",
        pop3_host: "outlook.office365.com",
        password_login_refused: true,
    },
    Preset {
        name: "gmail",
        imap_host: "imap.gmail.com",
        pop3_host: "pop.gmail.com",
        password_login_refused: false,
    },
    Preset {
        name: "gmx",
        imap_host: "imap.gmx.net",
        pop3_host: "pop.gmx.net",
        password_login_refused: false,
    },
    Preset {
        name: "yahoo",
        imap_host: "imap.mail.yahoo.com",
        pop3_host: "pop.mail.yahoo.com",
        password_login_refused: false,
    },
    Preset {
        name: "icloud",
        imap_host: "imap.mail.me.com",
        pop3_host: "",
        password_login_refused: false,
    },
];

/// The preset called `name`, if there is one.
#[must_use]
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The names of all presets, for error messages.
pub(crate) fn names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_cover_the_common_providers() {
        for name in ["outlook", "gmail", "gmx", "yahoo", "icloud"] {
            assert!(preset(name).is_some(), "{name}");
        }
        assert_eq!(
            preset("outlook").map(|p| p.imap_host),
            Some("outlook.office365.com")
        );
        assert!(preset("aol").is_none());
    }
}

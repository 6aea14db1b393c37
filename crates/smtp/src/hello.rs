//! The name mailferry gives in `EHLO`.

use std::net::IpAddr;

use lettre::transport::smtp::extension::ClientId;

/// The name given in `EHLO`: `hello-name` when set; else the kernel's host name when it is
/// a full domain name (asked with uname(2): `/proc/sys/kernel/hostname` is hidden under the
/// unit's `ProcSubset=pid`); else, as RFC 5321 4.1.4 asks of a host without a meaningful
/// name, the address literal of this end of the connection (Postfix's
/// `reject_non_fqdn_helo_hostname` refuses `localhost` and other bare names, never a
/// literal).
pub(crate) fn hello_name(
    configured: Option<&str>,
    kernel: &str,
    local: Option<IpAddr>,
) -> ClientId {
    if let Some(name) = configured {
        return ClientId::Domain(name.to_owned());
    }
    let kernel = kernel.trim().trim_end_matches('.');
    let full = kernel.contains('.')
        && kernel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    match local {
        _ if full => ClientId::Domain(kernel.to_owned()),
        Some(IpAddr::V4(a)) => ClientId::Ipv4(a),
        Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => ClientId::Ipv4(v4),
            None => ClientId::Ipv6(a),
        },
        None if kernel.is_empty() => ClientId::Domain("localhost".to_owned()),
        None => ClientId::Domain(kernel.to_owned()),
    }
}

/// The kernel's host name (uname(2)'s nodename).
pub(crate) fn kernel_hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn a_full_kernel_name_is_given_a_bare_one_becomes_the_address_literal() {
        let local = Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 5)));
        let name = |configured, kernel| hello_name(configured, kernel, local).to_string();
        assert_eq!(name(None, "ferry.home.example\n"), "ferry.home.example");
        assert_eq!(name(None, "ferry.home.example."), "ferry.home.example");
        // A bare name (a Raspberry Pi's default) or localhost: RFC 5321's address literal.
        assert_eq!(name(None, "raspberrypi"), "[192.168.1.5]");
        assert_eq!(name(None, "localhost"), "[192.168.1.5]");
        assert_eq!(name(None, ""), "[192.168.1.5]");
        assert_eq!(name(None, "bad_name.example"), "[192.168.1.5]");
        // hello-name wins.
        assert_eq!(
            name(Some("mx.example.org"), "raspberrypi"),
            "mx.example.org"
        );
        let v6 = hello_name(None, "box", Some(IpAddr::V6(Ipv6Addr::LOCALHOST))).to_string();
        assert_eq!(v6, "[IPv6:::1]");
        let mapped = Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped();
        assert_eq!(
            hello_name(None, "box", Some(IpAddr::V6(mapped))).to_string(),
            "[10.0.0.2]"
        );
    }

    #[test]
    fn the_kernel_is_asked_not_proc() {
        // uname(2) answers whatever /proc shows; the unit's ProcSubset=pid hides /proc/sys,
        // which the systemd test covers.
        let kernel = kernel_hostname();
        assert!(!kernel.is_empty());
        if let Ok(proc) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert_eq!(kernel, proc.trim());
        }
    }
}

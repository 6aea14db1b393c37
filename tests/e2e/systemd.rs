//! The README's install, done for real: the Debian package installed with `dpkg -i` in a
//! throwaway machine whose PID 1 is a real systemd, the configuration edited, the unit
//! enabled and started, a message delivered from Dovecot to the SMTP receiver, a reload
//! that adds an account, a reload of a broken file that fails, the admin commands as the
//! service user, a clean stop, the security score, a configuration error that does not
//! loop, and a purge that leaves nothing behind.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailferry_testkit::{Machine, PASSWORD, Postfix, USER, fixtures};

use crate::util::{Bench, RCPT};

/// The package `scripts/package` built (scripts/test builds it before the tests), or the
/// one `MAILFERRY_TEST_DEB` names.
fn package() -> PathBuf {
    if let Some(p) = std::env::var_os("MAILFERRY_TEST_DEB") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debian");
    let mut debs: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mailferry_") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no mailferry_*.deb in {}: build it with scripts/package (scripts/test does)",
            dir.display()
        )
    })
}

/// The configuration a user writes into /etc/mailferry/mailferry.toml: one IMAP account
/// of the test Dovecot, delivering to the test SMTP receiver, and one delivering to a
/// Postfix that refuses a bare EHLO name.
fn config(b: &Bench, postfix: &Postfix) -> String {
    format!(
        r#"[daemon]
state-dir = "/var/lib/mailferry"

[[destination]]
name = "home"
kind = "smtp"
host = "localhost"
port = {smtp}
tls = "starttls"
tls-ca-file = "/etc/mailferry/test-ca.pem"
envelope-to = ["{RCPT}"]

[[account]]
name = "src"
host = "127.0.0.1"
port = {imaps}
tls = "implicit"
tls-ca-file = "/etc/mailferry/test-ca.pem"
username = "{USER}"
auth = {{ method = "password", password-file = "/etc/mailferry/src.pass" }}
destination = "home"

[[destination]]
name = "postfix"
kind = "smtp"
host = "localhost"
port = {postfix}
tls = "starttls"
tls-ca-file = "/etc/mailferry/postfix-ca.pem"
envelope-to = ["{RCPT}"]

[[account]]
name = "helo"
host = "127.0.0.1"
port = {imaps}
tls = "implicit"
tls-ca-file = "/etc/mailferry/test-ca.pem"
username = "{USER}"
auth = {{ method = "password", password-file = "/etc/mailferry/src.pass" }}
destination = "postfix"
"#,
        smtp = b.smtp.port,
        imaps = b.dovecot.imaps_port,
        postfix = postfix.port,
    )
}

/// Boots the machine, or fails saying why. (The kernels of the test machines allow it;
/// where one does not, this is where it shows.)
fn boot() -> Machine {
    Machine::boot().unwrap_or_else(|e| panic!("cannot boot a systemd machine here: {e}"))
}

#[test]
fn the_package_installs_starts_reloads_stops_and_purges_under_a_real_systemd() {
    let deb = package();
    let b = Bench::start();
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    // A home server's Postfix that refuses bare EHLO names (reported at RCPT, its default).
    let postfix = Postfix::start(
        &[RCPT],
        &[
            "smtpd_helo_required = yes",
            "smtpd_helo_restrictions = reject_non_fqdn_helo_hostname",
        ],
    );
    let m = boot();
    let share = m.share.path().display().to_string();
    std::fs::copy(&deb, m.share.path().join("mailferry.deb")).expect("copy the package");
    std::fs::copy(&b.dovecot.pki.ca_pem, m.share.path().join("test-ca.pem")).expect("copy CA");
    std::fs::copy(&postfix.pki.ca_pem, m.share.path().join("postfix-ca.pem")).expect("copy CA");
    std::fs::write(m.share.path().join("mailferry.toml"), config(&b, &postfix)).expect("config");

    // 1. Install the package.
    m.ok(&format!("dpkg -i {share}/mailferry.deb"));
    let version = m.ok("mailferry --version");
    assert!(version.starts_with("mailferry "), "{version}");
    assert_eq!(
        m.ok("getent passwd mailferry | cut -d: -f6"),
        "/var/lib/mailferry\n"
    );
    assert_eq!(
        m.ok("stat -c '%U:%G %a' /etc/mailferry /etc/mailferry/mailferry.toml /var/lib/mailferry"),
        "root:mailferry 750\nroot:mailferry 640\nmailferry:mailferry 700\n"
    );
    let man = m.ok("man -w mailferry && zcat $(man -w mailferry) | grep -c '^.TH mailferry'");
    assert!(
        man.starts_with("/usr/share/man/man1/mailferry.1.gz\n"),
        "{man}"
    );
    m.ok("test -s /usr/share/bash-completion/completions/mailferry");
    m.ok("test -s /usr/share/doc/mailferry/README.md");
    m.ok("systemctl cat mailferry.service | grep -q '^User=mailferry'");
    let verify = m.sh("systemd-analyze verify mailferry.service");
    assert!(
        verify.code == 0 && !verify.stderr.contains("mailferry.service:"),
        "systemd-analyze verify on the installed unit: {verify:?}"
    );
    assert_eq!(
        m.sh("systemctl is-enabled mailferry").stdout.trim(),
        "disabled",
        "the package must not start an unconfigured service"
    );

    // 1b. `mailferry init` run as root writes a file the service can read, as the
    // package's own files are.
    m.ok("mailferry init --config /etc/mailferry/init.toml --source gmx --address me@gmx.net --dest smtp:mail.home.example --to me@home.example");
    assert_eq!(
        m.ok("stat -c '%U:%G %a' /etc/mailferry/init.toml"),
        "root:mailferry 640\n"
    );
    m.ok("runuser -u mailferry -- test -r /etc/mailferry/init.toml && rm /etc/mailferry/init.toml");

    // 2. Edit the configuration and put the password in a file only the service may read,
    // as the README says.
    m.ok(&format!(
        "cat {share}/mailferry.toml > /etc/mailferry/mailferry.toml \
         && install -m 0644 {share}/test-ca.pem /etc/mailferry/test-ca.pem \
         && install -m 0644 {share}/postfix-ca.pem /etc/mailferry/postfix-ca.pem \
         && printf '%s\\n' '{PASSWORD}' | install -m 0640 -o root -g mailferry /dev/stdin /etc/mailferry/src.pass"
    ));
    assert_eq!(
        m.ok("stat -c '%U:%G %a' /etc/mailferry/mailferry.toml /etc/mailferry/src.pass"),
        "root:mailferry 640\nroot:mailferry 640\n"
    );

    // 3. Enable and start it: READY=1 (active), and the message arrives. The machine has
    // a full domain name; the unit's ProcSubset=pid hides /proc/sys/kernel/hostname, so
    // the EHLO name must come from the kernel itself (uname), or Postfix refuses it.
    m.ok("hostname ferry.home.example");
    m.ok("systemctl enable --now mailferry");
    m.wait_until(
        "the service to be active",
        Duration::from_secs(30),
        "systemctl is-active mailferry",
    );
    let wait = std::time::Instant::now() + Duration::from_secs(60);
    while b.smtp.messages().is_empty() {
        assert!(
            std::time::Instant::now() < wait,
            "no message arrived: {}",
            m.sh("journalctl --no-pager -u mailferry").stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(b.smtp.messages()[0].raw, fixtures::simple(1));
    let at_postfix = postfix.wait_delivered(RCPT, 1);
    let received = at_postfix
        .first()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|| {
            panic!(
                "nothing reached Postfix: {}\n{}",
                m.sh("journalctl --no-pager -u mailferry").stdout,
                postfix.log()
            )
        });
    assert!(
        received.contains("Received: from ferry.home.example ("),
        "Postfix did not record the EHLO name ferry.home.example: {received}\n{}",
        postfix.log()
    );
    m.wait_until(
        "a STATUS line after the run",
        Duration::from_secs(20),
        "systemctl show -p StatusText --value mailferry | grep -q .",
    );

    // 4. The admin commands, as the service user, beside the running service.
    let status = m.ok("runuser -u mailferry -- mailferry status");
    assert!(status.starts_with("src: ok"), "{status}");
    let check = m.ok("runuser -u mailferry -- mailferry check src");
    assert!(check.contains("ok    login"), "{check}");
    // The README's command after a fix: the service runs the account now, and run-now
    // prints that run.
    let now = m.ok("runuser -u mailferry -- mailferry run-now src");
    assert!(now.contains("src: ran: 0 delivered"), "{now}");
    // As root, a command that would write into the service's state refuses and says how.
    let as_root = m.sh("mailferry status");
    assert_eq!(as_root.code, 1, "{as_root:?}");
    assert!(
        as_root
            .stderr
            .contains("belongs to mailferry, not to the user running this command"),
        "{as_root:?}"
    );
    assert_eq!(
        m.ok("find /var/lib/mailferry ! -user mailferry | wc -l")
            .trim(),
        "0",
        "every file in the state directory stays the service's"
    );

    // 5. Reload after adding an account: the new account runs without a restart.
    let main_pid = m.ok("systemctl show -p MainPID --value mailferry");
    m.ok(&format!(
        "cat >> /etc/mailferry/mailferry.toml <<'END'

[[account]]
name = \"second\"
protocol = \"pop3\"
host = \"127.0.0.1\"
port = {pop3s}
tls = \"implicit\"
tls-ca-file = \"/etc/mailferry/test-ca.pem\"
username = \"{USER}\"
auth = {{ method = \"password\", password-file = \"/etc/mailferry/src.pass\" }}
destination = \"home\"
END
systemctl reload mailferry",
        pop3s = b.dovecot.pop3s_port
    ));
    m.wait_until(
        "the added account's first run",
        Duration::from_secs(30),
        "runuser -u mailferry -- mailferry status | grep -q '^second: ok'",
    );
    assert_eq!(
        b.smtp.messages().len(),
        2,
        "the POP3 account delivers the same mail anew"
    );
    assert_eq!(
        m.ok("systemctl show -p MainPID --value mailferry"),
        main_pid
    );

    // 5b. Sign in an OAuth2 account as the service's user, beside the running service
    // (device code at the fake IdP): the token lands in the service's state, owned by it.
    let idp = &b.dovecot.idp;
    m.ok(&format!(
        "cat >> /etc/mailferry/mailferry.toml <<'END'

[[account]]
name = \"oa\"
host = \"127.0.0.1\"
port = {imaps}
tls = \"implicit\"
tls-ca-file = \"/etc/mailferry/test-ca.pem\"
username = \"{USER}\"
auth = {{ method = \"oauth2\", provider = \"custom\", client-id = \"mailferry-test-client\", token-url = \"{token}\", device-url = \"{device}\", authorize-url = \"{authorize}\", scopes = [\"imap\", \"offline_access\", \"openid\", \"email\"] }}
destination = \"home\"
END
systemctl reload mailferry",
        imaps = b.dovecot.imaps_port,
        token = idp.url("/token"),
        device = idp.url("/devicecode"),
        authorize = idp.url("/authorize"),
    ));
    let mut auth = m.spawn("runuser -u mailferry -- mailferry auth oa");
    let mut out = BufReader::new(auth.stdout.take().expect("stdout"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).expect("read auth's output");
        seen.push_str(&line);
        assert!(n > 0, "mailferry auth ended early: {seen}");
        if let Some(rest) = line.split("enter the code ").nth(1) {
            idp.approve(rest.trim(), USER);
            break;
        }
    }
    out.read_to_string(&mut seen).expect("read auth's output");
    let status = auth.wait().expect("wait for auth");
    assert!(status.success(), "{seen}");
    assert!(seen.contains(&format!("Signed in oa as {USER}.")), "{seen}");
    // The service ran the account at once and `auth` waited for it: whether or not the
    // service had already tried it unsigned (parked), it is fine now.
    assert!(seen.contains("oa: ran: "), "{seen}");
    let status = m.ok("runuser -u mailferry -- mailferry status");
    assert!(status.contains(&format!("signed in as {USER}")), "{status}");
    assert!(status.contains("\noa: ok"), "{status}");
    assert_eq!(
        m.ok("find /var/lib/mailferry ! -user mailferry | wc -l")
            .trim(),
        "0",
        "the sign-in left a file the service cannot use"
    );

    // 6. A reload of a broken file fails, and the service keeps running.
    m.ok("cp /etc/mailferry/mailferry.toml /root/good.toml && echo 'interval = ' >> /etc/mailferry/mailferry.toml");
    let reload = m.sh("systemctl reload mailferry");
    assert_ne!(
        reload.code, 0,
        "a broken configuration must fail the reload: {reload:?}"
    );
    m.ok("systemctl is-active mailferry");
    m.ok("cat /root/good.toml > /etc/mailferry/mailferry.toml");

    // 6b. Secrets handed over by systemd (LoadCredential=), as the README shows: the
    // password file becomes root-only; the service reads it through the credential;
    // `status` reads no secret; `check` runs in the unit's context with systemd-run.
    m.ok(
        "mkdir -p /etc/systemd/system/mailferry.service.d \
         && printf '[Service]\\nLoadCredential=src.pass:/etc/mailferry/src.pass\\n' > /etc/systemd/system/mailferry.service.d/credentials.conf \
         && chown root:root /etc/mailferry/src.pass && chmod 0600 /etc/mailferry/src.pass \
         && sed -i 's|/etc/mailferry/src.pass|${CREDENTIALS_DIRECTORY}/src.pass|' /etc/mailferry/mailferry.toml \
         && systemctl daemon-reload && systemctl restart mailferry",
    );
    m.wait_until(
        "the service to be active with credentials",
        Duration::from_secs(30),
        "systemctl is-active mailferry",
    );
    let status = m.sh("runuser -u mailferry -- mailferry status");
    assert!(status.stdout.starts_with("src: ok"), "{status:?}");
    let check = m.sh("runuser -u mailferry -- mailferry check src");
    assert_eq!(check.code, 2, "{check:?}");
    assert!(check.stderr.contains("systemd-run"), "{check:?}");
    let check = m.ok(
        "systemd-run --pipe --wait --collect --quiet -p User=mailferry -p StateDirectory=mailferry \
         -p LoadCredential=src.pass:/etc/mailferry/src.pass mailferry check src",
    );
    assert!(check.contains("ok    login"), "{check}");

    // 7. The hardening holds under the static user.
    let security = m.ok("systemd-analyze security --no-pager mailferry.service | tail -n 1");
    let score: f64 = security
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no score in {security:?}"));
    assert!(score <= 2.0, "exposure {score} > 2.0: {security}");

    // 8. A clean stop.
    m.ok("systemctl stop mailferry");
    assert_eq!(
        m.ok("systemctl show -p Result --value mailferry && systemctl show -p ExecMainStatus --value mailferry"),
        "success\n0\n"
    );
    let journal = m.ok("journalctl --no-pager -u mailferry");
    assert!(journal.contains("mailferry stopped"), "{journal}");

    // 9. A configuration error fails the start once, without a restart loop.
    m.ok("echo 'this is = = not toml' >> /etc/mailferry/mailferry.toml");
    let start = m.sh("systemctl start mailferry");
    assert_ne!(start.code, 0, "{start:?}");
    std::thread::sleep(Duration::from_secs(1));
    let mut state: Vec<_> = m
        .ok("systemctl show -p ActiveState,SubState,NRestarts,ExecMainStatus mailferry")
        .lines()
        .map(str::to_owned)
        .collect();
    state.sort();
    assert_eq!(
        state,
        [
            "ActiveState=failed",
            "ExecMainStatus=2",
            "NRestarts=0",
            "SubState=failed"
        ]
    );
    let journal = m.ok("journalctl --no-pager -u mailferry");
    assert!(journal.contains("not valid TOML"), "{journal}");

    // 10. Purge: no binary, unit, configuration or state left.
    m.ok("systemctl enable mailferry && dpkg --purge mailferry");
    let left = m.sh(
        "ls -d /usr/bin/mailferry /usr/lib/systemd/system/mailferry.service /etc/mailferry \
         /var/lib/mailferry /etc/systemd/system/multi-user.target.wants/mailferry.service 2>/dev/null",
    );
    assert_eq!(left.stdout, "", "left behind after purge");
}

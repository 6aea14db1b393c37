//! The status page at `/`, looked at as a person would: in a real headless browser
//! (Debian's chromium, installed by scripts/test), for a service with an ok, a failing, a
//! parked, a pushed and a disabled account and a refused message whose Message-ID and
//! reason carry markup.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_testkit::fixtures;

use crate::util::{Bench, sqlite};

/// Headless chromium, started as the machine's setup notes say (no sandbox as root, no
/// background connections), each run with a fresh profile.
fn chromium(args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().expect("profile");
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium (scripts/test installs it)")
}

/// The text a person sees: the DOM chromium built, without tags, entities decoded.
fn visible_text(dom: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    let mut skip = None::<&str>;
    let lower = dom.to_ascii_lowercase();
    let mut i = 0;
    while i < dom.len() {
        if let Some(end) = skip {
            match lower[i..].find(end) {
                Some(at) => {
                    i += at + end.len();
                    skip = None;
                    continue;
                }
                None => break,
            }
        }
        let c = dom[i..].chars().next().unwrap_or(' ');
        if c == '<' {
            if lower[i..].starts_with("<style") {
                skip = Some("</style>");
                continue;
            }
            in_tag = true;
        } else if c == '>' && in_tag {
            in_tag = false;
            out.push(' ');
        } else if !in_tag {
            out.push(c);
        }
        i += c.len_utf8();
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_status_page_shows_every_state_in_a_real_browser_and_never_runs_a_messages_markup() {
    let b = Bench::start();
    std::fs::write(b.dir.path().join("wrong.pass"), "not the password\n").expect("write");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let accounts = [
        b.account("okay", b.dovecot.imaps_port, "implicit", "src.pass"),
        // Nothing listens on a port just closed: the connection is refused, every run.
        b.account("broken", closed, "implicit", "src.pass"),
        b.account("locked", b.dovecot.imaps_port, "implicit", "wrong.pass"),
        b.account("pushed", b.dovecot.imaps_port, "implicit", "src.pass") + "push = \"idle\"\n",
        b.account("off", b.dovecot.imaps_port, "implicit", "src.pass") + "enabled = false\n",
    ];
    b.write_config(&accounts);
    let config = std::fs::read_to_string(b.config_path()).expect("read");
    let config = config.replace(
        "[daemon]\n",
        &format!(
            "[notify]\nin-destination = false\n[daemon]\nmin-interval = \"1s\"\nallow-short-intervals = true\nmetrics-listen = \"127.0.0.1:{port}\"\n"
        ),
    );
    std::fs::write(b.config_path(), config).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["run", "--config"])
        .arg(b.config_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = b.run(&["status"]);
        let status = format!("{}{}", run.stdout, run.stderr);
        if status.contains("okay: ok")
            && status.contains("broken: backing off")
            && status.contains("locked: parked: needs auth")
            && status.contains("push INBOX: connected")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the states did not all show: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A refusal with markup in its Message-ID and reason, as a hostile sender and server
    // could make them.
    let db = b.state_dir().join("mailferry.db");
    sqlite(
        &db,
        "INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, content_hash, size, state, attempts, destination, first_seen, updated_at, last_error) \
         VALUES ('okay', 'INBOX', 1, 99, '', 'evil\"><script>document.body.setAttribute(''data-owned'',''yes'')</script>@x.example', 'blake3:ab', 10, 'refused', 1, 'home', 1, strftime('%s','now'), \
         '554 5.7.1 <img src=x onerror=\"document.title=''owned''\"> rejected')",
    );

    // The headers, from the service itself.
    let raw = mailferry_testkit::http_get_raw(&url);
    let (head, html) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none'; style-src 'sha256-"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(head.contains("referrer-policy: no-referrer"), "{head}");
    assert!(!html.to_ascii_lowercase().contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");

    // The page as the browser built it.
    let out = chromium(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("</html>"),
        "chromium rendered nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Had the Message-ID's script run, the body would carry its attribute.
    assert!(
        !dom.contains("<body data-owned"),
        "the Message-ID's script ran: {dom}"
    );
    assert!(!dom.to_ascii_lowercase().contains("<script"), "{dom}");
    assert!(
        dom.contains("<title>mailferry: 5 accounts, 1 needs you</title>"),
        "{dom}"
    );
    let text = visible_text(&dom);
    for seen in [
        "okay ok",
        "broken failing since",
        "locked parked: needs auth",
        "pushed ok",
        "pushed, connected since",
        "off disabled",
        "What fixes it:",
        "evil\"><script>document.body.setAttribute('data-owned','yes')</script>@x.example",
        "554 5.7.1 <img src=x onerror=\"document.title='owned'\"> rejected",
        "mailferry retry --account okay --refused",
        "1 delivered in 30 days",
        "version ",
    ] {
        assert!(text.contains(seen), "{seen:?} is not on the page: {text}");
    }
    // A screenshot, kept as the test's artifact.
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("mkdir");
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(&[
        "--window-size=1280,1800",
        &format!("--screenshot={}", shot.display()),
        &url,
    ]);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "screenshot {} is {size} bytes: {}",
        shot.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

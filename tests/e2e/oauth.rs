//! OAuth2 end to end: `mailferry auth` against the fake IdP (device code, PKCE loopback,
//! paste), then real XOAUTH2/OAUTHBEARER logins at Dovecot, whose oauth2 passdb asks the
//! same fake IdP about every bearer token; refresh, rotation, rejection, revocation,
//! parking and keepalive; SMTP XOAUTH2 at a receiver that checks tokens the same way.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mailferry_testkit::{SmtpReceiver, USER, fixtures, http_get_raw};

use crate::util::{Bench, Run, sqlite, summary};

const CLIENT: &str = "mailferry-test-client";

/// `auth = { method = "oauth2", ... }` pointing at the bench's fake IdP.
fn oauth_auth(b: &Bench, scopes: &str, extra: &str) -> String {
    let idp = &b.dovecot.idp;
    format!(
        r#"auth = {{ method = "oauth2", provider = "custom", client-id = "{CLIENT}", token-url = "{}", device-url = "{}", authorize-url = "{}", scopes = [{scopes}]{extra} }}"#,
        idp.url("/token"),
        idp.url("/devicecode"),
        idp.url("/authorize"),
    )
}

pub(crate) fn oauth_account(b: &Bench, name: &str, extra: &str) -> String {
    b.account(name, b.dovecot.imaps_port, "implicit", "unused")
        .replace(
            r#"auth = { method = "password", password-file = "unused" }"#,
            &oauth_auth(b, r#""imap", "offline_access", "openid", "email""#, extra),
        )
}

fn spawn_auth(b: &Bench, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .arg("auth")
        .args(args)
        .arg("--config")
        .arg(b.config_path())
        .env_remove("MAILFERRY_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailferry auth")
}

/// Reads `child`'s stdout until a line satisfies `want`; returns that line and all before.
fn read_until(out: &mut impl BufRead, seen: &mut String, want: impl Fn(&str) -> bool) -> String {
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).expect("read stdout");
        seen.push_str(&line);
        assert!(
            n > 0,
            "mailferry auth ended before the expected line:\n{seen}"
        );
        if want(&line) {
            return line;
        }
    }
}

fn finish(mut child: Child, mut out: impl Read, mut seen: String) -> Run {
    out.read_to_string(&mut seen).expect("read stdout");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).expect("read stderr");
    }
    let status = child.wait().expect("wait");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: seen,
        stderr,
    }
}

/// `mailferry auth NAME` by device code; the test approves the code as `USER`.
pub(crate) fn sign_in_by_device(b: &Bench, name: &str) -> Run {
    sign_in_by_device_as(b, name, USER)
}

/// `mailferry auth NAME`, approved at the fake IdP as `user`.
pub(crate) fn sign_in_by_device_as(b: &Bench, name: &str, user: &str) -> Run {
    let mut child = spawn_auth(b, &[name]);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let line = read_until(&mut out, &mut seen, |l| l.contains("enter the code "));
    let code = line.trim().rsplit(' ').next().expect("code").to_owned();
    b.dovecot.idp.approve(&code, user);
    finish(child, out, seen)
}

fn stored_refresh_token(b: &Bench, owner: &str) -> String {
    sqlite(
        &b.state_dir().join("mailferry.db"),
        &format!("SELECT refresh_token FROM tokens WHERE owner = '{owner}'"),
    )
    .trim()
    .to_owned()
}

fn live_refresh_tokens(b: &Bench) -> Vec<String> {
    b.dovecot.idp.stats()["live_refresh_tokens"]
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

pub(crate) fn count(b: &Bench, what: &str) -> u64 {
    b.dovecot.idp.stats()[what].as_u64().expect("counter")
}

#[test]
fn device_code_sign_in_then_oauthbearer_and_xoauth2_logins_deliver_everything() {
    let mut b = Bench::start();
    b.write_config(&[oauth_account(&b, "src", "")]);
    // The first poll is told to slow down: the next one must wait 5 s longer.
    b.dovecot.idp.set("slow_down", "1");

    let auth = sign_in_by_device(&b, "src");
    assert_eq!(auth.code, 0, "{auth:?}");
    assert!(
        auth.stdout.contains(&format!("Signed in src as {USER}.")),
        "{auth:?}"
    );
    assert!(
        auth.stdout.contains("Granted scopes: imap offline_access"),
        "{auth:?}"
    );
    let stats = b.dovecot.idp.stats();
    assert_eq!(stats["slow_downs"], 1, "{stats}");
    let polls: Vec<f64> = stats["poll_times"]
        .as_array()
        .expect("poll times")
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    assert!(polls.len() >= 2, "{stats}");
    assert!(
        polls[1] - polls[0] >= 5.5,
        "after slow_down the poll interval must grow by 5 s: {polls:?}"
    );
    let refresh = stored_refresh_token(&b, "account:src");
    assert_eq!(live_refresh_tokens(&b), std::slice::from_ref(&refresh));
    assert!(
        !format!("{auth:?}").contains(&refresh),
        "the refresh token was printed"
    );

    for n in 0..3 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 3, delivered 3, skipped 0, failed 0"
    );
    assert!(
        b.dovecot.log().contains("method=OAUTHBEARER"),
        "{}",
        b.dovecot.log()
    );

    // Like Outlook.com: only XOAUTH2 on offer.
    b.dovecot.offer_mechanisms("plain login xoauth2");
    for n in 3..5 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 2, delivered 2, skipped 0, failed 0"
    );
    assert!(
        b.dovecot.log().contains("method=XOAUTH2"),
        "{}",
        b.dovecot.log()
    );
    assert_eq!(b.smtp.messages().len(), 5);
}

#[test]
fn every_refresh_rotates_and_only_the_newest_refresh_token_lives_in_idp_and_store() {
    let b = Bench::start();
    b.write_config(&[oauth_account(&b, "src", "")]);
    // Access tokens that claim to live 0 s are always due for a refresh.
    b.dovecot.idp.set("declared_ttl", "0");
    assert_eq!(sign_in_by_device(&b, "src").code, 0);
    let first = stored_refresh_token(&b, "account:src");
    let mut seen = vec![first];
    for n in 0..2 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
        let run = b.once_ok();
        assert_eq!(
            summary(&run, "src"),
            "src: fetched 1, delivered 1, skipped 0, failed 0"
        );
        let now = stored_refresh_token(&b, "account:src");
        assert!(!seen.contains(&now), "the refresh token did not rotate");
        assert_eq!(
            live_refresh_tokens(&b),
            std::slice::from_ref(&now),
            "older tokens live on"
        );
        seen.push(now);
    }
    assert_eq!(count(&b, "refreshes"), 2);
}

#[test]
fn an_access_token_the_server_refuses_early_is_refreshed_once_and_the_run_completes() {
    let b = Bench::start();
    b.write_config(&[oauth_account(&b, "src", "")]);
    // Tokens say they live an hour but die after 8 s: the stored one looks fresh to
    // mailferry and is refused by Dovecot. (8 s, because Dovecot delays the next login
    // from an address that just failed by a few seconds.)
    b.dovecot.idp.set("access_ttl", "8");
    assert_eq!(sign_in_by_device(&b, "src").code, 0);
    std::thread::sleep(Duration::from_secs(9));
    for n in 0..2 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 2, delivered 2, skipped 0, failed 0"
    );
    assert_eq!(count(&b, "refreshes"), 1, "exactly one refresh");
}

#[test]
fn a_session_ended_mid_run_with_its_token_expired_is_reopened_with_a_refreshed_token() {
    let b = Bench::start();
    // Access tokens say they live 0 s: every login needs a fresh one. (They really live
    // 10 s, so that a slow login on a busy machine does not turn into a refusal.)
    b.dovecot.idp.set("access_ttl", "10");
    b.dovecot.idp.set("declared_ttl", "0");
    b.write_config(&[oauth_account(&b, "src", "").replace(
        r#"folders = ["INBOX"]"#,
        r#"folders = ["INBOX", "Archive"]"#,
    )]);
    assert_eq!(sign_in_by_device(&b, "src").code, 0);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.dovecot
        .add_message("INBOX", &fixtures::with_smtp_mode(2, "slow"));
    b.dovecot.add_message("Archive", &fixtures::simple(3));
    b.dovecot.add_message("Archive", &fixtures::simple(4));

    let child = Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["once", "--config"])
        .arg(b.config_path())
        .env_remove("MAILFERRY_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // While the slow message is being delivered, the server ends the session, as
    // Outlook.com does when the session's token expires.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while b.ledger_states() != [("attempt".to_owned(), 1), ("delivered".to_owned(), 1)] {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow delivery never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The receiver answers the slow message after 3 s; end the session well before.
    std::thread::sleep(Duration::from_millis(500));
    b.dovecot.kick(USER);
    let out = child.wait_with_output().expect("wait");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 4, delivered 4, skipped 0, failed 0"
    );
    assert!(run.stderr.contains("reconnecting to carry on"), "{run:?}");
    assert_eq!(b.smtp.messages().len(), 4);
    // One refresh when the run began, one for the new session.
    assert_eq!(count(&b, "refreshes"), 2);
}

#[test]
fn a_revoked_sign_in_parks_the_account_without_hammering_and_others_keep_flowing() {
    let b = Bench::start();
    b.write_config(&[
        oauth_account(&b, "oa", ""),
        b.account("pw", b.dovecot.imaps_port, "implicit", "src.pass"),
    ]);
    assert_eq!(sign_in_by_device(&b, "oa").code, 0);
    b.dovecot.idp.set("declared_ttl", "0");
    b.dovecot.idp.revoke(USER);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));

    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        summary(&run, "pw"),
        "pw: fetched 1, delivered 1, skipped 0, failed 0"
    );
    assert!(
        run.stdout.contains(
            "error: account \"oa\": the sign-in server refused: invalid_grant (AADSTS700082"
        ),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("sign in again with `mailferry auth oa`"),
        "{run:?}"
    );
    let refreshes = count(&b, "refreshes");

    // Parked: the next run does not ask the provider again.
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("error: account \"oa\": parked until signed in again: the sign-in server refused: invalid_grant"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("hint: sign in again with `mailferry auth oa`"),
        "{run:?}"
    );
    assert_eq!(
        count(&b, "refreshes"),
        refreshes,
        "a parked account hammered the IdP"
    );

    // Signing in again un-parks it.
    b.dovecot.idp.set("declared_ttl", "3600");
    assert_eq!(sign_in_by_device(&b, "oa").code, 0);
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "oa"),
        "oa: fetched 1, delivered 1, skipped 0, failed 0"
    );
}

#[test]
fn browser_sign_in_with_pkce_over_the_loopback_redirect() {
    let b = Bench::start();
    b.write_config(&[oauth_account(&b, "src", r#", flow = "browser""#)]);
    let mut child = spawn_auth(&b, &["src"]);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let url = read_until(&mut out, &mut seen, |l| {
        l.starts_with(&b.dovecot.idp.url("/authorize?"))
    });
    let url = url.trim();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );

    // The "browser": the IdP approves and redirects to the loopback listener.
    let idp_reply = http_get_raw(url);
    let location = location_of(&idp_reply);
    let page = http_get_raw(&location);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("mailferry received the sign-in"), "{page}");
    let auth = finish(child, out, seen);
    assert_eq!(auth.code, 0, "{auth:?}");
    assert!(
        auth.stdout.contains(&format!("Signed in src as {USER}.")),
        "{auth:?}"
    );
    assert_eq!(count(&b, "code_exchanges"), 1);

    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.once_ok();
}

#[test]
fn browser_sign_in_refuses_a_redirect_with_a_foreign_state_and_goes_on() {
    let b = Bench::start();
    b.write_config(&[oauth_account(&b, "src", r#", flow = "browser""#)]);
    let mut child = spawn_auth(&b, &["src"]);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let url = read_until(&mut out, &mut seen, |l| {
        l.starts_with(&b.dovecot.idp.url("/authorize?"))
    });
    let location = location_of(&http_get_raw(url.trim()));
    // Another page sends the browser to the loopback port with a foreign state, with a
    // code and with an error: refused, nothing reaches the token endpoint, and the sign-in
    // is not aborted.
    let forged = location.replace("state=", "state=forged");
    let page = http_get_raw(&forged);
    assert!(page.starts_with("HTTP/1.1 400"), "{page}");
    let (base, _) = location.split_once('?').expect("query");
    let page = http_get_raw(&format!("{base}?error=access_denied&state=forged"));
    assert!(page.starts_with("HTTP/1.1 400"), "{page}");
    assert_eq!(
        count(&b, "code_exchanges"),
        0,
        "a forged redirect reached the token endpoint"
    );
    // The real redirect still completes the sign-in.
    let page = http_get_raw(&location);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let auth = finish(child, out, seen);
    assert_eq!(auth.code, 0, "{auth:?}");
    assert_eq!(count(&b, "code_exchanges"), 1);
}

#[test]
fn paste_flow_takes_the_url_the_browser_ended_on_elsewhere() {
    let b = Bench::start();
    b.write_config(&[oauth_account(&b, "src", "")]);
    let mut child = spawn_auth(&b, &["src", "--paste"]);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let url = read_until(&mut out, &mut seen, |l| {
        l.starts_with(&b.dovecot.idp.url("/authorize?"))
    });
    read_until(&mut out, &mut seen, |l| l.contains("paste it here"));
    // The browser on "another machine" was redirected to a 127.0.0.1 address that did not
    // load there; the user copies it from the address bar.
    let location = location_of(&http_get_raw(url.trim()));
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "  {location}  ").expect("paste");
    drop(stdin);
    let auth = finish(child, out, seen);
    assert_eq!(auth.code, 0, "{auth:?}");
    assert!(
        auth.stdout.contains(&format!("Signed in src as {USER}.")),
        "{auth:?}"
    );

    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 1, delivered 1, skipped 0, failed 0"
    );
}

#[test]
fn idle_refresh_tokens_are_refreshed_after_30_days_even_without_mail() {
    let b = Bench::start();
    b.write_config(&[oauth_account(&b, "src", "")]);
    assert_eq!(sign_in_by_device(&b, "src").code, 0);
    let before = stored_refresh_token(&b, "account:src");
    let db = b.state_dir().join("mailferry.db");
    // A fresh access token, so no login needs a refresh: only the keepalive can cause one.
    b.once_ok();
    assert_eq!(count(&b, "refreshes"), 0);
    sqlite(
        &db,
        "UPDATE tokens SET refreshed_at = refreshed_at - 31 * 86400",
    );
    b.once_ok();
    assert_eq!(count(&b, "refreshes"), 1);
    let after = stored_refresh_token(&b, "account:src");
    assert_ne!(before, after);
    let age = sqlite(
        &db,
        "SELECT strftime('%s','now') - refreshed_at FROM tokens",
    );
    assert!(age.trim().parse::<i64>().expect("age") < 60, "{age}");
}

#[test]
fn a_refusal_names_clock_skew_and_the_registration_problem() {
    let b = Bench::start();
    b.write_config(&[oauth_account(&b, "src", "")]);
    b.dovecot.idp.set("declared_ttl", "0");
    assert_eq!(sign_in_by_device(&b, "src").code, 0);
    b.dovecot.idp.set("date_offset", "-3600");
    b.dovecot.idp.fail_next(
        "invalid_client",
        "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    );
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("AADSTS7000218"), "{run:?}");
    assert!(
        run.stdout.contains("this machine's clock is 3600 s ahead"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("hint: fix this machine's clock"),
        "{run:?}"
    );

    // Without the skew, the registration hint.
    b.dovecot.idp.set("date_offset", "0");
    b.dovecot.idp.fail_next(
        "invalid_client",
        "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    );
    let run = b.run(&["once"]);
    assert!(
        run.stdout
            .contains("hint: the app registration cannot be used like this"),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains("parked"),
        "a registration problem parked the account: {run:?}"
    );
    // Once the registration is fixed, the same sign-in works again.
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.once_ok();
}

#[test]
fn smtp_destination_signs_in_with_xoauth2() {
    let b = Bench::start();
    let receiver = SmtpReceiver::start_with_xoauth2(
        &b.dovecot.pki,
        &b.dovecot.idp.url("/tokeninfo?access_token="),
    );
    let smtp_auth = oauth_auth(&b, r#""smtp", "offline_access", "openid", "email""#, "");
    let destination = format!(
        "{}username = \"{USER}\"\n{smtp_auth}\n",
        b.smtp_destination("mailbox", receiver.port)
    );
    let account = b
        .account("src", b.dovecot.imaps_port, "implicit", "src.pass")
        .replace("destination = \"home\"", "destination = \"mailbox\"");
    b.write_raw(&destination, &[account]);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));

    let before = b.run(&["once"]);
    assert_eq!(before.code, 1, "{before:?}");
    assert!(
        before
            .stdout
            .contains("error: account \"src\": destination \"mailbox\": not signed in yet"),
        "{before:?}"
    );
    assert!(
        before
            .stdout
            .contains("hint: sign in once with `mailferry auth mailbox`"),
        "{before:?}"
    );

    assert_eq!(sign_in_by_device(&b, "mailbox").code, 0);
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 1, delivered 1, skipped 0, failed 0"
    );
    assert_eq!(receiver.messages().len(), 1);
}

/// The `Location` header of a raw HTTP response.
fn location_of(reply: &str) -> String {
    reply
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .unwrap_or_else(|| panic!("no redirect: {reply}"))
        .trim()
        .to_owned()
}

#[test]
fn check_reports_the_sign_in_and_a_wrong_clock() {
    let b = Bench::start();
    b.write_config(&[oauth_account(&b, "src", "")]);
    let before = b.run(&["check"]);
    assert_eq!(before.code, 1, "{before:?}");
    assert!(
        before.stdout.contains("  FAIL  sign-in: not signed in yet"),
        "{before:?}"
    );
    assert!(
        before
            .stdout
            .contains("hint: sign in once with `mailferry auth src`"),
        "{before:?}"
    );

    assert_eq!(sign_in_by_device(&b, "src").code, 0);
    let good = b.run(&["check"]);
    assert_eq!(good.code, 0, "{good:?}");
    assert!(
        good.stdout
            .contains(&format!("  ok    sign-in: signed in as {USER}")),
        "{good:?}"
    );
    assert!(
        good.stdout.contains("  ok    login: logged in as"),
        "{good:?}"
    );
    assert!(good.stdout.contains("  ok    clock: within "), "{good:?}");

    b.dovecot.idp.set("date_offset", "-900");
    let skewed = b.run(&["check"]);
    assert_eq!(skewed.code, 1, "{skewed:?}");
    assert!(
        skewed
            .stdout
            .contains("  FAIL  clock: this machine's clock is 900 s off"),
        "{skewed:?}"
    );
}

#[test]
fn a_token_reply_that_does_not_parse_is_never_echoed_anywhere() {
    let b = Bench::start();
    b.write_config(&[oauth_account(&b, "src", "")]);
    let last_access = |b: &Bench| {
        b.dovecot.idp.stats()["last_access"]
            .as_str()
            .expect("a token was issued")
            .to_owned()
    };

    // At sign-in: a 200 with the tokens and an expires_in that is not a number.
    b.dovecot.idp.set("garble_2xx", "1");
    let auth = sign_in_by_device(&b, "src");
    assert_ne!(auth.code, 0, "{auth:?}");
    let token = last_access(&b);
    let shown = format!("{auth:?}");
    assert!(
        !shown.contains(&token),
        "the access token was printed: {shown}"
    );
    assert!(shown.contains("not shown: it may hold tokens"), "{shown}");
    assert!(shown.contains("`expires_in`"), "{shown}");

    // At a refresh during a run: the error lands in the summary, the runs table and
    // status, none of them with the token.
    b.dovecot.idp.set("declared_ttl", "0");
    assert_eq!(sign_in_by_device(&b, "src").code, 0);
    b.dovecot.idp.set("garble_2xx", "1");
    let run = b.run(&["once"]);
    assert_ne!(run.code, 0, "{run:?}");
    let token = last_access(&b);
    let errors = sqlite(
        &b.state_dir().join("mailferry.db"),
        "SELECT group_concat(error, ' | ') FROM runs",
    );
    let status = b.run(&["status", "--json"]);
    for (what, text) in [
        ("the run", format!("{run:?}")),
        ("the runs table", errors.clone()),
        ("status", format!("{status:?}")),
    ] {
        assert!(
            !text.contains(&token),
            "{what} shows the access token: {text}"
        );
    }
    assert!(errors.contains("not shown: it may hold tokens"), "{errors}");
}

#[test]
fn browser_sign_in_with_a_registered_localhost_redirect() {
    let b = Bench::start();
    b.write_config(&[oauth_account(
        &b,
        "src",
        r#", flow = "browser", redirect-uri = "http://localhost""#,
    )]);
    let mut child = spawn_auth(&b, &["src"]);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let url = read_until(&mut out, &mut seen, |l| {
        l.starts_with(&b.dovecot.idp.url("/authorize?"))
    });
    let url = url.trim();
    // The registered redirect, with this sign-in's port (loopback ports are not matched).
    assert!(
        url.contains("redirect_uri=http%3A%2F%2Flocalhost%3A"),
        "{url}"
    );
    let location = location_of(&http_get_raw(url));
    assert!(location.starts_with("http://localhost:"), "{location}");
    // The browser resolves localhost to the loopback address.
    let page = http_get_raw(&location.replacen("localhost", "127.0.0.1", 1));
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let auth = finish(child, out, seen);
    assert_eq!(auth.code, 0, "{auth:?}");
    // The code exchange sent the same redirect URI (the IdP checks it).
    assert_eq!(count(&b, "code_exchanges"), 1);
}

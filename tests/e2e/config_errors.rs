//! A bad configuration: every problem named with its key and line, exit code 2, nothing
//! touched.

use crate::util::run_with_config;

#[test]
fn bad_config_lists_every_problem_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        r#"[daemon]
state-dir = "state"
min-interval = "often"

[[destination]]
name = "home"
kind = "smtp"
host = "localhost"
envelope-to = ["me@home.example"]

[[account]]
name = "a"
host = "127.0.0.1"
usernme = "x"
auth = { method = "password", password-file = "missing.pass" }
destination = "elsewhere"
"#,
    )
    .expect("write");
    for command in [&["once"][..], &["check-config"][..]] {
        let run = run_with_config(&config, command);
        assert_eq!(run.code, 2, "{run:?}");
        let e = &run.stderr;
        assert!(
            e.contains("bad.toml:3: daemon.min-interval: \"often\" is not a duration"),
            "{run:?}"
        );
        assert!(
            e.contains("bad.toml:14: account[0].usernme: unknown key"),
            "{run:?}"
        );
        assert!(
            e.contains("bad.toml:11: account[0].username: missing"),
            "{run:?}"
        );
        assert!(
            e.contains("account[0].auth.password-file: cannot read"),
            "{run:?}"
        );
        assert!(
            e.contains(
                "bad.toml:16: account[0].destination: no [[destination]] is named \"elsewhere\""
            ),
            "{run:?}"
        );
        assert!(
            !dir.path().join("state").exists(),
            "a bad config created the state directory"
        );
    }
}

#[test]
fn good_config_checks_ok() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p"), "pw").expect("write");
    let config = dir.path().join("ok.toml");
    std::fs::write(
        &config,
        r#"[[destination]]
name = "home"
kind = "smtp"
host = "localhost"
envelope-to = ["me@home.example"]

[[account]]
name = "gmx"
provider = "gmx"
username = "me@gmx.net"
auth = { method = "password", password-file = "p" }
destination = "home"
"#,
    )
    .expect("write");
    let run = run_with_config(&config, &["check-config"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("ok (1 account, 1 destination)"),
        "{run:?}"
    );
}

#[test]
fn unknown_account_on_the_command_line_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p"), "pw").expect("write");
    let config = dir.path().join("ok.toml");
    std::fs::write(
        &config,
        "[daemon]\nstate-dir = \"s\"\n[[destination]]\nname = \"h\"\nkind = \"smtp\"\nhost = \"localhost\"\nenvelope-to = [\"me@h.example\"]\n\
         [[account]]\nname = \"a\"\nhost = \"127.0.0.1\"\nusername = \"u\"\nauth = { method = \"password\", password-file = \"p\" }\ndestination = \"h\"\n",
    )
    .expect("write");
    let run = run_with_config(&config, &["once", "--account", "nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--account \"nope\": no such account"),
        "{run:?}"
    );
    assert!(!dir.path().join("s").exists());
}

#[test]
fn password_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("env.toml");
    std::fs::write(
        &config,
        "[daemon]\nstate-dir = \"s\"\n[[destination]]\nname = \"h\"\nkind = \"smtp\"\nhost = \"localhost\"\nenvelope-to = [\"me@h.example\"]\n\
         [[account]]\nname = \"a\"\nhost = \"127.0.0.1\"\nusername = \"u\"\nauth = { method = \"password\", password-env = \"MAILFERRY_TEST_PW\" }\ndestination = \"h\"\n",
    )
    .expect("write");
    let with = |value: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"));
        cmd.args(["check-config", "--config"])
            .arg(&config)
            .env_remove("MAILFERRY_TEST_PW");
        if let Some(v) = value {
            cmd.env("MAILFERRY_TEST_PW", v);
        }
        cmd.output().expect("run")
    };
    let ok = with(Some("s3cret-from-env"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = with(None);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("env.toml:12: account[0].auth.password-env: the environment variable MAILFERRY_TEST_PW is not set or empty"),
        "{err}"
    );
}

#[test]
fn init_writes_a_short_config_that_checks_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mailferry.toml");
    let init = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
            .arg("init")
            .args(args)
            .arg("--config")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run init")
    };
    let out = init(&[
        "--source",
        "gmx",
        "--address",
        "me@gmx.net",
        "--dest",
        "smtp:mail.home.example",
        "--to",
        "me@home.example",
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("written");
    assert!(text.contains("provider = \"gmx\""), "{text}");
    assert!(
        text.contains("envelope-to = [\"me@home.example\"]"),
        "{text}"
    );
    assert!(text.lines().count() < 30, "not short: {text}");
    assert!(said.contains("gmx.pass"), "{said}");
    assert!(said.contains("mailferry check"), "{said}");
    // With the password in place, the file checks out fully.
    std::fs::write(dir.path().join("gmx.pass"), "app-password\n").expect("pass");
    let check = crate::util::run_with_config(&path, &["check-config"]);
    assert_eq!(check.code, 0, "{check:?}");

    // Never over an existing file.
    let again = init(&[
        "--source",
        "outlook",
        "--address",
        "me@outlook.com",
        "--dest",
        "gmail",
        "--to",
        "me@gmail.com",
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&path).expect("kept"), text);

    // Outlook into Gmail: both sign in with OAuth2, and init says so.
    std::fs::remove_file(&path).expect("rm");
    let oauth = init(&[
        "--source",
        "outlook",
        "--address",
        "me@outlook.com",
        "--dest",
        "gmail",
        "--to",
        "me@gmail.com",
        "--client-id",
        "the-id",
    ]);
    let said = String::from_utf8_lossy(&oauth.stdout);
    assert!(oauth.status.success(), "{said}");
    assert!(said.contains("mailferry auth outlook"), "{said}");
    assert!(said.contains("mailferry auth inbox"), "{said}");
    // Without a terminal, a missing answer is named.
    std::fs::remove_file(&path).expect("rm");
    let missing = init(&["--source", "gmx"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--address is missing"));
}

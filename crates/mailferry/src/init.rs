//! `mailferry init`: a first configuration in one command. From flags, or from questions
//! on a terminal: the source (a provider preset, or any IMAP/POP3 host) and its address,
//! the destination (the Gmail API, or an SMTP host) and its address. Writes a short,
//! commented file with only what that setup needs, never over an existing one, checks it,
//! and says what to run next.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use mailferry_config::SecretScope;

/// What `mailferry init` was told on its command line.
#[derive(Debug, Default, clap::Args)]
pub struct Answers {
    /// Where mail comes from: outlook, gmail, gmx, yahoo, icloud, imap:HOST or pop3:HOST.
    #[arg(long)]
    pub source: Option<String>,
    /// The source mailbox's address (its login name).
    #[arg(long)]
    pub address: Option<String>,
    /// Where mail goes: gmail (the Gmail API) or smtp:HOST.
    #[arg(long)]
    pub dest: Option<String>,
    /// The address mail goes to (for smtp; for gmail, your Gmail address).
    #[arg(long)]
    pub to: Option<String>,
    /// The OAuth2 client id of your app registration (Outlook.com, Gmail API), if you
    /// have it already.
    #[arg(long)]
    pub client_id: Option<String>,
}

const PRESETS: &[&str] = &["outlook", "gmail", "gmx", "yahoo", "icloud"];

/// Asks `question` on the terminal when `value` is missing; fails without a terminal.
fn ask(value: Option<String>, flag: &str, question: &str) -> anyhow::Result<String> {
    if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
        return Ok(v.trim().to_owned());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("--{flag} is missing (no terminal to ask on): {question}");
    }
    print!("{question} ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim().to_owned();
    if line.is_empty() {
        anyhow::bail!("no answer for --{flag}");
    }
    Ok(line)
}

fn account_name(source: &str) -> String {
    let base = source.split_once(':').map_or(source, |(_, h)| h);
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.trim_matches('-').to_owned()
}

/// Writes the configuration at `path`.
pub fn command(path: &Path, answers: Answers) -> ExitCode {
    run(path, answers).unwrap_or_else(|e| {
        eprintln!("mailferry: {e:#}");
        crate::state::bad_config()
    })
}

fn run(path: &Path, answers: Answers) -> anyhow::Result<ExitCode> {
    if path.exists() {
        eprintln!(
            "mailferry: {} exists; init never overwrites a configuration: edit it, or move it away (mv {0} {0}.old) and run init again, or give another --config",
            path.display()
        );
        return Ok(ExitCode::from(2));
    }
    let source = ask(
        answers.source,
        "source",
        "Where does the mail come from? (outlook, gmail, gmx, yahoo, icloud, imap:HOST, pop3:HOST)",
    )?;
    let address = ask(answers.address, "address", "Its address (the login)?")?;
    let dest = ask(
        answers.dest,
        "dest",
        "Where should it go? (gmail for the Gmail API, or smtp:HOST)",
    )?;
    let to = ask(answers.to, "to", "The address it goes to?")?;
    let name = account_name(&source);
    let client_id = answers
        .client_id
        .unwrap_or_else(|| "REPLACE-WITH-YOUR-CLIENT-ID".to_owned());
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| anyhow::anyhow!("cannot use the directory {}: {e}", dir.display()))?;
    let etc = dir.display();

    let (source_lines, source_oauth) = source_block(&source, &address, &name, &client_id, &etc)?;
    let (dest_name, dest_lines, dest_oauth) = destination_block(&dest, &to, &client_id, &etc)?;
    let text = format!(
        "# mailferry configuration, written by `mailferry init`. Every key is explained in the\n# example configuration (/usr/share/doc/mailferry/examples/mailferry.toml).\n\n[daemon]\nstate-dir = \"/var/lib/mailferry\"\n\n[[destination]]\nname = \"{dest_name}\"\n{dest_lines}\n[[account]]\nname = \"{name}\"\n{source_lines}destination = \"{dest_name}\"\n# first-run = \"new-only\"                # deliver only mail that arrives from now on\n# after-delivery = \"keep\"                # or mark-seen, move:FOLDER, delete\n"
    );
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        f.write_all(text.as_bytes())?;
    }
    hand_to_service(path)?;
    // Checked as the service will read it, secrets aside (they are not there yet).
    if let Err(e) = mailferry_config::load_scoped(path, &SecretScope::None) {
        eprintln!("mailferry: the written configuration does not check out: {e}");
        return Ok(ExitCode::from(1));
    }
    next_steps(
        path,
        &name,
        dest_name,
        &etc,
        &client_id,
        source_oauth,
        dest_oauth,
    );
    Ok(ExitCode::SUCCESS)
}

/// The account's lines for `--source`, and whether it signs in with OAuth2.
fn source_block(
    source: &str,
    address: &str,
    name: &str,
    client_id: &str,
    etc: &std::path::Display<'_>,
) -> anyhow::Result<(String, bool)> {
    Ok(match source {
        "outlook" => (
            format!(
                "provider = \"outlook\"                 # outlook.office365.com, Microsoft sign-in\nusername = \"{address}\"\n# Outlook.com takes no passwords: sign in with `mailferry auth {name}`. The client id\n# is your app registration's (README: \"Outlook.com, Hotmail, Live, MSN (OAuth2)\").\nauth = {{ method = \"oauth2\", client-id = \"{client_id}\" }}\n"
            ),
            true,
        ),
        p if PRESETS.contains(&p) => (
            format!(
                "provider = \"{p}\"\nusername = \"{address}\"\n# An app password from the provider's security settings, alone in this file,\n# readable by the service (root:mailferry 0640).\nauth = {{ method = \"password\", password-file = \"{etc}/{name}.pass\" }}\n"
            ),
            false,
        ),
        s => match s.split_once(':') {
            Some((proto @ ("imap" | "pop3"), host)) if !host.is_empty() => (
                format!(
                    "protocol = \"{proto}\"\nhost = \"{host}\"                  # implicit TLS on {}\nusername = \"{address}\"\nauth = {{ method = \"password\", password-file = \"{etc}/{name}.pass\" }}\n",
                    if proto == "imap" { 993 } else { 995 }
                ),
                false,
            ),
            _ => anyhow::bail!(
                "--source {s:?}: use outlook, gmail, gmx, yahoo, icloud, imap:HOST or pop3:HOST"
            ),
        },
    })
}

/// The destination's name and lines for `--dest`, and whether it signs in with OAuth2.
fn destination_block(
    dest: &str,
    to: &str,
    client_id: &str,
    etc: &std::path::Display<'_>,
) -> anyhow::Result<(&'static str, String, bool)> {
    Ok(match dest {
        "gmail" => (
            "inbox",
            format!(
                "kind = \"gmail-api\"                    # users.messages.import, labelled\n# Your Google Cloud project's Desktop client (README: \"Into Gmail, through the Gmail API\n# (recommended for Gmail)\"); sign in with `mailferry auth inbox` as {to}.\nauth = {{ method = \"oauth2\", client-id = \"{client_id}\", client-secret-file = \"{etc}/google-client-secret\" }}\n"
            ),
            true,
        ),
        d => match d.split_once(':') {
            Some(("smtp", host)) if !host.is_empty() => (
                "home",
                format!(
                    "kind = \"smtp\"\nhost = \"{host}\"                 # STARTTLS on 587\nenvelope-to = [\"{to}\"]\n"
                ),
                false,
            ),
            _ => anyhow::bail!("--dest {d:?}: use gmail or smtp:HOST"),
        },
    })
}

/// What to do next, numbered.
fn next_steps(
    path: &Path,
    name: &str,
    dest_name: &str,
    etc: &std::path::Display<'_>,
    client_id: &str,
    source_oauth: bool,
    dest_oauth: bool,
) {
    println!("Wrote {} for {name} -> {dest_name}. Next:", path.display());
    let mut step = 1;
    if !source_oauth {
        println!(
            "  {step}. put {name}'s app password in {etc}/{name}.pass:\n       printf '%s\\n' 'the-app-password' | sudo install -m 0640 -o root -g mailferry /dev/stdin {etc}/{name}.pass"
        );
        step += 1;
    }
    if client_id == "REPLACE-WITH-YOUR-CLIENT-ID" && (source_oauth || dest_oauth) {
        println!(
            "  {step}. set client-id in {} (see the README section named there)",
            path.display()
        );
        step += 1;
    }
    if dest_oauth {
        println!(
            "  {step}. save the client secret in {etc}/google-client-secret, then: mailferry auth {dest_name}"
        );
        step += 1;
    }
    if source_oauth {
        println!("  {step}. mailferry auth {name}");
        step += 1;
    }
    println!("  {step}. mailferry check");
}

/// The group the package gives the service (its files are `root:mailferry 0640`).
const SERVICE_GROUP: &str = "mailferry";

/// Run as root, a new file is root's: the service (user `mailferry`) could not read it.
/// It goes to the service's group as the package's own files do, or the user is told the
/// one command that does it.
fn hand_to_service(path: &Path) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    match group_id(SERVICE_GROUP, &groups) {
        Some(gid) => std::os::unix::fs::chown(path, Some(0), Some(gid)).map_err(|e| {
            anyhow::anyhow!(
                "cannot give {} to the group {SERVICE_GROUP}: {e}; run: chown root:{SERVICE_GROUP} {0}",
                path.display()
            )
        }),
        None => {
            eprintln!(
                "mailferry: there is no group {SERVICE_GROUP} yet (the package makes it): once it exists, run: chown root:{SERVICE_GROUP} {}",
                path.display()
            );
            Ok(())
        }
    }
}

/// The id of group `name` in the text of /etc/group.
fn group_id(name: &str, etc_group: &str) -> Option<u32> {
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name)
            .then(|| fields.nth(1)?.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::group_id;

    #[test]
    fn the_service_group_is_found_in_etc_group() {
        let text = "root:x:0:\nmailferry-old:x:998:\nmailferry:x:999:\nusers:x:100:alice\n";
        assert_eq!(group_id("mailferry", text), Some(999));
        assert_eq!(group_id("nobody", text), None);
        assert_eq!(group_id("mailferry", "mailferry:x:notanumber:"), None);
    }
}

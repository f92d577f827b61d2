//! The `[client]` section of mailroom.toml, as `mailroom sendmail` reads it. The same file may hold the
//! server's sections; they are none of sendmail's business and are skipped.
//!
//! ```toml
//! [client]
//! server = "mail.example.org:587"   # default 127.0.0.1:2525
//! tls = "starttls"                  # "none" (default), "starttls" (never falls back) or "tls" (port 465)
//! cafile = "/etc/mailroom/ca.pem"   # trust these certificates instead of the system's CA store
//! insecure = false                  # true: do not verify the certificate at all (warns every time)
//! user = "alice@example.org"        # SMTP AUTH user, with one of:
//! password_file = "~/.mailroom-pw"  #   first line of a file readable only by its owner (mode 600)
//! password_command = "pass mail"    #   first line of what `sh -c COMMAND` prints
//! allow_plaintext_auth = false      # true: AUTH without TLS, to a server on a loopback address only
//! helo = "laptop.example.org"       # name for EHLO, default this host's name
//! from = "alice@example.org"        # envelope sender without -f (then the AUTH user, the From header)
//! domain = "example.org"            # for bare local names (`sendmail root`); default this host's name
//! timeout = "60s"                   # bound on each step
//! ```
//!
//! Relative paths are taken from the config file's folder, and `~/` from $HOME. A password file that its
//! group or others may read is refused: the password is the key to the mailbox. `user` without TLS is
//! refused unless `allow_plaintext_auth` is set, and the client then sends it only to a loopback server.
//! The password command runs only when a server has offered AUTH over a connection the password may
//! go on, never when the config is read: a config file that someone slipped in with `--config`
//! (argument injection into a sendmail call, as in CVE-2016-10033) runs nothing before a server asks.
//!
//! When this process runs with more privilege than its caller (set-user-id or set-group-id: the real
//! and effective ids differ, and the caller is not root), `--config`, `$MAILROOM_CONFIG` and the caller's own file are ignored with
//! a warning and the defaults apply, as Postfix and Exim ignore a caller's config file then.

use std::io::{BufRead, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mailroom_client::{Client, ClientBuilder, Tls};
use serde::Deserialize;

use crate::send::util::{parse_duration, DEFAULT_SERVER, DEFAULT_TIMEOUT};

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    client: Section,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Section {
    server: Option<String>,
    domain: Option<String>,
    tls: Option<String>,
    user: Option<String>,
    helo: Option<String>,
    from: Option<String>,
    timeout: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    cafile: Option<PathBuf>,
    insecure: Option<bool>,
    allow_plaintext_auth: Option<bool>,
}

/// Where the AUTH password comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PasswordSource {
    File(PathBuf),
    Command(String),
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    pub server: String,
    pub tls: Tls,
    pub user: Option<String>,
    pub helo: Option<String>,
    pub from: Option<String>,
    /// The domain of bare local names (`sendmail root`): `domain`, else this host's name.
    pub domain: String,
    pub timeout: Duration,
    pub password: Option<PasswordSource>,
    pub cafile: Option<PathBuf>,
    pub insecure: bool,
    pub allow_plaintext_auth: bool,
}

/// The real and effective user and group ids of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub ruid: u32,
    pub euid: u32,
    pub rgid: u32,
    pub egid: u32,
}

/// Reads the ids from the `Uid:` and `Gid:` lines of /proc/self/status (real, effective, saved, fs).
pub fn process_ids() -> Option<Ids> {
    parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn parse_status(text: &str) -> Option<Ids> {
    let pair = |key: &str| -> Option<(u32, u32)> {
        let line = text.lines().find_map(|l| l.strip_prefix(key))?;
        let mut ids = line.split_whitespace().map(str::parse::<u32>);
        Some((ids.next()?.ok()?, ids.next()?.ok()?))
    };
    let ((ruid, euid), (rgid, egid)) = (pair("Uid:")?, pair("Gid:")?);
    Some(Ids { ruid, euid, rgid, egid })
}

/// True when the process runs with more privilege than its caller (set-user-id or set-group-id, and
/// the caller is not root, who may read anything anyway), or when that cannot be told (no /proc): then
/// a config file the caller names is not to be trusted.
pub fn is_elevated(ids: Option<Ids>) -> bool {
    ids.is_none_or(|i| i.ruid != 0 && (i.ruid != i.euid || i.rgid != i.egid))
}

/// Which file to read: `--config`, else `$MAILROOM_CONFIG`, else the user's file when it exists; none
/// when `elevated` (see the module documentation), since all three are the caller's choice.
fn locate(explicit: Option<&Path>, elevated: bool) -> Option<(PathBuf, bool)> {
    if elevated {
        return None;
    }
    if let Some(p) = explicit {
        return Some((p.to_path_buf(), true));
    }
    if let Some(p) = std::env::var_os("MAILROOM_CONFIG").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some((base.join("mailroom").join("mailroom.toml"), false))
}

/// The warning when a config file is ignored because the process is elevated.
pub const IGNORED_WHEN_ELEVATED: &str = "warning: running with more privilege than the caller (set-user-id or \
     set-group-id): ignoring --config, $MAILROOM_CONFIG and the caller's config file; using the defaults";

/// Loads the config. A file named by flag or environment must exist; the user's default file may not.
/// `elevated`: see [`is_elevated`]; then no file is read.
pub fn load(explicit: Option<&Path>, elevated: bool) -> Result<ClientConfig, String> {
    let text = match locate(explicit, elevated) {
        Some((path, required)) => match std::fs::read_to_string(&path) {
            Ok(t) => Some((path, t)),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read config {}: {e}", path.display())),
        },
        None => None,
    };
    match text {
        Some((path, t)) => parse_in(&t, path.parent()).map_err(|e| format!("config {}: {e}", path.display())),
        None => parse(""),
    }
}

/// `~/x` under $HOME, a relative path under the config file's folder.
fn resolve(path: &Path, base: Option<&Path>) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            return PathBuf::from(home).join(rest);
        }
    }
    match base {
        Some(b) if path.is_relative() => b.join(path),
        _ => path.to_path_buf(),
    }
}

pub fn parse(text: &str) -> Result<ClientConfig, String> {
    parse_in(text, None)
}

/// Parses the config text; relative paths are taken from `base` (the config file's folder).
pub fn parse_in(text: &str, base: Option<&Path>) -> Result<ClientConfig, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    let c = file.client;
    check_values(&c)?;
    let tls = match c.tls.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("none") | Some("off") | Some("plain") | Some("no") => Tls::None,
        Some("starttls") => Tls::StartTls,
        Some("tls") | Some("implicit") | Some("smtps") => Tls::Implicit,
        Some(other) => return Err(format!("[client] tls = {other:?}: use \"none\", \"starttls\" or \"tls\"")),
    };
    let timeout = match c.timeout.as_deref() {
        Some(t) => parse_duration(t).map_err(|e| format!("[client] timeout: {e}"))?,
        None => DEFAULT_TIMEOUT,
    };
    let password = match (c.password_file, c.password_command) {
        (Some(_), Some(_)) => return Err("[client] give password_file or password_command, not both".into()),
        (Some(f), None) => Some(PasswordSource::File(resolve(&f, base))),
        (None, Some(cmd)) if cmd.trim().is_empty() => return Err("[client] password_command is empty".into()),
        (None, Some(cmd)) => Some(PasswordSource::Command(cmd)),
        (None, None) => None,
    };
    match (&c.user, &password) {
        (Some(_), None) => return Err("[client] user needs password_file or password_command".into()),
        (None, Some(_)) => return Err("[client] password_file / password_command need user".into()),
        _ => {}
    }
    let insecure = c.insecure.unwrap_or(false);
    if tls == Tls::None && (c.cafile.is_some() || insecure) {
        return Err("[client] cafile and insecure need tls = \"starttls\" or \"tls\"".into());
    }
    if insecure && c.cafile.is_some() {
        return Err("[client] give cafile or insecure = true, not both".into());
    }
    let allow_plaintext_auth = c.allow_plaintext_auth.unwrap_or(false);
    if tls == Tls::None && c.user.is_some() && !allow_plaintext_auth {
        return Err("[client] user without tls = \"starttls\" or \"tls\": not sending the password without TLS \
                    (allow_plaintext_auth = true allows it, for a server on a loopback address only)"
            .into());
    }
    Ok(ClientConfig {
        server: c.server.unwrap_or_else(|| DEFAULT_SERVER.to_string()),
        tls,
        user: c.user,
        helo: c.helo,
        from: c.from,
        domain: c.domain.map(|d| d.to_ascii_lowercase()).unwrap_or_else(mailroom_client::default_helo_name),
        timeout,
        password,
        cafile: c.cafile.map(|p| resolve(&p, base)),
        insecure,
        allow_plaintext_auth,
    })
}

/// The values serde takes as any string, checked now rather than at the first send: `server` is
/// `host:port`, `from` an address, `helo` and `domain` host names.
fn check_values(c: &Section) -> Result<(), String> {
    let is_name = |s: &str| mailroom_store::users::validate_domain(s).is_ok();
    if let Some(server) = &c.server {
        let host_port = server.rsplit_once(':').filter(|(h, p)| {
            let host = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
            p.parse::<u16>().is_ok_and(|p| p != 0) && (host.parse::<std::net::IpAddr>().is_ok() || is_name(host))
        });
        if host_port.is_none() {
            return Err(format!(
                "[client] server = {server:?}: expected \"host:port\" (e.g. \"mail.example.org:587\")"
            ));
        }
    }
    if let Some(from) = &c.from {
        crate::send::util::parse_mailbox(from).map_err(|e| format!("[client] from = {from:?}: {e}"))?;
    }
    for (key, value) in [("helo", &c.helo), ("domain", &c.domain)] {
        // An address literal (`[192.0.2.1]`, RFC 5321 §4.1.3) is a valid EHLO name too.
        let is_literal = |v: &str| key == "helo" && v.starts_with('[') && v.ends_with(']');
        if let Some(v) = value.as_deref().filter(|v| !is_name(v) && !is_literal(v)) {
            return Err(format!("[client] {key} = {v:?} is not a host name"));
        }
    }
    Ok(())
}

/// The first line of `text`, without its line end; an empty one is no password.
fn first_line(text: &str, what: &str) -> Result<String, String> {
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(format!("{what} gave no password (empty first line)"));
    }
    Ok(line.to_string())
}

/// Reads the password file, refusing one that its group or others may read (or that is not a file).
pub fn read_password_file(path: &Path) -> Result<String, String> {
    let what = format!("[client] password_file {}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| format!("{what}: {e}"))?;
    // The mode of the file opened, not of the name a moment before (no race with a swapped file).
    let meta = f.metadata().map_err(|e| format!("{what}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{what}: not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{what} is readable by its group or others (mode {mode:04o}); refusing to use it: chmod 600 {}",
            path.display()
        ));
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(|e| format!("{what}: {e}"))?;
    first_line(&text, &what)
}

/// Runs the password command with `sh -c` and takes the first line it prints.
pub fn run_password_command(cmd: &str) -> Result<String, String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("[client] password_command: cannot run sh: {e}"))?;
    let mut line = String::new();
    let read = std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    // The rest of its output is not wanted; wait for it to end (it sees a closed pipe if it writes more).
    let status = child.wait().map_err(|e| format!("[client] password_command: {e}"))?;
    read.map_err(|e| format!("[client] password_command: reading its output: {e}"))?;
    if !status.success() {
        return Err(format!("[client] password_command failed ({status})"));
    }
    first_line(&line, "[client] password_command")
}

impl ClientConfig {
    /// The settings in force as a `[client]` table, defaults filled in, that [`parse`] reads back to the
    /// same settings (`mailroom check-config` prints it). The password itself is never in it.
    pub fn to_toml_value(&self) -> Result<toml::Value, String> {
        let (password_file, password_command) = match &self.password {
            Some(PasswordSource::File(p)) => (Some(p.clone()), None),
            Some(PasswordSource::Command(c)) => (None, Some(c.clone())),
            None => (None, None),
        };
        let tls = match self.tls {
            Tls::StartTls => "starttls",
            Tls::Implicit => "tls",
            _ => "none",
        };
        let section = Section {
            server: Some(self.server.clone()),
            domain: Some(self.domain.clone()),
            tls: Some(tls.into()),
            user: self.user.clone(),
            helo: self.helo.clone(),
            from: self.from.clone(),
            timeout: Some(mailroom_server::config::format_duration(self.timeout)),
            password_file,
            password_command,
            cafile: self.cafile.clone(),
            insecure: Some(self.insecure),
            allow_plaintext_auth: Some(self.allow_plaintext_auth),
        };
        toml::Value::try_from(section).map_err(|e| e.to_string())
    }

    /// Reads what the settings name now, as a send would: the password file (its mode too) and the CA
    /// file. The password command is not run (it runs only when a server asks).
    pub fn check_files(&self) -> Result<(), String> {
        if let Some(PasswordSource::File(path)) = &self.password {
            read_password_file(path)?;
        }
        if let Some(ca) = &self.cafile {
            std::fs::File::open(ca).map_err(|e| format!("[client] cafile {}: {e}", ca.display()))?;
        }
        Ok(())
    }

    /// A client builder for these settings; or why it cannot be had. A password file is read now (a
    /// bad one stops us before the message is taken); a password command is only run once a server
    /// has offered AUTH.
    pub fn builder(&self) -> Result<ClientBuilder, String> {
        let mut b = Client::builder(self.server.clone())
            .timeout(self.timeout)
            .tls(self.tls)
            .insecure(self.insecure)
            .allow_plaintext_auth(self.allow_plaintext_auth);
        if let Some(ca) = &self.cafile {
            b = b.cafile(ca.clone());
        }
        match (&self.user, &self.password) {
            (Some(user), Some(PasswordSource::File(path))) => {
                b = b.credentials(user.clone(), read_password_file(path)?)
            }
            (Some(user), Some(PasswordSource::Command(cmd))) => {
                let cmd = cmd.clone();
                b = b.credentials_with(user.clone(), Arc::new(move || run_password_command(&cmd)));
            }
            _ => {}
        }
        if let Some(h) = &self.helo {
            b = b.helo_name(h.clone());
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_other_sections() {
        let c = parse("").unwrap();
        assert_eq!((c.server.as_str(), c.tls), ("127.0.0.1:2525", Tls::None));
        let c = parse("[server]\ndomains = [\"x\"]\n[limits]\nmax_message_size = 10\n[client]\nserver = \"mx:587\"\ntls = \"starttls\"\nuser = \"u\"\npassword_command = \"echo pw\"\n")
            .unwrap();
        assert_eq!((c.server.as_str(), c.tls, c.user.as_deref()), ("mx:587", Tls::StartTls, Some("u")));
        assert!(!c.allow_plaintext_auth);
        let c = parse("[client]\nuser = \"u\"\npassword_command = \"echo pw\"\nallow_plaintext_auth = true\n").unwrap();
        assert!(c.allow_plaintext_auth && c.tls == Tls::None);
        assert!(parse("[client]\nsever = \"typo\"\n").is_err());
        assert!(parse("[client]\ntls = \"maybe\"\n").is_err());
    }

    #[test]
    fn auth_and_tls_keys() {
        let base = Path::new("/etc/mailroom");
        let c = parse_in(
            "[client]\ntls = \"tls\"\ncafile = \"ca.pem\"\nuser = \"a@x\"\npassword_file = \"pw\"\n",
            Some(base),
        )
        .unwrap();
        assert_eq!(c.cafile.as_deref(), Some(Path::new("/etc/mailroom/ca.pem")));
        assert_eq!(c.password, Some(PasswordSource::File("/etc/mailroom/pw".into())));
        for bad in [
            "user = \"a\"\npassword_file = \"/x\"\n",
            "user = \"a\"\n",
            "password_file = \"/x\"\n",
            "user = \"a\"\npassword_file = \"/x\"\npassword_command = \"echo\"\n",
            "cafile = \"/ca.pem\"\n",
            "insecure = true\n",
            "tls = \"starttls\"\ninsecure = true\ncafile = \"/ca.pem\"\n",
        ] {
            assert!(parse(&format!("[client]\n{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_flag_is_ignored_when_privileged() {
        let ids = |ruid, euid, rgid, egid| Some(Ids { ruid, euid, rgid, egid });
        assert!(!is_elevated(ids(1000, 1000, 100, 100)));
        assert!(is_elevated(ids(1000, 0, 100, 100)), "set-user-id root");
        assert!(is_elevated(ids(1000, 1000, 100, 8)), "set-group-id");
        assert!(is_elevated(None), "unknown: do not trust the caller's file");
        assert!(!is_elevated(ids(0, 8, 0, 8)), "root calling a set-user-id binary is not elevated by it");
        let path = Path::new("/tmp/attacker-wrote-this.toml");
        assert_eq!(locate(Some(path), false), Some((path.to_path_buf(), true)));
        assert_eq!(locate(Some(path), true), None);
        // The named file is not even opened: an elevated load gives the defaults.
        assert_eq!(load(Some(Path::new("/nonexistent/x.toml")), true).unwrap(), parse("").unwrap());
        assert!(load(Some(Path::new("/nonexistent/x.toml")), false).is_err());
    }

    #[test]
    fn proc_status_ids() {
        let text = "Name:\tmailroom\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert_eq!(parse_status(text), Some(Ids { ruid: 1000, euid: 0, rgid: 100, egid: 100 }));
        assert_eq!(parse_status("Uid:\tx\n"), None);
        let me = process_ids().expect("/proc/self/status");
        assert_eq!(me.ruid, me.euid, "the test itself runs unprivileged");
    }

    #[test]
    fn password_sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\r\nsecond line\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password_file(&f).unwrap(), "s3cret");
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_password_file(&f).unwrap_err();
            assert!(e.contains("readable by its group or others") && e.contains("chmod 600"), "{e}");
        }
        assert!(read_password_file(dir.path()).is_err());
        assert_eq!(run_password_command("printf 'from cmd\\nmore\\n'").unwrap(), "from cmd");
        assert!(run_password_command("exit 3").unwrap_err().contains("failed"));
        assert!(run_password_command("true").unwrap_err().contains("no password"));
    }
}

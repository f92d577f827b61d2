//! `mailroom completions SHELL` (bash, zsh, fish, ...: the script on stdout) and the hidden
//! `mailroom man DIR` (one roff man page per command, `mailroom.1`, `mailroom-serve.1`,
//! `mailroom-user-add.1`, ...), both generated from the command-line definition itself, so they never
//! drift from it. The Debian package ships both (generated at package build time, see
//! packaging/build-deb).

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Writes the completion script for `shell` to stdout.
pub fn run_completions(shell: clap_complete::Shell, mut cmd: clap::Command) -> anyhow::Result<()> {
    let name = cmd.get_name().to_string();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out.flush().context("writing the completions")
}

/// Writes a man page for `cmd` and every (visible) subcommand into `dir` (created if needed).
pub fn run_man(dir: &Path, cmd: clap::Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = cmd;
    cmd.build();
    write_pages(dir, &cmd, cmd.get_name())
}

/// The page of `cmd` as `<name>.1`, then its subcommands' as `<name>-<sub>.1`.
fn write_pages(dir: &Path, cmd: &clap::Command, name: &str) -> anyhow::Result<()> {
    // The page's title is the file's name (mailroom-user-add), as man(1) looks it up.
    let page_cmd = cmd.clone().name(name.to_string());
    let mut roff = Vec::new();
    clap_mangen::Man::new(page_cmd).render(&mut roff).context("rendering a man page")?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_pages(dir, sub, &format!("{name}-{}", sub.get_name()))?;
    }
    Ok(())
}

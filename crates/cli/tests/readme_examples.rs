//! The README's examples run as written: every ```` ```sh ```` and ```` ```console ```` block of README.md, in
//! order, each with `bash -e` in one fresh temporary directory (also `$HOME`), the binary under test on
//! `PATH` as `mailroom` and as `target/release/mailroom`, and a `cargo` stand-in (`cargo build` does
//! nothing: the binary is built; `cargo run -- ARGS` runs it). A block preceded by a `<!-- no-test ... -->`
//! line is skipped (root, systemd, apt, network, or a server in the foreground); in a `console` block only
//! the `$ ` lines run. Whatever a block leaves running in the background is stopped (SIGTERM, then waited
//! for) when it ends, so the next block finds its port free. The README's contributing notes say the same.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest a single block may run (a hung server or prompt fails the test instead of hanging it).
const BLOCK_LIMIT: Duration = Duration::from_secs(120);

/// One runnable block: where it starts in the README, its language and its text.
#[derive(Debug, PartialEq)]
struct Block {
    line: usize,
    lang: String,
    text: String,
}

/// The `sh` and `console` blocks of `markdown`, without those marked `<!-- no-test ... -->`.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = markdown.lines().enumerate();
    let mut previous = "";
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            if !line.trim().is_empty() {
                previous = line.trim();
            }
            continue;
        };
        let lang = info.trim().to_owned();
        let mut text = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        let skipped = previous.starts_with("<!-- no-test");
        previous = "";
        if skipped || !(lang == "sh" || lang == "console") {
            continue;
        }
        if lang == "console" {
            text = text.lines().filter_map(|l| l.strip_prefix("$ ")).map(|l| format!("{l}\n")).collect();
        }
        out.push(Block { line: n + 1, lang, text });
    }
    out
}

#[test]
fn the_extractor_takes_sh_and_console_blocks_and_honours_no_test() {
    let md = "text\n```sh\necho one\n```\n<!-- no-test: needs root -->\n```sh\nsudo x\n```\n```toml\na = 1\n```\n\
              ```console\n$ echo two\noutput line\n```\n```text\nmailroom queue show ID\n```\n";
    let b = blocks(md);
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!((b[0].line, b[0].text.as_str()), (2, "echo one\n"));
    assert_eq!((b[1].lang.as_str(), b[1].text.as_str()), ("console", "echo two\n"));
}

/// `bin/mailroom`, `target/release/mailroom` and `bin/cargo` in `dir`.
fn install(dir: &Path) {
    let binary = common::bin();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::os::unix::fs::symlink(binary, dir.join("bin/mailroom")).unwrap();
    std::os::unix::fs::symlink(binary, dir.join("target/release/mailroom")).unwrap();
    let cargo = "#!/bin/sh\n# The README test's cargo: the binary under test is what `cargo build --release` made.\n\
                 case \"$1\" in\n  build) exit 0 ;;\n  run) shift; while [ \"$#\" -gt 0 ] && [ \"$1\" != -- ]; do shift; done\n\
                 \x20   [ \"$1\" = -- ] && shift; exec mailroom \"$@\" ;;\n\
                 \x20 *) echo \"cargo $*: not available in the README test\" >&2; exit 1 ;;\nesac\n";
    std::fs::write(dir.join("bin/cargo"), cargo).unwrap();
    std::fs::set_permissions(dir.join("bin/cargo"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs one block in `dir`; Err with what it printed when it fails or overruns.
fn run_block(dir: &Path, n: usize, block: &Block) -> Result<(), String> {
    let script = dir.join(format!(".readme-block-{n}.sh"));
    // Background jobs of the block are stopped when it ends, however it ends.
    let prelude = "set -eo pipefail\ntrap 'jobs -p | xargs -r kill 2>/dev/null; wait' EXIT\n";
    std::fs::write(&script, format!("{prelude}{}", block.text)).unwrap();
    let path = format!("{}:{}", dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let mut child = Command::new("bash")
        .arg(&script)
        .current_dir(dir)
        .env("HOME", dir)
        .env("PATH", path)
        .env_remove("MAILROOM_CONFIG")
        .env_remove("MAILROOM_LOG")
        .env_remove("RUST_LOG")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("bash");
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > BLOCK_LIMIT {
            // The whole group: the block's shell and everything it started.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(st) if st.success() => Ok(()),
        st => Err(format!(
            "README.md block at line {} ({}) {}:\n{}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
            block.line,
            block.lang,
            st.map_or(format!("ran over {BLOCK_LIMIT:?}"), |s| format!("failed ({s})")),
            block.text
        )),
    }
}

#[test]
fn the_readme_examples_run_as_written_in_order() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let found = blocks(&readme);
    assert!(found.len() >= 4, "the extractor found only {} blocks", found.len());
    let dir = tempfile::tempdir().unwrap();
    install(dir.path());
    for (n, block) in found.iter().enumerate() {
        if let Err(report) = run_block(dir.path(), n, block) {
            panic!("{report}");
        }
    }
}

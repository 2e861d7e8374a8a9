//! Where the binary's text goes: stdout for data, stderr for people.
//!
//! A closed pipe is not an error to report: `lkpkg cache ls | head -1` ends quietly, as `cat`
//! does (exit status 141, the shell's code for SIGPIPE), where `println!` would panic. Any other
//! failure to write data to stdout (a full disk behind a redirection) stops the command with a
//! message and the environment's exit code; what cannot be written to stderr is dropped.

use std::io::Write;

/// Exit status of a process ended by a closed pipe (128 + SIGPIPE).
pub const CLOSED_PIPE: i32 = 141;

/// Writes data to stdout (see the module docs).
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        exit_on_write_error(&e);
    }
}

/// stdout as a stream, for data written piece by piece (tables, JSON documents, `cache
/// export -o -`): buffered, and its write errors returned, so that a closed pipe ends the
/// command as [`is_closed_pipe`] says and any other failure is reported.
pub fn data() -> std::io::BufWriter<std::io::StdoutLock<'static>> {
    std::io::BufWriter::new(std::io::stdout().lock())
}

/// Writes a message to stderr; a failure to write it is ignored.
pub fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// Ends the process for a failed write to stdout.
pub fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(CLOSED_PIPE);
    }
    err(&format!("error: cannot write to stdout: {e}\n"));
    std::process::exit(i32::from(crate::exit::ENVIRONMENT));
}

/// Whether an error is a closed pipe somewhere in its chain.
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` to stdout through [`out`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::out(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` to stderr through [`err`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::err(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, outln};

/// Opens the cache at `dir`, printing what opening it repaired (a warning, never silent).
pub fn open_store(dir: &std::path::Path) -> anyhow::Result<lkpkg_engine::ops::cache::Store> {
    use anyhow::Context as _;
    let store = lkpkg_engine::ops::cache::Store::open(dir)
        .with_context(|| format!("cannot open the cache at `{}`", dir.display()))?;
    if let Some(notice) = store.notice() {
        errln!("warning: {notice}");
    }
    Ok(store)
}

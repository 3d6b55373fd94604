//! A directory of logs for one test.
//!
//! Every process a test starts writes its stdout and stderr here. When the last handle is
//! dropped the directory is removed, unless the thread is panicking (the test failed) or
//! `SCAN_ENGINE_TEST_KEEP_LOGS=1` is set: then it is kept, and its path and the last lines of
//! every log in it are printed, so a failure explains itself in CI output.
//!
//! Logs live under `<workspace>/.test-logs/` (override with `SCAN_ENGINE_TEST_LOGS_DIR`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many lines of each log are printed when a test fails.
const TAIL_LINES: usize = 40;

/// A shared handle on one test's log directory. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TestLogs(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
}

impl TestLogs {
    /// A fresh log directory named after `name` (sanitised) plus a unique suffix.
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = std::env::var_os("SCAN_ENGINE_TEST_LOGS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::workspace_root().join(".test-logs"));
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "{}-{secs}-{}-{n}",
            sanitize(name),
            std::process::id()
        ));
        fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("cannot create log directory {}: {err}", dir.display()));
        TestLogs(Arc::new(Inner { dir }))
    }

    /// A log directory named after the running test (the test thread's name).
    pub fn for_current_test() -> Self {
        Self::new(&current_test_name())
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    /// A path for a file in the directory (not created).
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.dir.join(file)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let keep =
            std::env::var("SCAN_ENGINE_TEST_KEEP_LOGS").is_ok_and(|v| v == "1" || v == "true");
        if std::thread::panicking() {
            eprintln!(
                "\n==== test failed: logs kept in {} ====",
                self.dir.display()
            );
            print_tails(&self.dir);
        } else if keep {
            eprintln!("logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Prints the last lines of every `*.log` file in `dir`, sorted by name.
fn print_tails(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "log"))
        .collect();
    files.sort();
    for file in files {
        let text = fs::read_to_string(&file).unwrap_or_default();
        if text.trim().is_empty() {
            continue;
        }
        eprintln!("---- last lines of {} ----", file.display());
        eprintln!("{}", tail(&text, TAIL_LINES));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The running test's name, as libtest names its thread (`module::test_name`), or `test`.
pub fn current_test_name() -> String {
    std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .unwrap_or("test")
        .to_owned()
}

/// Keeps letters, digits, `-` and `_`; everything else becomes `_`.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_matches('_').chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitize("module::a test/name"), "module__a_test_name");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn logs_are_removed_when_the_test_passes() {
        let logs = TestLogs::new("logs-self-test");
        let dir = logs.dir().to_path_buf();
        fs::write(logs.path("x.log"), "hello").expect("write");
        let clone = logs.clone();
        drop(logs);
        assert!(dir.is_dir(), "still referenced");
        drop(clone);
        if std::env::var_os("SCAN_ENGINE_TEST_KEEP_LOGS").is_none() {
            assert!(!dir.exists(), "removed after the last handle");
        }
    }
}

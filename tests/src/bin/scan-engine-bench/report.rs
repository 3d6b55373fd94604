//! What every benchmark shares: the result table, percentiles, process memory, fd limits.

use std::time::Duration;

/// One row of a result table.
pub struct Row {
    pub metric: String,
    pub value: String,
    pub target: String,
    /// `Some(true)` met, `Some(false)` missed, `None` no target.
    pub met: Option<bool>,
}

impl Row {
    pub fn new(metric: impl Into<String>, value: impl Into<String>) -> Self {
        Row {
            metric: metric.into(),
            value: value.into(),
            target: String::new(),
            met: None,
        }
    }

    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

/// Prints `rows` as a Markdown table under a title line.
pub fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}\n");
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.metric.clone(),
                r.value.clone(),
                r.target.clone(),
                match r.met {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "**no**".to_owned(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let header = ["metric", "value", "target", "met"];
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 4]| {
        let mut s = String::from("|");
        for (c, w) in cols.iter().zip(widths) {
            s.push_str(&format!(" {c:<w$} |"));
        }
        s
    };
    println!("{}", line(header));
    let dashes = widths.map(|w| "-".repeat(w));
    println!("{}", line([&dashes[0], &dashes[1], &dashes[2], &dashes[3]]));
    for row in &cells {
        println!("{}", line([&row[0], &row[1], &row[2], &row[3]]));
    }
}

/// The `p`-th percentile (0..=100) of `sorted` (nearest rank); zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {path}: {e} (did the process exit?)"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{path} has no {field} line"))
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Raises the soft open-files limit to the hard limit (children inherit it).
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                eprintln!("bench: warning: could not raise the open-files limit");
            }
        }
    }
}

/// The soft open-files limit.
pub fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        0
    }
}

/// "2 cores, 23.4 GiB": the machine, described generically.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "? GiB".into());
    format!("{cores} cores, {mem}")
}

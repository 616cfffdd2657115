//! Parsers for the few `/proc` files the process provider reads.
//!
//! The text comes from the kernel but describes processes we do not control (a
//! process picks its own `comm`), so every parser
//! returns `None` or skips an entry on odd content rather than panicking.

/// The fields of `/proc/<pid>/stat` that the provider uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Field 1: the process id.
    pub pid: i32,
    /// Field 2: the executable's name, without the parentheses.
    pub comm: String,
    /// Field 3: `R`, `S`, `D`, `T`, `t`, `Z`, `X`, ….
    pub state: char,
    /// Field 5: the process group id.
    pub pgrp: i32,
    /// Field 9: the kernel's `PF_*` flags.
    pub flags: u64,
    /// Field 14: user-mode CPU time, in clock ticks.
    pub utime: u64,
    /// Field 15: kernel-mode CPU time, in clock ticks.
    pub stime: u64,
    /// Field 16: user-mode CPU time of waited-for children, in clock ticks.
    pub cutime: u64,
    /// Field 17: kernel-mode CPU time of waited-for children, in clock ticks.
    pub cstime: u64,
    /// Field 22: when the process started, in clock ticks after boot. Together with
    /// the pid it names one process (pids are reused, start times are not).
    pub starttime: u64,
}

impl Stat {
    /// Whether the process has exited (a zombie waiting to be reaped, or dead).
    pub fn is_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// Whether the process is stopped (SIGSTOP).
    pub fn is_stopped(&self) -> bool {
        self.state == 'T'
    }

    /// CPU time of the process itself, in clock ticks.
    pub fn own_ticks(&self) -> u64 {
        self.utime.saturating_add(self.stime)
    }

    /// CPU time of the children it has reaped, in clock ticks.
    pub fn children_ticks(&self) -> u64 {
        self.cutime.saturating_add(self.cstime)
    }
}

/// Parses one `/proc/<pid>/stat` line.
///
/// `comm` may contain spaces and parentheses, so it is everything between the first
/// `(` and the *last* `)`; the remaining fields are split on whitespace.
pub(crate) fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = line[..open].trim().parse().ok()?;
    let comm = line[open + 1..close].to_string();
    // Fields from 3 (state) on; index i here is field i + 3.
    let rest: Vec<&str> = line[close + 1..].split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    let mut state_chars = field(3)?.chars();
    let state = state_chars.next()?;
    if state_chars.next().is_some() {
        return None;
    }
    // cutime and cstime are signed in the kernel's format; negative values never
    // occur in practice, and are read as 0.
    let signed = |n: usize| -> Option<u64> { Some(field(n)?.parse::<i64>().ok()?.max(0) as u64) };
    Some(Stat {
        pid,
        comm,
        state,
        pgrp: field(5)?.parse().ok()?,
        flags: field(9)?.parse().ok()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
        cutime: signed(16)?,
        cstime: signed(17)?,
        starttime: field(22)?.parse().ok()?,
    })
}

/// Parses `/proc/<pid>/statm`: the resident set size, in pages (its second field).
pub(crate) fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Parses `/proc/uptime`: seconds since boot (its first field).
pub(crate) fn parse_uptime(text: &str) -> Option<f64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like `cat /proc/self/stat`: all 52 fields.
    const SLEEP: &str = "1234 (sleep) S 1 1234 1234 0 -1 4194304 100 0 0 0 5 3 7 2 20 0 1 0 98765 8273920 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn parses_a_plain_stat_line() {
        let stat = parse_stat(SLEEP).unwrap();
        assert_eq!(
            stat,
            Stat {
                pid: 1234,
                comm: "sleep".into(),
                state: 'S',
                pgrp: 1234,
                flags: 4194304,
                utime: 5,
                stime: 3,
                cutime: 7,
                cstime: 2,
                starttime: 98765,
            }
        );
        assert_eq!(stat.own_ticks(), 8);
        assert_eq!(stat.children_ticks(), 9);
        assert!(!stat.is_exited());
        assert!(!stat.is_stopped());
    }

    #[test]
    fn comm_may_hold_spaces_and_parentheses() {
        let line = SLEEP.replace("(sleep)", "(a) b (c) T 9)");
        let stat = parse_stat(&line).unwrap();
        assert_eq!(stat.comm, "a) b (c) T 9");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.pgrp, 1234);
        assert_eq!(stat.starttime, 98765);
        let empty = SLEEP.replace("(sleep)", "()");
        assert_eq!(parse_stat(&empty).unwrap().comm, "");
    }

    #[test]
    fn states() {
        for (state, exited, stopped) in [
            ('R', false, false),
            ('T', false, true),
            ('t', false, false),
            ('Z', true, false),
            ('X', true, false),
        ] {
            let line = SLEEP.replace(") S ", &format!(") {state} "));
            let stat = parse_stat(&line).unwrap();
            assert_eq!(
                (stat.is_exited(), stat.is_stopped()),
                (exited, stopped),
                "{state}"
            );
        }
    }

    #[test]
    fn odd_stat_lines_are_rejected_not_panics() {
        let truncated: String = SLEEP.split(' ').take(21).collect::<Vec<_>>().join(" ");
        for bad in [
            "",
            "\n",
            "1234",
            "1234 (sleep",
            "1234 sleep) S",
            ") 1234 (",
            "x (sleep) S 1 1234",
            "1234 (sleep) SS 1 1234 1234 0 -1 4194304 100 0 0 0 5 3 7 2 20 0 1 0 98765",
            "1234 (sleep) S 1 notanumber 1234 0 -1 4194304 100 0 0 0 5 3 7 2 20 0 1 0 98765",
            "1234 (sleep) S 1 1234 1234 0 -1 4194304 100 0 0 0 -5 3 7 2 20 0 1 0 98765",
            truncated.as_str(),
            "1234 (\u{fffd}\u{0}) S",
        ] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn negative_children_times_read_as_zero() {
        let line = SLEEP.replace(" 5 3 7 2 ", " 5 3 -7 -2 ");
        assert_eq!(parse_stat(&line).unwrap().children_ticks(), 0);
    }

    #[test]
    fn statm() {
        assert_eq!(parse_statm_resident("2016 194 170 5 0 112 0\n"), Some(194));
        assert_eq!(parse_statm_resident("2016"), None);
        assert_eq!(parse_statm_resident(""), None);
        assert_eq!(parse_statm_resident("1 -2 3"), None);
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime("12345.67 54321.00\n"), Some(12345.67));
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_uptime("abc 1"), None);
        assert_eq!(parse_uptime("-1 2"), None);
        assert_eq!(parse_uptime("NaN 2"), None);
    }
}

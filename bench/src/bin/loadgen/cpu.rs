//! CPU accounting: how much CPU the server processes and the load generator
//! used over a measured window.

use std::time::Instant;

/// CPU seconds (user + system, all threads) used so far by process `pid`.
fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// CPU seconds used so far by this process.
fn self_cpu_s() -> f64 {
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(u.ru_utime) + tv(u.ru_stime)
    }
}

/// CPU use (%) over the measured window of each of `servers` (`None` where
/// /proc could not tell) and of this process.
pub async fn cpu_window(
    servers: Vec<u32>,
    start: Instant,
    end: Instant,
) -> (Vec<Option<f64>>, f64) {
    let read = |servers: &[u32]| -> Vec<Option<f64>> {
        servers.iter().map(|&pid| proc_cpu_s(pid)).collect()
    };
    tokio::time::sleep_until(start.into()).await;
    let (s0, l0) = (read(&servers), self_cpu_s());
    tokio::time::sleep_until(end.into()).await;
    let (s1, l1) = (read(&servers), self_cpu_s());
    let secs = (end - start).as_secs_f64();
    let pct = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| 100.0 * (b - a) / secs);
    (
        s0.into_iter().zip(s1).map(|(a, b)| pct(a, b)).collect(),
        100.0 * (l1 - l0) / secs,
    )
}

/// CPU seconds used so far by process `pid`, summed over its threads from
/// `/proc/PID/task/*/schedstat` (nanoseconds on the CPU: fine enough for
/// windows of a few tens of ms, where `/proc/PID/stat`'s 10 ms ticks are
/// not); `/proc/PID/stat` where schedstat is missing. Time of threads that
/// exit inside the window is lost (servers' threads live as long as they do).
fn proc_cpu_fine_s(pid: u32) -> Option<f64> {
    let fine = || -> Option<f64> {
        let mut ns = 0u64;
        for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let s = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
            ns += s.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(ns as f64 / 1e9)
    };
    fine().or_else(|| proc_cpu_s(pid))
}

/// CPU time of some server processes and of this process at one moment.
pub struct CpuSnapshot {
    servers: Vec<Option<f64>>,
    own: f64,
}

pub fn snapshot(servers: &[u32]) -> CpuSnapshot {
    CpuSnapshot {
        servers: servers.iter().map(|&pid| proc_cpu_fine_s(pid)).collect(),
        own: self_cpu_s(),
    }
}

impl CpuSnapshot {
    /// CPU seconds since `self`: the servers' summed (`None` without servers,
    /// or where /proc could not tell), and this process's.
    pub fn until(&self, later: &CpuSnapshot) -> (Option<f64>, f64) {
        let servers = if self.servers.is_empty() {
            None
        } else {
            self.servers
                .iter()
                .zip(&later.servers)
                .map(|(a, b)| a.zip(*b).map(|(a, b)| b - a))
                .sum()
        };
        (servers, later.own - self.own)
    }
}

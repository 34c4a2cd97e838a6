//! What every load mode shares besides the target: the common options, the
//! runtime they run on, the hard time limit and the open-files limit.

use anyhow::Result;
use clap::Args;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct Common {
    /// Target URL, ws://127.x.x.x:PORT/path (`{i}` is replaced by the connection index).
    pub url: String,
    /// Number of source addresses 127.0.0.1 .. 127.0.0.N to spread connections over
    /// (each gives its own ephemeral-port range, to pass the 64k-port limit).
    #[arg(long, default_value_t = 1)]
    pub sources: u8,
    /// Worker threads for the load generator's runtime (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Handshakes in progress at once while connecting.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
    /// Label copied into the JSON output.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Hard limit on the whole run, in seconds (the process exits with status 3 past it).
    #[arg(long, default_value_t = 300.0)]
    pub max_time: f64,
}

pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    })
}

/// The run is bounded whatever happens: past `secs` the process exits.
pub fn watchdog(secs: f64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(secs));
        eprintln!("loadgen: hard time limit of {secs} s reached, exiting");
        std::process::exit(3);
    });
}

pub fn raise_nofile() {
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

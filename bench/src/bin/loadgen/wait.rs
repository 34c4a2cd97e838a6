//! The `wait` mode: block until the server under test accepts a handshake.

use anyhow::{Result, bail};
use clap::Args;
use std::time::{Duration, Instant};

use crate::target::{Target, client_config};

#[derive(Args)]
pub struct WaitArgs {
    url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

pub async fn wait(a: WaitArgs) -> Result<()> {
    let target = Target::new(&a.url, 1).await?;
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    let mut last_err = String::new();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), target.connect(0, client_config())).await
        {
            Ok(Ok(mut ws)) => {
                let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
                return Ok(());
            }
            Ok(Err(e)) => last_err = format!("{e:#}"),
            Err(_) => last_err = "handshake timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{} not ready after {} s: {last_err}", a.url, a.timeout)
}

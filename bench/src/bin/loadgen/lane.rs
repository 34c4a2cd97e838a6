//! The closed-loop message engine behind `echo` and `relay`: stamped
//! messages kept in flight on a lane and timed when they come back.

use anyhow::{Result, bail};
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::target::Ws;

const MAGIC: &[u8; 2] = b"LG";

pub struct EchoShared {
    pub base: Instant,
    pub warm_end: Instant,
    pub end: Instant,
    pub inflight: usize,
    pub size: usize,
    pub text: bool,
    /// Paced (open loop, `--rate`): one message per lane this often.
    pub every: Option<Duration>,
}

impl EchoShared {
    fn make(&self) -> Message {
        let t = self.base.elapsed().as_nanos() as u64;
        if self.text {
            let mut s = String::with_capacity(self.size);
            s.push_str("LG");
            s.push_str(&format!("{t:016x}"));
            while s.len() < self.size {
                s.push('x');
            }
            Message::Text(s.into())
        } else {
            let mut v = Vec::with_capacity(self.size);
            v.extend_from_slice(MAGIC);
            v.extend_from_slice(&t.to_le_bytes());
            v.resize(self.size.max(10), b'x');
            Message::Binary(Bytes::from(v))
        }
    }

    /// The send timestamp carried by one of our messages.
    fn stamp(&self, m: &Message) -> Option<u64> {
        match m {
            Message::Binary(b) if b.len() >= 10 && &b[..2] == MAGIC => {
                Some(u64::from_le_bytes(b[2..10].try_into().ok()?))
            }
            Message::Text(t) if t.len() >= 18 && t.as_bytes()[..2] == *MAGIC => {
                u64::from_str_radix(&t.as_str()[2..18], 16).ok()
            }
            _ => None,
        }
    }
}

#[derive(Default)]
pub struct EchoStats {
    pub received: u64,
    pub in_window: u64,
    pub lat_ns: Vec<u32>,
    pub lost: u64,
    /// Paced sends skipped because the lane was at its in-flight cap.
    pub skipped: u64,
    pub error: Option<String>,
}

impl EchoStats {
    /// Counts one of our messages back, sent at `t`; its latency counts
    /// if it came back inside the measured window.
    fn record(&mut self, sh: &EchoShared, t: u64) {
        self.received += 1;
        let now = Instant::now();
        if now >= sh.warm_end && now < sh.end {
            self.in_window += 1;
            let lat = (now - sh.base).as_nanos() as u64 - t;
            self.lat_ns.push(lat.min(u32::MAX as u64) as u32);
        }
    }
}

/// One closed loop: messages are written to `tx` and come back on `rx`,
/// the same connection for `echo` (`tx` is `None`), a sender and its
/// receiver for `relay`.
pub struct Lane {
    pub rx: Ws,
    pub tx: Option<Ws>,
}

impl Lane {
    fn tx(&mut self) -> &mut Ws {
        match &mut self.tx {
            Some(tx) => tx,
            None => &mut self.rx,
        }
    }

    /// A separate sender gets nothing back but pings: read (and so answer)
    /// those without waiting.
    fn drain_sender(&mut self, sh: &EchoShared) -> Result<()> {
        let Some(tx) = &mut self.tx else {
            return Ok(());
        };
        while let Some(r) = tx.next().now_or_never() {
            match r {
                None => bail!("server closed the sender"),
                Some(m) => {
                    if sh.stamp(&m?).is_some() {
                        bail!("the sender got its message back");
                    }
                }
            }
        }
        Ok(())
    }
}

pub async fn echo_conn(mut lane: Lane, sh: Arc<EchoShared>, offset: Duration) -> EchoStats {
    let mut st = EchoStats::default();
    let r = match sh.every {
        Some(every) => paced_loop(&mut lane, &sh, &mut st, every, offset).await,
        None => echo_loop(&mut lane, &sh, &mut st).await,
    };
    if let Err(e) = r {
        st.error = Some(format!("{e:#}"));
    }
    let close = Duration::from_millis(500);
    if let Some(tx) = &mut lane.tx {
        let _ = tokio::time::timeout(close, tx.close(None)).await;
    }
    let _ = tokio::time::timeout(close, lane.rx.close(None)).await;
    st
}

async fn echo_loop(lane: &mut Lane, sh: &EchoShared, st: &mut EchoStats) -> Result<()> {
    tokio::time::sleep_until(sh.base.into()).await;
    let mut inflight = 0usize;
    for _ in 0..sh.inflight {
        lane.tx().feed(sh.make()).await?;
        inflight += 1;
    }
    lane.tx().flush().await?;
    let grace_end = sh.end + Duration::from_secs(2);
    let mut on_msg = |m: Message, ws_feed: &mut Vec<Message>, inflight: &mut usize| {
        let Some(t) = sh.stamp(&m) else { return };
        *inflight -= 1;
        st.record(sh, t);
        if Instant::now() < sh.end {
            ws_feed.push(sh.make());
            *inflight += 1;
        }
    };
    let mut out = Vec::with_capacity(sh.inflight);
    while inflight > 0 {
        let m = match tokio::time::timeout_at(grace_end.into(), lane.rx.next()).await {
            Err(_) => {
                st.lost += inflight as u64;
                break;
            }
            Ok(None) => bail!("server closed the connection"),
            Ok(Some(r)) => r?,
        };
        on_msg(m, &mut out, &mut inflight);
        // Drain whatever else is already here before writing: one flush per batch.
        while let Some(r) = lane.rx.next().now_or_never() {
            match r {
                None => bail!("server closed the connection"),
                Some(m) => on_msg(m?, &mut out, &mut inflight),
            }
        }
        lane.drain_sender(sh)?;
        let tx = lane.tx();
        for m in out.drain(..) {
            tx.feed(m).await?;
        }
        tx.flush().await?;
    }
    Ok(())
}

/// The open loop (`--rate`): one message every `every` (from `offset` past
/// the start), whatever comes back, while fewer than `inflight` are out.
/// A lane that falls behind does not catch up in a burst: what it could
/// not send on time is skipped and counted.
async fn paced_loop(
    lane: &mut Lane,
    sh: &EchoShared,
    st: &mut EchoStats,
    every: Duration,
    offset: Duration,
) -> Result<()> {
    tokio::time::sleep_until(sh.base.into()).await;
    let grace_end = sh.end + Duration::from_secs(2);
    let mut next = sh.base + offset;
    let mut inflight = 0usize;
    loop {
        let now = Instant::now();
        if now >= sh.end && inflight == 0 {
            break;
        }
        if now >= grace_end {
            st.lost += inflight as u64;
            break;
        }
        if now >= sh.end || inflight >= sh.inflight {
            // Nothing more may be sent now: skip what falls due meanwhile.
            while next + every <= now {
                next += every;
                if now < sh.end {
                    st.skipped += 1;
                }
            }
        }
        let can_send = now < sh.end && inflight < sh.inflight;
        tokio::select! {
            r = lane.rx.next() => {
                let m = match r {
                    None => bail!("server closed the connection"),
                    Some(r) => r?,
                };
                if let Some(t) = sh.stamp(&m) {
                    inflight = inflight.saturating_sub(1);
                    st.record(sh, t);
                }
            }
            _ = tokio::time::sleep_until(next.into()), if can_send => {
                lane.tx().send(sh.make()).await?;
                inflight += 1;
                next += every;
            }
            _ = tokio::time::sleep_until(grace_end.into()) => {}
        }
        lane.drain_sender(sh)?;
    }
    Ok(())
}

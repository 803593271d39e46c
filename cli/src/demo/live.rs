//! Live mode, after the script: bookings through the gateway at a steady rate, and one summary line
//! refreshed every second (in place on a terminal, every [`PLAIN_EVERY`] seconds otherwise) until the
//! user stops the demo.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{Semaphore, mpsc};

use super::checks::Reply;
use super::report::{self, LiveStats};
use super::script::{BOOKING_PATH, Demo};

/// Bookings in flight at most; beyond that, ticks are skipped rather than queued.
pub const MAX_IN_FLIGHT: usize = 64;
/// Without a terminal, how many seconds between two summary lines.
pub const PLAIN_EVERY: u64 = 10;

/// Aborts the task it holds when dropped, so stopping the demo stops its traffic.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Demo {
    /// Sends `rps` bookings a second through the gateway and prints the summary every second. Returns
    /// only on an error (a process died); the caller stops it on Ctrl-C.
    pub async fn live(&mut self, rps: u32) -> Result<()> {
        let token_file = self.token_file.display().to_string();
        println!("\n{}\n", report::try_it(&self.plan, &self.folder_text(), &token_file));
        let (sender, mut replies) = mpsc::channel::<Reply>(MAX_IN_FLIGHT);
        let url = self.plan.gateway_url(BOOKING_PATH);
        // Every step is applied by now: booking requires the JWT of step 06.
        let token = Some(format!("Bearer {}", self.jwt));
        let driver = AbortOnDrop(tokio::spawn(drive(self.http.clone(), url, token, rps.max(1), sender)));
        let terminal = std::io::stdout().is_terminal();
        let mut stats = LiveStats::default();
        let mut second = tokio::time::interval(Duration::from_secs(1));
        second.tick().await;
        let mut seconds = 0u64;
        loop {
            tokio::select! {
                Some(reply) = replies.recv() => stats.record(&reply),
                _ = second.tick() => {
                    seconds += 1;
                    stats.rotate();
                    if terminal {
                        print!("\r{}\x1b[K", stats.line());
                        let _ = std::io::stdout().flush();
                    } else if seconds.is_multiple_of(PLAIN_EVERY) {
                        println!("{}", stats.line());
                    }
                    if let Err(err) = self.procs.check_alive() {
                        drop(driver);
                        if terminal {
                            println!();
                        }
                        return Err(err);
                    }
                }
            }
        }
    }
}

/// Starts a booking every `1/rps` seconds and sends each reply to `out`.
async fn drive(http: super::client::Http, url: String, token: Option<String>, rps: u32, out: mpsc::Sender<Reply>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rps);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let (http, url, token, out) = (http.clone(), url.clone(), token.clone(), out.clone());
        tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = token.iter().map(|t| ("authorization", t.as_str())).collect();
            let reply = Reply::from_result(http.get(&url, &headers).await);
            let _ = out.send(reply).await;
            drop(slot);
        });
    }
}

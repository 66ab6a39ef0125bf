//! Standard input that a stop (SIGINT) can interrupt. A read from a pipe or terminal blocks
//! in the kernel, and our signal handlers restart it (SA_RESTART), so a player blocked on an
//! idle pipe would never see Ctrl-C. Here a thread does the blocking reads and the player
//! waits on a channel with a deadline, checking the stop flag between waits: a stop reads
//! as the end of the input, and the player then retracts and leaves as usual.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Chunks queued between the reader thread and the player, at most.
const QUEUED_CHUNKS: usize = 4;
const CHUNK_BYTES: usize = 64 * 1024;

/// Stdin read by a helper thread; reads end (as EOF) when `stop` is raised.
pub struct InterruptibleStdin {
    // A Mutex only to make the source Sync, as symphonia's media sources must be; one thread
    // reads, so it is never contended.
    rx: Mutex<Receiver<io::Result<Vec<u8>>>>,
    pending: Vec<u8>,
    at: usize,
    stop: Arc<AtomicBool>,
    done: bool,
}

impl InterruptibleStdin {
    /// Starts the reader thread.
    pub fn new(stop: Arc<AtomicBool>) -> InterruptibleStdin {
        let (tx, rx) = sync_channel(QUEUED_CHUNKS);
        std::thread::Builder::new()
            .name("dmix-stdin".into())
            .spawn(move || {
                let mut stdin = io::stdin().lock();
                loop {
                    let mut buf = vec![0u8; CHUNK_BYTES];
                    match stdin.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            buf.truncate(n);
                            if tx.send(Ok(buf)).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .ok();
        InterruptibleStdin { rx: Mutex::new(rx), pending: Vec::new(), at: 0, stop, done: false }
    }
}

impl Read for InterruptibleStdin {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.pending.len() {
            if self.done || self.stop.load(Ordering::Relaxed) {
                return Ok(0);
            }
            let got = match self.rx.lock() {
                Ok(rx) => rx.recv_timeout(Duration::from_millis(100)),
                Err(_) => Err(RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(Ok(chunk)) => {
                    self.pending = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.done = true,
            }
        }
        let n = out.len().min(self.pending.len() - self.at);
        out[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

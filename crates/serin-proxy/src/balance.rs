//! Spreading client connections evenly over the serving runtimes.
//!
//! With one runtime per core, each accepting on its own `SO_REUSEPORT`
//! listener, the kernel picks the runtime by a hash of the connection's
//! addresses. Over a few long-lived keep-alive connections (a load balancer
//! in front, a load generator) that leaves one core with noticeably more
//! connections than another, and its requests wait longer: the tail latency
//! is set by the busiest core. So a runtime that accepts a connection while it
//! has more open than another runtime hands it over to the one with the
//! fewest. That costs one hand-over per connection, never anything per
//! request, and keeps the counts within one of each other.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Handover = (std::net::TcpStream, SocketAddr);

/// The runtimes serving one proxy. One that has stopped stays listed and is
/// skipped (its inbox is closed): a proxy is served by a fixed set of them.
#[derive(Default)]
pub(crate) struct Balancer {
    members: Mutex<Vec<Arc<Seat>>>,
}

/// One runtime's open connections and the way to hand it more.
struct Seat {
    open: AtomicUsize,
    inbox: mpsc::UnboundedSender<Handover>,
}

impl Balancer {
    /// Adds a runtime; its connections come from [`Member::accept`].
    pub(crate) fn join(&self) -> Member {
        let (inbox, handed) = mpsc::unbounded_channel();
        let seat = Arc::new(Seat {
            open: AtomicUsize::new(0),
            inbox,
        });
        self.lock().push(seat.clone());
        Member { seat, handed }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Seat>>> {
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The runtime with the fewest open connections, if it has fewer than `me`.
    fn lighter_than(&self, me: &Arc<Seat>) -> Option<Arc<Seat>> {
        let mine = me.open.load(Ordering::Relaxed);
        let members = self.lock();
        members
            .iter()
            .filter(|s| !s.inbox.is_closed())
            .min_by_key(|s| s.open.load(Ordering::Relaxed))
            .filter(|s| s.open.load(Ordering::Relaxed) < mine)
            .cloned()
    }
}

/// One runtime's place in the [`Balancer`]. Once dropped, its inbox is closed
/// and no connection is handed to it.
pub(crate) struct Member {
    seat: Arc<Seat>,
    handed: mpsc::UnboundedReceiver<Handover>,
}

/// Counts a connection as open on its runtime until dropped.
pub(crate) struct Open(Arc<Seat>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Member {
    /// The next connection for this runtime to serve: one it accepted, unless
    /// another runtime has fewer open (then that one gets it), or one handed
    /// to it. Cancel-safe: a connection is never half taken.
    pub(crate) async fn accept(
        &mut self,
        balancer: &Balancer,
        listener: &TcpListener,
    ) -> std::io::Result<(TcpStream, SocketAddr, Open)> {
        loop {
            tokio::select! {
                Some((stream, peer)) = self.handed.recv() => {
                    // Counted as open by the runtime that handed it over.
                    let open = Open(self.seat.clone());
                    match TcpStream::from_std(stream) {
                        Ok(stream) => return Ok((stream, peer, open)),
                        Err(err) => {
                            tracing::debug!(%peer, %err, "a handed-over connection could not be registered");
                            continue;
                        }
                    }
                }
                accepted = listener.accept() => {
                    let (stream, peer) = accepted?;
                    let Some(target) = balancer.lighter_than(&self.seat) else {
                        self.seat.open.fetch_add(1, Ordering::Relaxed);
                        return Ok((stream, peer, Open(self.seat.clone())));
                    };
                    let stream = match stream.into_std() {
                        Ok(stream) => stream,
                        Err(err) => {
                            tracing::debug!(%peer, %err, "a connection could not be handed over");
                            continue;
                        }
                    };
                    target.open.fetch_add(1, Ordering::Relaxed);
                    let Err(mpsc::error::SendError((stream, peer))) = target.inbox.send((stream, peer)) else {
                        continue;
                    };
                    // The other runtime has stopped: serve it here after all.
                    target.open.fetch_sub(1, Ordering::Relaxed);
                    self.seat.open.fetch_add(1, Ordering::Relaxed);
                    let open = Open(self.seat.clone());
                    return TcpStream::from_std(stream).map(|s| (s, peer, open));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Kept = Arc<Mutex<Vec<(TcpStream, Open)>>>;

    /// Serves `member` until aborted: answers each connection with `name`,
    /// so the client sees who served it, and keeps it open in `kept`.
    fn serve(
        mut member: Member,
        balancer: Arc<Balancer>,
        listener: TcpListener,
        name: u8,
    ) -> (tokio::task::JoinHandle<()>, Kept) {
        let kept = Kept::default();
        let k = kept.clone();
        let task = tokio::spawn(async move {
            loop {
                let (mut s, _, open) = member.accept(&balancer, &listener).await.unwrap();
                s.write_all(&[name]).await.unwrap();
                k.lock().unwrap().push((s, open));
            }
        });
        (task, kept)
    }

    /// Connects `n` clients to `addr` one after another; who served each.
    async fn clients(addr: SocketAddr, n: usize) -> (Vec<u8>, Vec<TcpStream>) {
        let mut served = Vec::new();
        let mut open = Vec::new();
        for _ in 0..n {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut who = [0u8];
            c.read_exact(&mut who).await.unwrap();
            served.push(who[0]);
            open.push(c);
        }
        (served, open)
    }

    fn open_counts(balancer: &Balancer) -> Vec<usize> {
        let seats = balancer.lock();
        seats
            .iter()
            .map(|s| s.open.load(Ordering::Relaxed))
            .collect()
    }

    #[tokio::test]
    async fn connections_accepted_by_one_runtime_are_spread_evenly() {
        let balancer = Arc::new(Balancer::default());
        let (a, b) = (balancer.join(), balancer.join());
        // Every client connects to A's listener, as an unlucky hash would
        // send them; B's listener gets none.
        let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = la.local_addr().unwrap();
        let (task_a, kept_a) = serve(a, balancer.clone(), la, b'a');
        let (task_b, kept_b) = serve(b, balancer.clone(), lb, b'b');
        let (served, _open) = clients(addr, 20).await;
        let by_a = served.iter().filter(|&&w| w == b'a').count();
        assert_eq!(by_a, 10, "{served:?}");
        assert_eq!(open_counts(&balancer), [10, 10]);
        // Closing B's connections frees its seats: the next ones go to B.
        kept_b.lock().unwrap().clear();
        assert_eq!(open_counts(&balancer), [10, 0]);
        let (served, _more) = clients(addr, 4).await;
        assert_eq!(served, b"bbbb");
        assert_eq!(kept_a.lock().unwrap().len(), 10);
        task_a.abort();
        task_b.abort();
    }

    #[tokio::test]
    async fn a_runtime_that_left_is_handed_nothing() {
        let balancer = Arc::new(Balancer::default());
        let (a, b) = (balancer.join(), balancer.join());
        drop(b);
        let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = la.local_addr().unwrap();
        let (task, kept) = serve(a, balancer.clone(), la, b'a');
        let (served, _open) = clients(addr, 5).await;
        assert_eq!(served, b"aaaaa");
        assert_eq!(kept.lock().unwrap().len(), 5);
        task.abort();
    }
}

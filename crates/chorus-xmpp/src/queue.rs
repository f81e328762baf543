//! A session's bounded queue: many senders (the router, on behalf of other
//! sessions and nodes), one receiver (the session's driver). It behaves like
//! `tokio::sync::mpsc`'s bounded channel for the calls the router and the
//! sessions make, but holds no buffer while it is empty. tokio's channel
//! allocates a block of 32 slots when it is made, about 1.3 KiB with its
//! header, and every idle session kept one; this one is about 150 bytes
//! until something waits in it, and gives its buffer back once drained.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
pub use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

/// Slots a drained queue keeps instead of freeing its buffer.
const KEPT_SLOTS: usize = 8;

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    /// The receiver closed the queue or was dropped.
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the receiver (a permit is kept if it is not waiting yet).
    wake: Notify,
    cap: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side; cloned for every holder.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving side.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A queue holding at most `cap` items (at least one).
pub fn channel<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            closed: false,
        }),
        wake: Notify::new(),
        cap: cap.max(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Queues `item`, or hands it back if the queue is full or closed.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut st = self.shared.lock();
        if st.closed {
            return Err(TrySendError::Closed(item));
        }
        if st.items.len() >= self.shared.cap {
            return Err(TrySendError::Full(item));
        }
        st.items.push_back(item);
        drop(st);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Items the queue can take now.
    pub fn capacity(&self) -> usize {
        self.shared.cap - self.shared.lock().items.len()
    }

    /// Items the queue can hold.
    pub fn max_capacity(&self) -> usize {
        self.shared.cap
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut st = self.shared.lock();
            st.senders -= 1;
            st.senders == 0
        };
        if last {
            self.shared.wake.notify_one();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and nothing waits.
    /// Cancel-safe: an item is taken only when this returns it.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            match self.try_recv() {
                Ok(item) => return Some(item),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => self.shared.wake.notified().await,
            }
        }
    }

    /// The next item if one waits.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut st = self.shared.lock();
        match st.items.pop_front() {
            Some(item) => {
                if st.items.is_empty() && st.items.capacity() > KEPT_SLOTS {
                    st.items = VecDeque::new();
                }
                Ok(item)
            }
            None if st.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Refuses further items; those already queued can still be taken.
    pub fn close(&mut self) {
        self.shared.lock().closed = true;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.closed = true;
        st.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_order_and_refused_once_closed() {
        let (tx, mut rx) = channel(2);
        assert!(tx.try_send(1).is_ok() && tx.try_send(2).is_ok());
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!((tx.capacity(), tx.max_capacity()), (0, 2));
        assert_eq!(rx.try_recv(), Ok(1));
        rx.close();
        assert!(matches!(tx.try_send(4), Err(TrySendError::Closed(4))));
        assert_eq!(rx.try_recv(), Ok(2), "what was queued before the close is kept");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_dropped_receiver_refuses_and_frees_what_waited() {
        let (tx, rx) = channel(4);
        let item = Arc::new(());
        tx.try_send(item.clone()).expect("room");
        drop(rx);
        assert_eq!(
            Arc::strong_count(&item),
            1,
            "the queued copy is dropped with the receiver"
        );
        assert!(matches!(tx.try_send(item), Err(TrySendError::Closed(_))));
    }

    #[test]
    fn a_drained_queue_gives_its_buffer_back() {
        let (tx, mut rx) = channel(64);
        assert_eq!(
            rx.shared.lock().items.capacity(),
            0,
            "an idle queue holds no buffer"
        );
        for i in 0..40 {
            tx.try_send(i).expect("room");
        }
        while rx.try_recv().is_ok() {}
        assert_eq!(rx.shared.lock().items.capacity(), 0);
    }

    #[tokio::test]
    async fn recv_waits_for_an_item_and_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = channel(1);
        let tx2 = tx.clone();
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::task::yield_now().await;
        tx.try_send("hello").expect("room");
        drop(tx);
        drop(tx2);
        assert_eq!(waiter.await.expect("no panic"), (Some("hello"), None));
    }
}

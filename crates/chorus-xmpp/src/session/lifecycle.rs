//! A session's end: a disconnect parks a resumable session (the driver arms
//! its resumption timer) or ends it for good; a session dropped while still
//! bound (its task panicked) ends itself; a parked session whose window
//! passed is ended.

use super::{Session, State};
use crate::context::{Context, ParkedSession};
use crate::ns;
use crate::router::Routed;
use crate::xml::{self, ElementExt};
use minidom::Element;

/// A parked session's resumption window: the driver ends the session with
/// [`expire_parked`] once `after` has passed, unless it was resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the driver must arm the resumption timer"]
pub struct ParkTimer {
    /// The parked session.
    pub session_id: u64,
    /// How long it waits for resumption.
    pub after: std::time::Duration,
}

impl Session {
    /// The connection is gone. A resumable session is parked, and the
    /// driver must arm the returned timer; any other is ended (presence
    /// unavailable, unacknowledged messages kept offline).
    pub fn on_disconnect(
        mut self,
        rx: Option<crate::queue::Receiver<Routed>>,
        ended_by_error: bool,
    ) -> Option<ParkTimer> {
        let rx = rx.or_else(|| self.rx.take());
        let resumable = !ended_by_error
            && self.state == State::Bound
            && self.sm.as_ref().is_some_and(|s| s.resumable && s.id.is_some());
        let id = self.sm.as_ref().and_then(|s| s.id.clone());
        match (resumable, rx, id) {
            (true, Some(rx), Some(id)) => {
                tracing::debug!(jid = %self.full(), "session detached, waiting for resumption");
                self.out.clear();
                self.closed = false;
                let ctx = self.ctx.clone();
                let session_id = self.id;
                let timeout =
                    std::time::Duration::from_secs(ctx.config.stream_management.resume_timeout_secs);
                ctx.parked.park(
                    id,
                    ParkedSession {
                        session: Box::new(self),
                        rx,
                    },
                );
                Some(ParkTimer {
                    session_id,
                    after: timeout,
                })
            }
            (_, rx, _) => {
                self.finish(rx);
                None
            }
        }
    }

    /// Ends the session for good.
    pub(super) fn finish(&mut self, rx: Option<crate::queue::Receiver<Routed>>) {
        if self.state != State::Bound {
            return;
        }
        if self.available {
            let unavailable = xml::new("presence", ns::CLIENT).with_attr("type", "unavailable");
            self.available = false;
            self.broadcast_presence(unavailable);
        }
        let mut leftover: Vec<Element> = self.sm.take().map(|s| s.into_unacked()).unwrap_or_default();
        if let Some(mut rx) = rx {
            rx.close();
            while let Ok(item) = rx.try_recv() {
                if let Routed::Stanza(el) = item {
                    leftover.push(*el);
                }
            }
        }
        self.muc_leave_all();
        let user = self.user().to_owned();
        let resource = self.resource.clone().unwrap_or_default();
        self.ctx.router.unbind(&user, &resource, self.id);
        for el in leftover {
            self.store_unacked(el);
        }
        if self.ctx.router.resources(&user).is_empty() {
            self.ctx.user_limits.forget(&user);
        }
        self.state = State::Start;
    }

    /// Our resource was taken over by a new session.
    pub(super) fn resource_lost(&mut self) {
        if self.state == State::Bound {
            // A no-op when a local session took the resource over (the entry
            // is already theirs); removes ours when the new session is on
            // another node.
            let (user, resource) = (self.user().to_owned(), self.resource.clone().unwrap_or_default());
            self.ctx.router.unbind(&user, &resource, self.id);
            self.state = State::Start;
            self.sm = None;
        }
    }
}

impl Drop for Session {
    /// A session dropped while still bound was never ended: its task
    /// panicked (tokio drops the task's state while unwinding) or a driver
    /// lost it. It is ended here, as at a disconnect, so no ghost resource
    /// stays routable and no ghost occupant stays in a room.
    fn drop(&mut self) {
        if self.state != State::Bound {
            return;
        }
        tracing::error!(jid = %self.full(), "a session ended without a disconnect (did its task panic?); cleaning up");
        metrics::counter!("chorus_sessions_aborted_total").increment(1);
        let rx = self.rx.take();
        // A second panic while unwinding would abort the process.
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.finish(rx)));
        if ended.is_err() {
            let (user, resource) = (self.user().to_owned(), self.resource.clone().unwrap_or_default());
            self.ctx.router.unbind(&user, &resource, self.id);
        }
    }
}

/// The resumption window of a parked session has passed: ends it, unless
/// it was resumed (or ended) meanwhile.
pub fn expire_parked(ctx: &Context, session_id: u64) {
    if let Some(p) = ctx.parked.take_session(session_id) {
        tracing::debug!("resumption window passed; ending session");
        finish_parked(p);
    }
}

/// Ends a parked session that will not be resumed.
pub fn finish_parked(p: ParkedSession) {
    let ParkedSession { mut session, rx } = p;
    session.finish(Some(rx));
}

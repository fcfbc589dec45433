//! The messages a worker or joined driver sends the head, with reference
//! changes gathered: each run of `Release`s (or of `AddRefs`) goes as one
//! message.
//!
//! Dropping a value that holds many refs drops each handle on its own, and
//! each last handle here is a release for the head: 10,000 messages, each
//! queued, framed, decoded and handled under the head's lock by itself. So
//! releases are gathered in [`OutboundQueue`] and only a marker is queued,
//! with the first of them; the stream ([`Outbound`]) sends all that were
//! gathered when it reaches that marker. A message of any other kind first
//! queues the releases gathered so far (as one message) and then itself, so
//! nothing the head sees is reordered: a marker still finds its releases
//! only if nothing was queued after it, and a release never reaches the head
//! before a message sent before it (a submission that names the object, a
//! request that reads it).
//!
//! Messages that nobody waits on ([`WorkerToNode::awaits_nothing`]: a
//! direct call's record and result, reference changes) may also wait up to [`LINGER`] for
//! company before the stream hands them over. A stream of synchronous
//! actor calls sends three such messages per call; sent one by one, each
//! costs a write here, a wake-up and a pass at the head, CPU taken from the
//! caller and the actor. Lingering, a few calls' records go as one write.
//! Any other message ends the wait: it goes at once and everything queued
//! before it goes first, so the order the head sees is unchanged and a
//! request never waits behind a lingering record.

use crate::ids::ObjectId;
use crate::protocol::WorkerToNode;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;

/// The most ids one gathered message carries, far under the message limit.
const MAX_MERGED_IDS: usize = 1 << 16;

/// The longest a message nobody waits on stays queued for company: a few
/// synchronous calls' round trips, far under anything a person or a
/// timeout notices.
const LINGER: Duration = Duration::from_millis(1);

/// What waits to be sent: a message, or the marker of a run of releases.
enum Queued {
    Message(WorkerToNode),
    ReleasesOf(u64),
}

/// Releases gathered since the last message was queued.
#[derive(Default)]
struct Gathered {
    ids: Vec<ObjectId>,
    /// The number of the marker queued for `ids`.
    run: u64,
}

/// The sending end: where the client's messages and releases go.
pub(super) struct OutboundQueue {
    queue: UnboundedSender<Queued>,
    gathered: Arc<Mutex<Gathered>>,
}

/// The stream of messages to the head, read by the connection.
pub(super) struct Outbound {
    queued: UnboundedReceiver<Queued>,
    gathered: Arc<Mutex<Gathered>>,
    /// Taken off the queue, not yet sent, in order.
    taken: VecDeque<WorkerToNode>,
    /// How many of `taken` may not linger: while any is there, all go.
    urgent: usize,
    /// When the lingering messages go even if nothing else comes.
    linger: Option<Pin<Box<Sleep>>>,
    /// The queue's senders are gone: what is left goes at once.
    closed: bool,
}

/// A queue and the stream it feeds.
pub(super) fn channel() -> (OutboundQueue, Outbound) {
    let (queue, queued) = mpsc::unbounded_channel();
    let gathered = Arc::new(Mutex::new(Gathered::default()));
    let stream = Outbound {
        queued,
        gathered: gathered.clone(),
        taken: VecDeque::new(),
        urgent: 0,
        linger: None,
        closed: false,
    };
    (OutboundQueue { queue, gathered }, stream)
}

impl OutboundQueue {
    /// Queues `message` behind the releases gathered before it (dropped if
    /// the stream is gone: the process is losing the head anyway).
    pub(super) fn send(&self, message: WorkerToNode) {
        let mut gathered = self.gathered.lock();
        if !gathered.ids.is_empty() {
            let ids = std::mem::take(&mut gathered.ids);
            let _ = self.queue.send(Queued::Message(WorkerToNode::Release(ids)));
        }
        let _ = self.queue.send(Queued::Message(message));
    }

    /// Gathers `ids` to release; the first of a run queues its marker.
    pub(super) fn release(&self, ids: &[ObjectId]) {
        // With the head gone nothing will read them.
        if self.queue.is_closed() {
            return;
        }
        let mut gathered = self.gathered.lock();
        if gathered.ids.is_empty() {
            gathered.run += 1;
            let _ = self.queue.send(Queued::ReleasesOf(gathered.run));
        }
        gathered.ids.extend_from_slice(ids);
    }
}

impl Outbound {
    /// The next message to send, if one is queued: a marker gives the
    /// releases gathered since it, unless a later message took them.
    fn next_queued(&mut self, queued: Queued) -> Option<WorkerToNode> {
        match queued {
            Queued::Message(message) => Some(message),
            Queued::ReleasesOf(run) => {
                let mut gathered = self.gathered.lock();
                (gathered.run == run && !gathered.ids.is_empty())
                    .then(|| WorkerToNode::Release(std::mem::take(&mut gathered.ids)))
            }
        }
    }

    /// Takes what is queued now off the queue.
    fn take_queued(&mut self, cx: &mut Context<'_>) {
        while !self.closed {
            match self.queued.poll_recv(cx) {
                Poll::Ready(Some(queued)) => {
                    if let Some(message) = self.next_queued(queued) {
                        self.urgent += usize::from(!message.awaits_nothing());
                        self.taken.push_back(message);
                    }
                }
                Poll::Ready(None) => self.closed = true,
                Poll::Pending => return,
            }
        }
    }

    /// Whether the taken messages go now: something waits on one of them,
    /// the stream is ending, or they have lingered long enough.
    fn must_send(&mut self, cx: &mut Context<'_>) -> bool {
        if self.urgent > 0 || self.closed {
            return true;
        }
        let linger = self
            .linger
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + LINGER)));
        linger.as_mut().poll(cx).is_ready()
    }

    /// The next message, with the reference changes of its kind taken
    /// right after it appended (up to the first message of another kind).
    fn next_run(&mut self) -> Option<WorkerToNode> {
        let mut run = self.taken.pop_front()?;
        self.urgent -= usize::from(!run.awaits_nothing());
        let kind = std::mem::discriminant(&run);
        if let Some(ids) = reference_changes(&mut run) {
            while ids.len() < MAX_MERGED_IDS {
                let Some(next) = self.taken.front_mut() else {
                    break;
                };
                if std::mem::discriminant(&*next) != kind {
                    break;
                }
                let Some(more) = reference_changes(next) else {
                    break;
                };
                ids.append(more);
                self.taken.pop_front();
            }
        }
        if self.taken.is_empty() {
            self.linger = None;
        }
        Some(run)
    }
}

fn reference_changes(message: &mut WorkerToNode) -> Option<&mut Vec<ObjectId>> {
    match message {
        WorkerToNode::AddRefs(ids) | WorkerToNode::Release(ids) => Some(ids),
        _ => None,
    }
}

impl Stream for Outbound {
    type Item = WorkerToNode;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WorkerToNode>> {
        self.take_queued(cx);
        if self.taken.is_empty() {
            return match self.closed {
                true => Poll::Ready(None),
                false => Poll::Pending,
            };
        }
        if !self.must_send(cx) {
            return Poll::Pending;
        }
        Poll::Ready(self.next_run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn ids(range: std::ops::Range<u64>) -> Vec<ObjectId> {
        range.map(ObjectId).collect()
    }

    fn log(line: &str) -> WorkerToNode {
        WorkerToNode::Log {
            pid: 1,
            err: false,
            lines: vec![line.into()],
        }
    }

    fn describe(message: &WorkerToNode) -> String {
        let numbers = |ids: &[ObjectId]| ids.iter().map(|i| i.0).collect::<Vec<_>>();
        match message {
            WorkerToNode::AddRefs(ids) => format!("add {:?}", numbers(ids)),
            WorkerToNode::Release(ids) => format!("release {:?}", numbers(ids)),
            WorkerToNode::Log { lines, .. } => lines.join(" "),
            other => format!("{other:?}"),
        }
    }

    async fn sent(queue: OutboundQueue, stream: Outbound) -> Vec<String> {
        drop(queue);
        stream.map(|m| describe(&m)).collect().await
    }

    #[tokio::test]
    async fn releases_are_gathered_without_passing_a_message_sent_after_them() {
        let (queue, stream) = channel();
        queue.release(&ids(1..2));
        queue.release(&ids(2..4));
        queue.send(log("a"));
        // Gathered after "a": they must not go ahead of it through the
        // marker queued for 1..4, whose releases "a" already took.
        queue.release(&ids(4..5));
        queue.send(WorkerToNode::AddRefs(ids(5..6)));
        queue.send(WorkerToNode::AddRefs(ids(6..7)));
        queue.release(&ids(5..7));
        assert_eq!(
            sent(queue, stream).await,
            [
                "release [1, 2, 3]",
                "a",
                "release [4]",
                "add [5, 6]",
                "release [5, 6]"
            ]
        );
    }

    #[tokio::test]
    async fn releases_gathered_while_the_stream_reads_go_at_their_marker() {
        let (queue, mut stream) = channel();
        queue.send(log("a"));
        queue.release(&ids(1..2));
        assert_eq!(describe(&stream.next().await.unwrap()), "a");
        queue.release(&ids(2..3));
        assert_eq!(describe(&stream.next().await.unwrap()), "release [1, 2]");
        queue.release(&ids(3..4));
        queue.send(log("b"));
        assert_eq!(sent(queue, stream).await, ["release [3]", "b"]);
    }

    /// The message the stream hands over right now, if any.
    fn offered_now(stream: &mut Outbound) -> Option<String> {
        let mut context = Context::from_waker(std::task::Waker::noop());
        match Pin::new(stream).poll_next(&mut context) {
            Poll::Ready(message) => message.map(|m| describe(&m)),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn records_nobody_waits_on_linger_until_a_message_that_matters() {
        let (queue, mut stream) = channel();
        queue.release(&ids(1..2));
        queue.send(WorkerToNode::AddRefs(ids(2..3)));
        assert_eq!(offered_now(&mut stream), None, "a release and a ref linger");
        queue.send(log("a"));
        // Everything queued before "a" goes first, in order, and at once.
        let offered: Vec<_> = (0..3).map(|_| offered_now(&mut stream)).collect();
        assert_eq!(
            offered,
            [Some("release [1]"), Some("add [2]"), Some("a")].map(|m| m.map(String::from))
        );
    }

    #[tokio::test]
    async fn records_that_linger_go_alone_after_the_linger_time() {
        let (queue, mut stream) = channel();
        let queued = Instant::now();
        queue.release(&ids(1..3));
        let message = stream.next().await.expect("the release");
        assert_eq!(describe(&message), "release [1, 2]");
        assert!(queued.elapsed() >= LINGER);
        // The queue stays open: the release went without company.
        assert!(!queue.queue.is_closed());
    }

    #[tokio::test]
    async fn a_run_is_cut_at_the_id_limit() {
        let (queue, stream) = channel();
        for id in 0..(MAX_MERGED_IDS as u64 + 3) {
            queue.send(WorkerToNode::AddRefs(vec![ObjectId(id)]));
        }
        let sizes: Vec<usize> = {
            drop(queue);
            stream
                .map(|m| match m {
                    WorkerToNode::AddRefs(ids) => ids.len(),
                    other => panic!("{other:?}"),
                })
                .collect()
                .await
        };
        assert_eq!(sizes, [MAX_MERGED_IDS, 3]);
    }
}

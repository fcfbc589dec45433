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

use crate::ids::ObjectId;
use crate::protocol::WorkerToNode;
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio_stream::Stream;

/// The most ids one gathered message carries, far under the message limit.
const MAX_MERGED_IDS: usize = 1 << 16;

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
    /// The message that ended the last run, sent next.
    held: Option<WorkerToNode>,
}

/// A queue and the stream it feeds.
pub(super) fn channel() -> (OutboundQueue, Outbound) {
    let (queue, queued) = mpsc::unbounded_channel();
    let gathered = Arc::new(Mutex::new(Gathered::default()));
    let stream = Outbound {
        queued,
        gathered: gathered.clone(),
        held: None,
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

    /// Appends to `run` the queued reference changes of its kind, up to the
    /// first message of another kind (kept for next time).
    fn extend_run(&mut self, run: &mut WorkerToNode) {
        let kind = std::mem::discriminant(&*run);
        let Some(ids) = reference_changes(run) else {
            return;
        };
        while ids.len() < MAX_MERGED_IDS {
            let Ok(queued) = self.queued.try_recv() else {
                return;
            };
            let Some(mut next) = self.next_queued(queued) else {
                continue;
            };
            let same_kind = std::mem::discriminant(&next) == kind;
            match reference_changes(&mut next) {
                Some(more) if same_kind => ids.append(more),
                _ => {
                    self.held = Some(next);
                    return;
                }
            }
        }
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
        let mut next = match self.held.take() {
            Some(held) => held,
            None => loop {
                match self.queued.poll_recv(cx) {
                    Poll::Ready(Some(queued)) => {
                        if let Some(message) = self.next_queued(queued) {
                            break message;
                        }
                    }
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            },
        };
        self.extend_run(&mut next);
        Poll::Ready(Some(next))
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

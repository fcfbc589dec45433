//! The stream of messages a worker or joined driver sends the head, with
//! each run of reference changes merged into one message.
//!
//! Dropping a value that holds many refs drops each handle on its own, and
//! each last handle here is a `Release` for the head: 10,000 messages, each
//! framed, decoded and handled under the head's lock by itself. The stream
//! is read in order, so a run of `Release`s (or of `AddRefs`) waiting in the
//! queue can go as one message without reordering anything the head sees:
//! a message of another kind ends the run and goes next, on its own.

use crate::ids::ObjectId;
use crate::protocol::WorkerToNode;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::Stream;

/// The most ids one merged message carries, far under the message limit.
const MAX_MERGED_IDS: usize = 1 << 16;

pub(super) struct Outbound {
    queued: UnboundedReceiver<WorkerToNode>,
    /// The message that ended the last run, sent next.
    held: Option<WorkerToNode>,
}

impl Outbound {
    pub(super) fn new(queued: UnboundedReceiver<WorkerToNode>) -> Self {
        Outbound { queued, held: None }
    }

    /// Appends to `run` the queued reference changes of its kind, up to the
    /// first message of another kind (kept for next time).
    fn extend_run(&mut self, run: &mut WorkerToNode) {
        let kind = std::mem::discriminant(&*run);
        let Some(ids) = reference_changes(run) else {
            return;
        };
        while ids.len() < MAX_MERGED_IDS {
            let Ok(mut next) = self.queued.try_recv() else {
                return;
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
            None => match self.queued.poll_recv(cx) {
                Poll::Ready(Some(message)) => message,
                other => return other,
            },
        };
        self.extend_run(&mut next);
        Poll::Ready(Some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;
    use tokio_stream::StreamExt;

    fn ids(range: std::ops::Range<u64>) -> Vec<ObjectId> {
        range.map(ObjectId).collect()
    }

    fn describe(message: &WorkerToNode) -> String {
        match message {
            WorkerToNode::AddRefs(ids) => {
                format!("add {:?}", ids.iter().map(|i| i.0).collect::<Vec<_>>())
            }
            WorkerToNode::Release(ids) => {
                format!("release {:?}", ids.iter().map(|i| i.0).collect::<Vec<_>>())
            }
            WorkerToNode::Log { lines, .. } => format!("log {lines:?}"),
            other => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn runs_of_one_kind_merge_and_nothing_is_reordered() {
        let (sender, queued) = mpsc::unbounded_channel();
        for message in [
            WorkerToNode::Release(ids(1..2)),
            WorkerToNode::Release(ids(2..4)),
            WorkerToNode::AddRefs(ids(4..5)),
            WorkerToNode::AddRefs(ids(5..6)),
            WorkerToNode::Release(ids(4..5)),
            WorkerToNode::Log {
                pid: 1,
                err: false,
                lines: vec!["between".into()],
            },
            WorkerToNode::Release(ids(6..7)),
        ] {
            sender.send(message).unwrap();
        }
        drop(sender);
        let sent: Vec<String> = Outbound::new(queued).map(|m| describe(&m)).collect().await;
        assert_eq!(
            sent,
            [
                "release [1, 2, 3]",
                "add [4, 5]",
                "release [4]",
                "log [\"between\"]",
                "release [6]"
            ]
        );
    }

    #[tokio::test]
    async fn a_run_is_cut_at_the_id_limit() {
        let (sender, queued) = mpsc::unbounded_channel();
        for id in 0..(MAX_MERGED_IDS as u64 + 3) {
            sender
                .send(WorkerToNode::Release(vec![ObjectId(id)]))
                .unwrap();
        }
        drop(sender);
        let sizes: Vec<usize> = Outbound::new(queued)
            .map(|m| match m {
                WorkerToNode::Release(ids) => ids.len(),
                other => panic!("{other:?}"),
            })
            .collect()
            .await;
        assert_eq!(sizes, [MAX_MERGED_IDS, 3]);
    }
}

//! The actor's side of direct calls (Ray's direct actor transport): every
//! worker serves `oxray.ActorCalls/CallStream` on its node's address, so a
//! caller that knows where an actor lives sends it calls without passing
//! through the head. Each caller has its own stream: its calls arrive in
//! the order it sent them and join the worker's one task queue; results go
//! back on the same stream. The service requires the cluster token and,
//! when the cluster runs TLS, the same mutual TLS as every other endpoint.

use super::client::WorkerClient;
use super::task_queue::{QueuedTask, TaskQueue};
use crate::auth::RequireToken;
use crate::error::{Error, Result};
use crate::head::generated::actor_calls_server::{ActorCalls, ActorCallsServer};
use crate::protocol::{DirectCall, DirectResult};
use crate::wire::MAX_MESSAGE_BYTES;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};

/// A bound, not yet serving, actor-call endpoint: bound before the worker
/// says hello, which carries its address.
pub(super) struct CallListener {
    listener: std::net::TcpListener,
    pub(super) address: String,
}

impl CallListener {
    /// Binds a port on `ip`, the address of this worker's node.
    pub(super) fn bind(ip: IpAddr) -> Result<CallListener> {
        let bind = SocketAddr::new(ip, 0);
        let listener = std::net::TcpListener::bind(bind)
            .map_err(|e| Error::runtime(&format!("cannot listen for actor calls on {bind}"), e))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::runtime("cannot read the actor-call port", e))?
            .to_string();
        Ok(CallListener { listener, address })
    }

    /// Serves calls into `tasks` on the current runtime until it ends.
    pub(super) fn serve(
        self,
        tasks: Arc<TaskQueue>,
        client: Weak<WorkerClient>,
        token: &str,
    ) -> Result<()> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| Error::runtime("cannot set up the actor-call port", e))?;
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .map_err(|e| Error::runtime("cannot set up the actor-call port", e))?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let service = ActorCallsServer::new(CallService { tasks, client })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let service =
            tonic::service::interceptor::InterceptedService::new(service, RequireToken::new(token));
        let mut server = crate::tls::grpc_server()?;
        tokio::spawn(async move {
            let served = server
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                tracing::error!("actor-call service stopped: {e}");
            }
        });
        Ok(())
    }
}

struct CallService {
    tasks: Arc<TaskQueue>,
    /// Ends the calls whose cancel came before them (weak: the client's
    /// runtime runs this service).
    client: Weak<WorkerClient>,
}

type ResultStream =
    Pin<Box<dyn Stream<Item = std::result::Result<DirectResult, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl ActorCalls for CallService {
    type CallStreamStream = ResultStream;

    async fn call_stream(
        &self,
        request: tonic::Request<tonic::Streaming<DirectCall>>,
    ) -> std::result::Result<tonic::Response<ResultStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (reply, replies) = mpsc::unbounded_channel();
        let (tasks, client) = (self.tasks.clone(), self.client.clone());
        tokio::spawn(async move {
            // A malformed message ends the stream like a closed one: the
            // caller sees it end and asks the head what became of its calls.
            while let Ok(Some(call)) = inbound.message().await {
                let call = QueuedTask::Direct {
                    call,
                    reply: reply.clone(),
                };
                let cancelled = tasks.push_direct(call);
                if let (Some(cancelled), Some(client)) = (cancelled, client.upgrade()) {
                    super::executor::report_cancelled(&client, cancelled);
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            UnboundedReceiverStream::new(replies).map(Ok),
        )))
    }
}

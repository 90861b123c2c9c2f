//! The live event stream (server-sent events) that keeps the dashboard current.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::ApiState;
use super::servers::Server;
use crate::fleet::FleetEvent;

/// Server-sent events: `server` with a server's JSON each time it changes, and
/// `resync` when this stream fell behind and the client should reload all.
pub async fn events(
    State(state): State<ApiState>,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let fleet = state.fleet.clone();
    let stream = BroadcastStream::new(state.fleet.subscribe())
        .then(move |received| {
            let fleet = fleet.clone();
            async move {
                match received {
                    Ok(FleetEvent::ServerChanged(id)) => match fleet.db.server(id.as_str()).await {
                        Ok(Some(record)) => Event::default()
                            .event("server")
                            .json_data(Server::from_record(record, &fleet))
                            .unwrap_or_else(|_| Event::default().event("resync").data("{}")),
                        _ => Event::default().event("resync").data("{}"),
                    },
                    Ok(FleetEvent::InstallProgress {
                        server,
                        install_id,
                        module,
                        phase,
                        kind,
                        text,
                    }) => Event::default()
                        .event("install")
                        .json_data(serde_json::json!({
                            "server": server.as_str(), "install_id": install_id, "module": module,
                            "phase": phase, "kind": kind, "text": text,
                        }))
                        .unwrap_or_else(|_| Event::default().event("resync").data("{}")),
                    Ok(FleetEvent::RolloutChanged(id)) => {
                        Event::default().event("rollout").data(id.to_string())
                    }
                    Err(BroadcastStreamRecvError::Lagged(_)) => {
                        Event::default().event("resync").data("{}")
                    }
                }
            }
        })
        .map(Ok)
        .take_until(state.shutdown.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

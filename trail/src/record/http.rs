//! The fields of request and connection records: one record per HTTP
//! request the load balancer forwarded (`lbwitness.request`), one per TCP
//! connection it accepted or opened (`lbwitness.connection`). ECS names
//! where ECS has them (`http.*`, `url.*`, `user_agent.*`, `error.*`,
//! `source.nat.*`); what ECS has no place for sits under
//! `lbwitness.backend` and `lbwitness.connection`.

use serde::Serialize;

/// ECS `http.*`.
#[derive(Clone, Debug, Serialize)]
pub struct Http {
    /// `http.request.*`.
    pub request: HttpRequest,
    /// `http.response.*`, absent when no response was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponse>,
    /// `1.0` or `1.1`.
    pub version: &'static str,
}

/// ECS `http.request.*`.
#[derive(Clone, Debug, Serialize)]
pub struct HttpRequest {
    /// Bytes of the request as the client sent it, head and body.
    pub bytes: u64,
    /// The method as sent (ECS keeps its case).
    pub method: String,
}

/// ECS `http.response.*`.
#[derive(Clone, Debug, Serialize)]
pub struct HttpResponse {
    /// Bytes of the response as written to the client, head and body.
    pub bytes: u64,
    /// The final status code (interim 1xx responses are not counted).
    pub status_code: u16,
}

/// ECS `url.*`, after the privacy settings: the query string only when
/// configured, the path cut to its configured length.
#[derive(Clone, Debug, Serialize)]
pub struct Url {
    /// From the `Host` header, port removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The request target's path.
    pub path: String,
    /// The query, whole or its keys only, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// ECS `user_agent.*`.
#[derive(Clone, Debug, Serialize)]
pub struct UserAgent {
    /// The `User-Agent` header as sent (cut to the configured length).
    pub original: String,
}

/// ECS `error.*`: why a connection or request failed.
#[derive(Clone, Debug, Serialize)]
pub struct Error {
    /// A stable kebab-case code, e.g. `connection-refused`.
    pub code: &'static str,
    /// What happened, for a person.
    pub message: String,
}

/// ECS `source.nat` / `destination.nat`: the load balancer's side of the
/// backend connection (`source.nat`) and the backend (`destination.nat`).
#[derive(Clone, Debug, Serialize)]
pub struct Nat {
    /// Address.
    pub ip: std::net::IpAddr,
    /// Port.
    pub port: u16,
}

/// ECS `process.thread`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Thread {
    /// The thread id (the kernel's pid of the task).
    pub id: u32,
}

/// `lbwitness.backend`: how the request's backend was found.
#[derive(Clone, Debug, Serialize)]
pub struct Backend {
    /// For `ambiguous`: the backends (`ip:port`) any of which could have
    /// served it, sorted; empty when none could.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Vec<String>>,
    /// The backend's share of the request, in ns: first byte written to
    /// it to first byte read back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// `mapped` (forced by what the kernel saw), `exact` (by the operator's
    /// tag header) or `ambiguous`.
    pub mapping: &'static str,
    /// Why the mapping is ambiguous, e.g. `tie`, `events-lost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// `lbwitness.connection`: a TCP connection of the load balancer.
#[derive(Clone, Debug, Serialize)]
pub struct Connection {
    /// `true` for a connection open before the agent followed its process
    /// (found in `/proc`): its start is when it was found, and its byte
    /// counts start there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_agent: Option<bool>,
    /// For a client connection: the backend connections
    /// (`lb-ip:port->backend-ip:port`) its requests were mapped to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<String>>,
    /// Who closed first: `local` (the load balancer), `peer`, or `unknown`.
    pub closed_by: &'static str,
    /// Requests framed on it.
    pub requests: u64,
    /// Resets: `sent`, `received`, or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<&'static str>,
    /// TCP retransmissions the kernel made on it.
    pub retransmits: u64,
    /// `client-side` (accepted) or `backend-side` (opened).
    pub role: &'static str,
    /// Bytes the load balancer moved with splice(2), both ways: relayed
    /// through a pipe, never seen. A client connection spliced from its
    /// first byte is a TCP-mode relay: it names its backend and has no
    /// request records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spliced_bytes: Option<u64>,
}

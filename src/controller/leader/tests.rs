//! Unit tests of the Lease protocol against a scripted API server (kube-rs controller-rs'
//! `ApiServerVerifier` pattern, on tower-test's mock service): the cases a real-server
//! scenario cannot time on purpose — a lost create race, a lost replace race, a lease still
//! held by someone else, a lease that expired. Each scenario asserts the exact requests the
//! controller sends (method, path, body) and answers them as kube-apiserver would.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::*;

type ApiServer = Handle<Request<Body>, Response<Body>>;

fn client() -> (Api<Lease>, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Api::namespaced(kube::Client::new(service, "erratum"), "erratum"), handle)
}

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/erratum/leases";

/// The next request, checked against `method` and `path`; returns its JSON body (if any) and
/// a way to answer it.
async fn expect(
    server: &mut ApiServer,
    method: Method,
    path: &str,
) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = server.next_request().await.expect("the controller sent a request");
    assert_eq!(request.method(), method, "{} {}", request.method(), request.uri());
    assert_eq!(request.uri().path(), path, "{}", request.uri());
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (body, send)
}

fn answer(send: tower_test::mock::SendResponse<Response<Body>>, status: StatusCode, body: Value) {
    let resp = Response::builder().status(status).body(Body::from(serde_json::to_vec(&body).unwrap()));
    send.send_response(resp.unwrap());
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason})
}

fn lease(holder: &str, renewed_secs_ago: i64, transitions: i32) -> Value {
    let renew = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(renewed_secs_ago);
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": "erratum", "resourceVersion": "41"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": MicroTime(renew),
                 "leaseTransitions": transitions}
    })
}

#[tokio::test]
async fn no_lease_is_created_with_this_replica_as_holder() {
    let (api, mut server) = client();
    let controller = tokio::spawn(async move { try_acquire_or_renew(&api, "me").await });
    let (_, send) = expect(&mut server, Method::GET, &format!("{PATH}/{LEASE_NAME}")).await;
    answer(send, StatusCode::NOT_FOUND, status(404, "NotFound"));
    let (body, send) = expect(&mut server, Method::POST, PATH).await;
    assert_eq!(body["spec"]["holderIdentity"], "me");
    assert_eq!(body["spec"]["leaseTransitions"], 0);
    answer(send, StatusCode::CREATED, body);
    assert!(controller.await.unwrap().unwrap(), "created: this replica leads");
}

#[tokio::test]
async fn losing_the_create_race_is_not_leading_and_not_an_error() {
    let (api, mut server) = client();
    let controller = tokio::spawn(async move { try_acquire_or_renew(&api, "me").await });
    let (_, send) = expect(&mut server, Method::GET, &format!("{PATH}/{LEASE_NAME}")).await;
    answer(send, StatusCode::NOT_FOUND, status(404, "NotFound"));
    let (_, send) = expect(&mut server, Method::POST, PATH).await;
    answer(send, StatusCode::CONFLICT, status(409, "AlreadyExists"));
    assert!(!controller.await.unwrap().unwrap(), "another replica created it first");
}

#[tokio::test]
async fn a_lease_held_and_renewed_by_another_replica_is_left_alone() {
    let (api, mut server) = client();
    let controller = tokio::spawn(async move { try_acquire_or_renew(&api, "me").await });
    let (_, send) = expect(&mut server, Method::GET, &format!("{PATH}/{LEASE_NAME}")).await;
    answer(send, StatusCode::OK, lease("other", 3, 4));
    assert!(!controller.await.unwrap().unwrap());
    // The controller is done and its client dropped without another request: no replace of
    // a live lease.
    assert!(server.next_request().await.is_none(), "no write to a lease someone else holds");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_its_resource_version() {
    let (api, mut server) = client();
    let controller = tokio::spawn(async move { try_acquire_or_renew(&api, "me").await });
    let (_, send) = expect(&mut server, Method::GET, &format!("{PATH}/{LEASE_NAME}")).await;
    answer(send, StatusCode::OK, lease("other", 60, 4));
    let (body, send) = expect(&mut server, Method::PUT, &format!("{PATH}/{LEASE_NAME}")).await;
    assert_eq!(body["spec"]["holderIdentity"], "me");
    assert_eq!(body["spec"]["leaseTransitions"], 5, "a take-over counts a transition");
    assert_eq!(body["metadata"]["resourceVersion"], "41", "the precondition that makes races safe");
    answer(send, StatusCode::OK, body);
    assert!(controller.await.unwrap().unwrap());
}

#[tokio::test]
async fn losing_the_replace_race_is_not_leading() {
    let (api, mut server) = client();
    let controller = tokio::spawn(async move { try_acquire_or_renew(&api, "me").await });
    let (_, send) = expect(&mut server, Method::GET, &format!("{PATH}/{LEASE_NAME}")).await;
    answer(send, StatusCode::OK, lease("other", 60, 4));
    let (_, send) = expect(&mut server, Method::PUT, &format!("{PATH}/{LEASE_NAME}")).await;
    answer(send, StatusCode::CONFLICT, status(409, "Conflict"));
    assert!(!controller.await.unwrap().unwrap(), "409: someone else renewed or took it in between");
}

#[tokio::test]
async fn the_holder_renews_without_counting_a_transition_and_releases_on_shutdown() {
    let (api, mut server) = client();
    let renew = {
        let api = api.clone();
        tokio::spawn(async move { try_acquire_or_renew(&api, "me").await })
    };
    let (_, send) = expect(&mut server, Method::GET, &format!("{PATH}/{LEASE_NAME}")).await;
    answer(send, StatusCode::OK, lease("me", 2, 7));
    let (body, send) = expect(&mut server, Method::PUT, &format!("{PATH}/{LEASE_NAME}")).await;
    assert_eq!(body["spec"]["leaseTransitions"], 7);
    answer(send, StatusCode::OK, body);
    assert!(renew.await.unwrap().unwrap());

    let released = tokio::spawn(async move { release(&api, "me").await });
    let (_, send) = expect(&mut server, Method::GET, &format!("{PATH}/{LEASE_NAME}")).await;
    answer(send, StatusCode::OK, lease("me", 1, 7));
    let (body, send) = expect(&mut server, Method::PUT, &format!("{PATH}/{LEASE_NAME}")).await;
    assert!(body["spec"].get("holderIdentity").is_none_or(Value::is_null), "released: {body}");
    answer(send, StatusCode::OK, body);
    released.await.unwrap().unwrap();
}

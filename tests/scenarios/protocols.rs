//! HTTP/2 (h2c prior knowledge) and WebSocket upgrades through the proxy.

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_proxied_to_http1_upstreams() {
    let a = origin().await;
    let manifests =
        [backend("ns", "a", &[a.addr]), ingress("ns", "i", &[("h.example", "/", "Prefix", "a")])].concat();
    let h = Harness::start(&manifests).await;
    // HTTP/2 carries the host as :authority: put it in the URL and resolve it to the proxy.
    let url = format!("http://h.example:{}/echo", h.running().http_addr.port());
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("h.example", h.running().http_addr)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (client, url) = (h2.clone(), url.clone());
        tasks
            .push(tokio::spawn(async move { client.get(url).header("cookie", "a=1").send().await.unwrap() }));
    }
    for t in tasks {
        let resp = t.await.unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let echo: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(echo["headers"]["host"], format!("h.example:{}", h.running().http_addr.port()));
    }
    assert_eq!(a.hits(), 20);
    h.shutdown().await;
}

/// A WebSocket echo origin built on tungstenite (a real WebSocket peer).
async fn websocket_origin() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through() {
    let ws = websocket_origin().await;
    let manifests =
        [backend("ns", "ws", &[ws]), ingress("ns", "i", &[("h.example", "/", "Prefix", "ws")])].concat();
    let h = Harness::start(&manifests).await;
    let url = format!("ws://{}/chat", h.running().http_addr);
    let request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    let mut request = request;
    request.headers_mut().insert("host", "h.example".parse().unwrap());
    let (mut socket, resp) =
        tokio_tungstenite::connect_async(request).await.expect("handshake through erratum");
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        socket.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("hello {i}")));
    }
    socket.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    socket.close(None).await.unwrap();
    h.shutdown().await;
}

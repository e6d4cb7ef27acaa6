//! Unit tests of the upstream exchange: framing, pooling, failures.

use super::*;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Collects released connections.
#[derive(Clone, Default)]
struct Back(std::sync::Arc<std::sync::Mutex<Vec<Conn>>>);
impl Release for Back {
    fn release(self, conn: Conn) {
        self.0.lock().unwrap().push(conn);
    }
}

/// A connection to an origin that reads one request head and answers `answer` in the
/// pieces given (a pause between them), then keeps the socket open until the test ends;
/// an empty piece closes it instead.
async fn origin(answer: Vec<&'static [u8]>) -> (Conn, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            got.push(byte[0]);
        }
        let _ = tx.send(got);
        for piece in answer {
            if piece.is_empty() {
                return;
            }
            s.write_all(piece).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let _ = s.read(&mut byte).await;
    });
    (Conn::new(TcpStream::connect(addr).await.unwrap()), rx)
}

fn get(method: Method) -> Request<()> {
    Request::builder().method(method).uri("/a?b=c").header("host", "o").header("x-id", "1").body(()).unwrap()
}

async fn answer(pieces: Vec<&'static [u8]>, method: Method) -> (Result<(Response<()>, Bytes), Error>, usize) {
    let (conn, _) = origin(pieces).await;
    let back = Back::default();
    let result = match send(conn, &get(method), &[], back.clone()).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            body.collect().await.map(|b| (Response::from_parts(parts, ()), b.to_bytes()))
        }
        Err(e) => Err(e),
    };
    let released = back.0.lock().unwrap().len();
    (result, released)
}

#[tokio::test]
async fn the_request_head_is_written_whole() {
    let (conn, head) = origin(vec![b"HTTP/1.1 204 No Content\r\n\r\n"]).await;
    send(conn, &get(Method::GET), &[], Back::default()).await.unwrap();
    assert_eq!(head.await.unwrap(), b"GET /a?b=c HTTP/1.1\r\nhost: o\r\nx-id: 1\r\n\r\n");
    // Fields set by the caller replace the request's own of the same name.
    let (conn, head) = origin(vec![b"HTTP/1.1 204 No Content\r\n\r\n"]).await;
    let (id, new) = (HeaderName::from_static("x-id"), HeaderName::from_static("x-new"));
    let (two, y) = (HeaderValue::from_static("2"), HeaderValue::from_static("y"));
    send(conn, &get(Method::GET), &[(&id, &two), (&new, &y)], Back::default()).await.unwrap();
    assert_eq!(head.await.unwrap(), b"GET /a?b=c HTTP/1.1\r\nhost: o\r\nx-id: 2\r\nx-new: y\r\n\r\n");
}

#[tokio::test]
async fn length_bodies_in_pieces_are_read_whole_and_the_connection_comes_back() {
    let pieces: Vec<&[u8]> =
        vec![b"HTTP/1.1 200 OK\r\nContent-Len", b"gth: 10\r\nX-A: b\r\n\r\n01234", b"56789"];
    let (result, released) = answer(pieces, Method::GET).await;
    let (head, body) = result.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["x-a"], "b");
    assert_eq!(body, "0123456789");
    assert_eq!(released, 1);
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers_are_decoded() {
    let pieces: Vec<&[u8]> = vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhel",
        b"lo\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
    ];
    let (result, released) = answer(pieces, Method::GET).await;
    assert_eq!(result.unwrap().1, "hello world");
    assert_eq!(released, 1);
}

#[tokio::test]
async fn bad_chunks_fail_and_the_connection_is_not_reused() {
    let (result, released) =
        answer(vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], Method::GET).await;
    assert!(matches!(result, Err(Error::BadChunk)), "{result:?}");
    assert_eq!(released, 0);
    let (result, _) =
        answer(vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n"], Method::GET)
            .await;
    assert!(matches!(result, Err(Error::BadChunk)), "{result:?}");
}

#[tokio::test]
async fn informational_responses_are_skipped() {
    let pieces: Vec<&[u8]> = vec![
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\ncontent-length: 2\r\n\r\nno",
    ];
    let (result, _) = answer(pieces, Method::GET).await;
    let (head, body) = result.unwrap();
    assert_eq!((head.status().as_u16(), &body[..]), (503, &b"no"[..]));
    assert!(!head.headers().contains_key("link"));
}

#[tokio::test]
async fn bodies_without_length_run_until_close_and_are_never_reused() {
    let (conn, _) = origin(vec![b"HTTP/1.1 200 OK\r\n\r\nall of it"]).await;
    let back = Back::default();
    let resp = send(conn, &get(Method::GET), &[], back.clone()).await.unwrap();
    // The origin keeps the socket open: the body has not ended yet.
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "all of it");
    assert!(!http_body::Body::is_end_stream(&body));
    drop(body);
    assert!(back.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn responses_that_end_the_connection_do_not_give_it_back() {
    for (answer_head, reused) in [
        (&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..], 1),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok", 0),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", 0),
        (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok", 1),
        // Both lengths: read by the chunks, but never trusted again.
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            0,
        ),
    ] {
        let (result, released) = answer(vec![answer_head], Method::GET).await;
        assert_eq!(result.unwrap().1, "ok");
        assert_eq!(released, reused, "{}", String::from_utf8_lossy(answer_head));
    }
    // No length: the body runs to the origin's close, and the connection goes with it.
    let (result, released) = answer(vec![b"HTTP/1.1 200 OK\r\n\r\nall of it", b""], Method::GET).await;
    assert_eq!(result.unwrap().1, "all of it");
    assert_eq!(released, 0);
}

#[tokio::test]
async fn head_204_and_304_have_no_body() {
    for (answer_head, method) in [
        (&b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"[..], Method::HEAD),
        (b"HTTP/1.1 204 No Content\r\n\r\n", Method::GET),
        (b"HTTP/1.1 304 Not Modified\r\ncontent-length: 1000\r\n\r\n", Method::GET),
    ] {
        let (result, released) = answer(vec![answer_head], method).await;
        assert!(result.unwrap().1.is_empty());
        assert_eq!(released, 1);
    }
}

#[tokio::test]
async fn short_bodies_fail_and_bytes_past_the_end_are_not_the_next_response() {
    let (result, released) =
        answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", b""], Method::GET).await;
    assert!(matches!(result, Err(Error::IncompleteBody)), "{result:?}");
    assert_eq!(released, 0);
    let (result, released) =
        answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsh", b""], Method::GET).await;
    assert!(matches!(result, Err(Error::IncompleteBody)), "{result:?}");
    assert_eq!(released, 0);
    let (result, released) =
        answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n"], Method::GET)
            .await;
    assert_eq!(result.unwrap().1, "ok");
    assert_eq!(released, 0, "a connection with bytes past its response came back");
}

#[tokio::test]
async fn heads_are_checked() {
    for (bad, want) in [
        (&b"SSH-2.0-OpenSSH\r\n\r\n"[..], "invalid"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", "content-length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "content-length"),
    ] {
        let (result, _) = answer(vec![bad], Method::GET).await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
    let (result, _) = answer(vec![b"HTTP/1.1 200 OK\r\ncontent-le", b""], Method::GET).await;
    assert!(matches!(result, Err(Error::IncompleteHead)), "{result:?}");
}

#[tokio::test]
async fn closed_connections_are_reported_as_no_response() {
    let (result, _) = answer(vec![b""], Method::GET).await;
    assert!(matches!(result, Err(Error::NoResponse(_))), "{result:?}");
}

#[tokio::test]
async fn idle_connections_with_news_are_not_usable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (send_stray, stray) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        stray.await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let _ = s.read(&mut [0u8; 1]).await;
    });
    let mut conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    assert!(conn.is_usable());
    send_stray.send(()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!conn.is_usable());
}

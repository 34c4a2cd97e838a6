//! permessage-deflate (RFC 7692): offered only when configured, and then
//! really compressing. tungstenite has no deflate, so the compressing client
//! here is yawc's, and the wire itself is read through a raw socket.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsgate_tests::*;
use yawc::{CompressionLevel, Frame, OpCode, Options, WebSocket};

async fn echo_server(args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = plugin_dir(example_plugins(), &["echo"]);
    let server = Server::start(dir.path(), args).await;
    (dir, server)
}

/// A handshake offering permessage-deflate over a raw socket: the socket,
/// past the response, and the response's `Sec-WebSocket-Extensions`.
async fn raw_handshake(server: &Server) -> (TcpStream, Option<String>) {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let request = format!(
        "GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
        server.port
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let extensions = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_owned())
    });
    (stream, extensions)
}

/// One masked, uncompressed text frame (RFC 7692 lets any message go
/// uncompressed), then the header of the reply: RSV1 and payload length.
async fn raw_echo(stream: &mut TcpStream, text: &[u8]) -> (bool, usize) {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 126];
    frame.extend_from_slice(&(text.len() as u16).to_be_bytes());
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
    let first = stream.read_u8().await.unwrap();
    assert_eq!(first & 0x0f, 0x1, "a text frame");
    let len = match stream.read_u8().await.unwrap() & 0x7f {
        126 => usize::from(stream.read_u16().await.unwrap()),
        127 => stream.read_u64().await.unwrap() as usize,
        n => usize::from(n),
    };
    (first & 0x40 != 0, len)
}

#[tokio::test]
async fn deflate_is_negotiated_only_when_enabled() {
    let (_dir, server) = echo_server(&[]).await;
    let (mut stream, extensions) = raw_handshake(&server).await;
    assert_eq!(extensions, None, "off by default");
    let text = "compress me ".repeat(100);
    assert_eq!(
        raw_echo(&mut stream, text.as_bytes()).await,
        (false, text.len())
    );

    let (_dir, server) = echo_server(&["--permessage-deflate"]).await;
    let (mut stream, extensions) = raw_handshake(&server).await;
    let extensions = extensions.expect("permessage-deflate negotiated");
    assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
    let (compressed, len) = raw_echo(&mut stream, text.as_bytes()).await;
    assert!(compressed, "RSV1 marks the echo compressed");
    assert!(len < text.len() / 4, "{len} bytes for {}", text.len());
}

#[tokio::test]
async fn a_compressing_client_gets_its_messages_back() {
    let (_dir, server) = echo_server(&["--permessage-deflate"]).await;
    let options = Options::default().with_compression_level(CompressionLevel::best());
    let mut ws = WebSocket::connect(server.ws_url("/ws/echo").parse().unwrap())
        .with_options(options)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", server.logs()));
    let json = r#"{"channel":"prices","bid":101.25,"ask":101.5}"#.repeat(200);
    let binary: Vec<u8> = (0..50_000u32).map(|i| (i % 7) as u8).collect();
    for _ in 0..3 {
        // The same messages again: context takeover must not go astray.
        futures_util::SinkExt::send(&mut ws, Frame::text(json.clone()))
            .await
            .unwrap();
        let reply = ws.next_frame().await.unwrap();
        assert_eq!(reply.opcode(), OpCode::Text);
        assert_eq!(reply.as_str(), json);
        futures_util::SinkExt::send(&mut ws, Frame::binary(binary.clone()))
            .await
            .unwrap();
        let reply = ws.next_frame().await.unwrap();
        assert_eq!(reply.opcode(), OpCode::Binary);
        assert_eq!(reply.payload().as_ref(), binary.as_slice());
    }
}

//! Integration test: the built plugin (dist/{{name}}.wasm, made by
//! `wsgate build`; `wsgate test` builds it first) in a real wsgate, over a
//! real socket.

use std::path::Path;

use wsgate_sdk::testing::{serve, tungstenite::Message};

#[test]
fn serves_over_a_real_socket() {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/{{name}}.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run `wsgate build` first, or `wsgate test`, which builds",
        wasm.display()
    );
    let server = serve(&wasm).expect("wsgate serves the plugin");
    let mut ws = server.connect("/ws/{{name}}").expect("connected");
    assert_eq!(ws.read().unwrap(), Message::text("welcome to {{name}}"));
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("echo: hello"));
}

//! zstd bodies on the wire: negotiated per `send`, verified against the
//! uncompressed size and digest, and hostile compressed bodies (garbage,
//! cut off, a bomb) refused with nothing stored.

use fileagent::wire::codec::Compressor;
use fileagent::wire::protocol::{Encoding, ErrorCode, Reply, Request};
use fileagent::workstation::Compression;

use crate::support::{Agent, content, data, reply, sha256};

#[tokio::test]
async fn gcode_is_compressed_on_the_wire_and_stored_as_it_was() {
    let agent = Agent::start().await;
    let mut client = agent.client("alice").await;
    let path = data("cube-20mm.gcode");
    let original = std::fs::read(&path).unwrap();

    let sent = client
        .send_file(&path, "cube.gcode", false, &mut ())
        .await
        .unwrap();
    assert_eq!(sent.encoding, Some(Encoding::Zstd));
    assert!(
        sent.wire_bytes * 3 < sent.size,
        "ratio only {:.2}",
        sent.size as f64 / sent.wire_bytes as f64
    );
    assert_eq!(agent.read_ready("cube.gcode"), original);
    assert_eq!(sent.sha256, sha256(&original));

    // Already-compressed formats go as they are; `never` never compresses.
    let sent = client
        .send_file(&path, "cube.bgcode", false, &mut ())
        .await
        .unwrap();
    assert_eq!((sent.encoding, sent.wire_bytes), (None, sent.size));
    // So do small files, and binary files whatever their names: zstd would
    // only cost CPU.
    let tiny = client
        .send_file(&data("tiny.gcode"), "tiny.gcode", false, &mut ())
        .await
        .unwrap();
    assert_eq!((tiny.encoding, tiny.wire_bytes), (None, 733));
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("firmware.gcode");
    std::fs::write(&binary, content(7, 300_000)).unwrap();
    let sent = client
        .send_file(&binary, "firmware.gcode", false, &mut ())
        .await
        .unwrap();
    assert_eq!((sent.encoding, sent.wire_bytes), (None, sent.size));
    assert_eq!(agent.read_ready("firmware.gcode"), content(7, 300_000));
    client.set_compression(Compression::Never);
    let sent = client
        .send_file(&path, "plain.gcode", false, &mut ())
        .await
        .unwrap();
    assert_eq!((sent.encoding, sent.wire_bytes), (None, sent.size));
    client.set_compression(Compression::Always);
    let sent = client
        .send_file(&path, "forced.bgcode", false, &mut ())
        .await
        .unwrap();
    assert_eq!(sent.encoding, Some(Encoding::Zstd));
    for name in ["cube.bgcode", "plain.gcode", "forced.bgcode"] {
        assert_eq!(agent.read_ready(name), original, "{name}");
    }
}

fn zstd(data: &[u8]) -> Vec<u8> {
    let mut c = Compressor::new().unwrap();
    let mut wire = Vec::new();
    c.compress(data, &mut wire).unwrap();
    c.finish(&mut wire).unwrap();
    wire
}

/// Announces a compressed `send` and sends `body` as its wire bytes.
async fn send_compressed(agent: &Agent, name: &str, size: u64, digest: &str, body: &[u8]) -> Reply {
    let mut conn = agent.raw("mallory").await;
    let request = Request::Send {
        name: name.into(),
        size,
        sha256: Some(digest.into()),
        overwrite: false,
        encoding: Some(Encoding::Zstd),
        resume: false,
        confirm: false,
        progress: false,
        print: None,
    };
    conn.write_message(&request).await.unwrap();
    assert_eq!(
        reply(&mut conn).await,
        Reply::Continue {
            encoding: Some(Encoding::Zstd),
            offset: 0,
            keeps: false,
        }
    );
    conn.write_chunk(body).await.unwrap();
    conn.write_end().await.unwrap();
    let answer = reply(&mut conn).await;
    // The connection stays usable after a refused body.
    conn.write_message(&Request::Ping).await.unwrap();
    assert_eq!(reply(&mut conn).await, Reply::Pong);
    answer
}

fn refused(reply: Reply, want: ErrorCode) -> String {
    match reply {
        Reply::Error { code, message } if code == want => message,
        other => panic!("expected {want}, got {other:?}"),
    }
}

#[tokio::test]
async fn hostile_compressed_bodies_are_refused_and_nothing_is_kept() {
    let agent = Agent::start().await;
    let text = b"G1 X10 Y10 E0.5\n".repeat(10_000);
    let digest = sha256(&text);
    let size = text.len() as u64;
    let good = zstd(&text);

    let garbage = send_compressed(&agent, "garbage.gcode", size, &digest, &text[..4096]).await;
    assert!(refused(garbage, ErrorCode::BadRequest).contains("not valid zstd"));

    let cut = send_compressed(&agent, "cut.gcode", size, &digest, &good[..good.len() / 2]).await;
    let message = refused(cut, ErrorCode::BadRequest);
    assert!(
        message.contains("not valid zstd") || message.contains("ends inside"),
        "{message}"
    );

    // 64 MiB of zeros in a few KiB, announced as 1000 bytes.
    let bomb = zstd(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 64 << 10);
    let answer = send_compressed(&agent, "bomb.gcode", 1000, &sha256(&[0; 1000]), &bomb).await;
    refused(answer, ErrorCode::SizeMismatch);

    // Valid zstd of other content: the digest of what it inflates to is checked.
    let other = zstd(&b"M104 S0\n".repeat(size as usize / 8));
    refused(
        send_compressed(&agent, "other.gcode", size, &digest, &other).await,
        ErrorCode::DigestMismatch,
    );

    assert!(agent.ready().is_empty(), "{:?}", agent.ready());
    assert!(agent.incoming().is_empty(), "{:?}", agent.incoming());
    // And the real thing still goes through.
    let stored = send_compressed(&agent, "good.gcode", size, &digest, &good).await;
    assert!(matches!(stored, Reply::Stored { .. }), "{stored:?}");
    assert_eq!(agent.read_ready("good.gcode"), text);
}

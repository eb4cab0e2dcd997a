//! Normal operation through the library client: send, list, get, delete,
//! status and ping over one connection, conflicts, and many senders at once.

use std::os::unix::fs::PermissionsExt;

use fileagent::wire::protocol::ErrorCode;
use fileagent::workstation::{Client, ClientError};

use crate::support::{Agent, content, data, sha256};

#[tokio::test]
async fn every_operation_works_on_one_connection() {
    let mut agent = Agent::start().await;
    let mut client = agent.client("alice").await;
    let path = data("cube-20mm.gcode");
    let original = std::fs::read(&path).unwrap();

    client.ping().await.unwrap();
    let sent = client
        .send_file(&path, "cube.gcode", false, &mut ())
        .await
        .unwrap();
    assert_eq!(
        (sent.size, sent.sha256.as_str()),
        (original.len() as u64, sha256(&original).as_str())
    );
    assert!(!sent.unchanged);
    assert_eq!(agent.read_ready("cube.gcode"), original);

    let files = client.list().await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0].name.as_str(), files[0].size),
        ("cube.gcode", original.len() as u64)
    );

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("back.gcode");
    let fetched = client
        .get("cube.gcode", &dest, false, &mut ())
        .await
        .unwrap();
    assert_eq!(fetched.sha256, sha256(&original));
    assert_eq!(std::fs::read(&dest).unwrap(), original);
    // The mode any new file gets here (0666 less the umask), not 0600.
    let plain = out.path().join("plain");
    std::fs::write(&plain, b"").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode();
    assert_eq!(mode(&dest), mode(&plain));
    // A file that is there stays, unless told to replace it.
    std::fs::write(&dest, b"mine").unwrap();
    let err = client
        .get("cube.gcode", &dest, false, &mut ())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("there already with different content"),
        "{err}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"mine");
    // The connection was left mid-body: the next request opens a new one.
    client.ping().await.unwrap();
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        2,
        "a temp file stayed"
    );
    client
        .get("cube.gcode", &dest, true, &mut ())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), original);

    let status = client.status().await.unwrap();
    assert_eq!((status.ready, status.incoming), (1, 0));
    assert_eq!(status.ready_bytes, original.len() as u64);
    assert_eq!(status.client, "alice");
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert!(status.free_bytes > 0);

    client.delete("cube.gcode").await.unwrap();
    assert!(client.list().await.unwrap().is_empty());
    client.close().await;
    agent.stop().await;
    assert!(agent.ready().is_empty() && agent.incoming().is_empty());
}

#[tokio::test]
async fn identical_content_is_idempotent_and_different_content_needs_overwrite() {
    let mut agent = Agent::start().await;
    let mut client = agent.client("alice").await;
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one.gcode");
    let two = tmp.path().join("two.gcode");
    std::fs::write(&one, content(1, 10_000)).unwrap();
    std::fs::write(&two, content(2, 10_000)).unwrap();

    client
        .send_file(&one, "part.gcode", false, &mut ())
        .await
        .unwrap();
    let again = client
        .send_file(&one, "part.gcode", false, &mut ())
        .await
        .unwrap();
    assert!(again.unchanged);

    let err = client
        .send_file(&two, "part.gcode", false, &mut ())
        .await
        .unwrap_err();
    match &err {
        ClientError::Refused { code, message } => {
            assert_eq!(*code, ErrorCode::Exists);
            assert!(message.contains("--overwrite"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(agent.read_ready("part.gcode"), content(1, 10_000));

    // The connection is still usable after a refusal.
    let replaced = client
        .send_file(&two, "part.gcode", true, &mut ())
        .await
        .unwrap();
    assert!(replaced.replaced);
    assert_eq!(agent.read_ready("part.gcode"), content(2, 10_000));
    agent.stop().await;
    assert!(agent.incoming().is_empty());
}

#[tokio::test]
async fn get_and_delete_of_missing_files_are_refused_clearly() {
    let agent = Agent::start().await;
    let mut client = agent.client("alice").await;
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("x.gcode");
    let err = client
        .get("missing.gcode", &dest, false, &mut ())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Refused {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{err}"
    );
    assert!(!dest.exists());
    let err = client.delete("missing.gcode").await.unwrap_err();
    assert!(
        err.to_string().contains("no file named \"missing.gcode\""),
        "{err}"
    );
}

#[tokio::test]
async fn sixteen_concurrent_senders_all_land_intact() {
    let mut agent = Agent::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let path = tmp.path().join(format!("part-{i}.gcode"));
        // Sizes from 100 KiB to ~1.6 MiB, so uploads overlap in every phase.
        std::fs::write(&path, content(i, 100 * 1024 * (i as usize + 1))).unwrap();
        let identity = agent.identity(&format!("sender-{i}"));
        let addr = agent.agent_arg();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&addr, identity).await.unwrap();
            let name = format!("part-{i}.gcode");
            client
                .send_file(&path, &name, false, &mut ())
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    agent.stop().await;
    assert_eq!(agent.ready().len(), 16);
    for i in 0..16u64 {
        let name = format!("part-{i}.gcode");
        assert_eq!(
            agent.read_ready(&name),
            content(i, 100 * 1024 * (i as usize + 1)),
            "{name}"
        );
    }
    assert!(agent.incoming().is_empty());
}

#[tokio::test]
async fn concurrent_sends_of_one_name_never_mix_content() {
    let mut agent = Agent::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut tasks = Vec::new();
    for i in 0..4u64 {
        let path = tmp.path().join(format!("v{i}"));
        std::fs::write(&path, content(100 + i, 512 * 1024)).unwrap();
        let identity = agent.identity("racer");
        let addr = agent.agent_arg();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&addr, identity).await.unwrap();
            client.send_file(&path, "same.gcode", false, &mut ()).await
        }));
    }
    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => stored += 1,
            Err(ClientError::Refused {
                code: ErrorCode::Exists,
                ..
            }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    agent.stop().await;
    assert_eq!(stored, 1, "exactly one sender wins without --overwrite");
    let landed = agent.read_ready("same.gcode");
    assert!((0..4).any(|i| landed == content(100 + i, 512 * 1024)));
    assert!(agent.incoming().is_empty());
}

#[tokio::test]
async fn an_idle_connection_is_reopened_before_the_next_request() {
    let agent = Agent::start_with(|c| {
        c.header_timeout = std::time::Duration::from_millis(200);
        c.max_connections = 1;
    })
    .await;
    // Waits until the agent has dropped `client`'s idle connection: with a
    // single connection slot, another client gets in only after that.
    async fn until_agent_dropped_it(agent: &Agent) {
        let mut other = agent.client("other").await;
        other.ping().await.unwrap();
        other.close().await;
    }

    let mut client = agent.client("patient").await;
    client.set_reconnect_after(std::time::Duration::from_secs(3600));
    client.ping().await.unwrap();
    until_agent_dropped_it(&agent).await;
    assert!(
        client.ping().await.is_err(),
        "a connection the agent dropped cannot work"
    );

    let mut client = agent.client("patient").await;
    client.set_reconnect_after(std::time::Duration::ZERO);
    client.ping().await.unwrap();
    until_agent_dropped_it(&agent).await;
    client.ping().await.unwrap();
    client.close().await;
}

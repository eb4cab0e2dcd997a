//! `fileagent bridge` as slicers and OctoPrint's client programs use it,
//! against a real agent forwarding to the real OctoPrint Virtual Printer:
//! curl replaying PrusaSlicer's, OrcaSlicer's and Cura's requests as their
//! source makes them, then OctoPrint's own `octoprint client`,
//! `octoprint-cli`, `octorest` and `PrusaLinkPy`; hostile requests; an agent
//! that goes away mid-upload; a group with a stopped member.

use fileagent::agent::config::AutoPrint;

use crate::bridged::{Bridged, client_program, curl, python, run};
use crate::forward::{dwell_file, forwarding, listing, wait_state};
use crate::octoprint::OctoPrint;
use crate::support::{Agent, data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slicers_upload_and_print_through_the_bridge() {
    let octo = OctoPrint::start().await;
    let agent = Agent::start_with(|c| {
        forwarding(octo.url(), octo.key.clone(), false)(c);
        c.octoprint.auto_print = AutoPrint::Never;
    })
    .await;
    let bridge = Bridged::start(&[("pi", &agent)], &[]).await;
    let tmp = tempfile::tempdir().unwrap();
    let at = |path: &str| format!("{}/a/pi/{path}", bridge.url);
    let cube = tmp.path().join("cube.gcode");
    std::fs::copy(data("cube-20mm.gcode"), &cube).unwrap();

    // PrusaSlicer: the version first (text must start with "OctoPrint"),
    // then print, path and the file, with Expect: 100-continue (libcurl).
    let version = bridge.curl(&[&at("api/version")]).await;
    assert_eq!(version.status, 200);
    assert!(
        version.json()["text"]
            .as_str()
            .unwrap()
            .starts_with("OctoPrint ")
    );
    let file = format!("file=@{};filename=cube.gcode", cube.display());
    let upload = bridge
        .curl(&[
            "-H",
            "Expect: 100-continue",
            "-F",
            "print=false",
            "-F",
            "path=",
            "-F",
            &file,
            &at("api/files/local"),
        ])
        .await;
    assert_eq!(upload.status, 201, "{upload:?}");
    let location = upload.header("location").unwrap();
    assert!(
        location.ends_with("/a/pi/api/files/local/cube.gcode"),
        "{location}"
    );
    assert_eq!(upload.json()["files"]["local"]["name"], "cube.gcode");
    assert_eq!(upload.json()["effectivePrint"], false);
    // Answered once stored and verified: the agent has it now.
    assert!(listing(&agent).await.iter().any(|f| f.name == "cube.gcode"));
    let only = wait_state(&agent, &octo, "cube.gcode", &["uploaded"]).await;
    assert!(only.reason.unwrap().starts_with("uploaded only"));
    assert!(bridge.spooled().is_empty(), "{:?}", bridge.spooled());

    // OrcaSlicer: the same, with its plate index.
    let plate = dwell_file(tmp.path(), "plate.gcode", 1);
    let file = format!("file=@{};filename=plate.gcode", plate.display());
    let orca = bridge
        .curl(&[
            "-F",
            "print=false",
            "-F",
            "path=",
            "-F",
            "plateindex=0",
            "-F",
            &file,
            &at("api/files/local"),
        ])
        .await;
    assert_eq!(orca.status, 201, "{orca:?}");

    // Cura: settings (no SD card, no UFP plugin), then path, the file, and
    // select and print after it; the print starts (idle printer, clear bed).
    let settings = bridge.curl(&[&at("api/settings")]).await;
    assert_eq!(settings.json()["feature"]["sdSupport"], false);
    let part = dwell_file(tmp.path(), "part.gcode", 1);
    let file = format!(
        "file=@{};filename=part.gcode;type=application/octet-stream",
        part.display()
    );
    let cura = bridge
        .curl(&[
            "-F",
            "path=",
            "-F",
            &file,
            "-F",
            "select=true",
            "-F",
            "print=true",
            &at("api/files/local"),
        ])
        .await;
    assert_eq!(cura.status, 201, "{cura:?}");
    assert_eq!(cura.json()["effectivePrint"], true);
    wait_state(&agent, &octo, "part.gcode", &["printing", "printed"]).await;
    // Cura polls the printer and the job while it prints.
    let job = bridge.curl(&[&at("api/job")]).await;
    assert_eq!(job.status, 200);
    let printer = bridge.curl(&[&at("api/printer")]).await;
    assert_eq!(printer.status, 200, "{printer:?}");
    for flag in [
        "operational",
        "printing",
        "paused",
        "error",
        "closedOrError",
        "ready",
    ] {
        assert!(
            printer.json()["state"]["flags"][flag].is_boolean(),
            "{flag}"
        );
    }
    wait_state(&agent, &octo, "part.gcode", &["printed"]).await;
    // Cura's other way: stored only, then `select` with `print` at the
    // Location it was given: a person's start, 204.
    let file = format!("file=@{};filename=plate.gcode", plate.display());
    let stored = bridge
        .curl(&["-F", "path=", "-F", &file, &at("api/files/local")])
        .await;
    let endpoint = stored
        .header("location")
        .unwrap()
        .split_once("api/")
        .unwrap()
        .1
        .to_string();
    let select = bridge
        .curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"command":"select","print":true}"#,
            &at(&format!("api/{endpoint}")),
        ])
        .await;
    assert_eq!(select.status, 204, "{select:?}");
    wait_state(&agent, &octo, "plate.gcode", &["printing", "printed"]).await;
    wait_state(&agent, &octo, "plate.gcode", &["printed"]).await;

    // OctoPrint's own command line client, under the prefix.
    let tiny = tmp.path().join("octo-client.gcode");
    std::fs::copy(data("tiny.gcode"), &tiny).unwrap();
    let port = bridge.url.rsplit(':').next().unwrap().to_string();
    let octoprint = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/octoprint/venv/bin/octoprint");
    let basedir = tmp.path().join("octoprint-client");
    let args: Vec<String> = [
        "--basedir",
        basedir.to_str().unwrap(),
        "client",
        "--apikey",
        &bridge.key,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--prefix",
        "/a/pi",
        "upload",
        "api/files/local",
        "octo-client.gcode",
        "-P",
        "print",
        "false",
    ]
    .map(String::from)
    .to_vec();
    let out = run(octoprint, args, tmp.path().to_path_buf()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Status Code: 201"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_state(&agent, &octo, "octo-client.gcode", &["uploaded"]).await;

    // octoprint-cli (update check off): upload, version, the job.
    let ini = tmp.path().join("octoprint-cli.ini");
    let config = format!(
        "[server]\nServerAddress = {}\nApiKey = {}\n[preferences]\nUpdateCheck = false\nFormattedText = false\n",
        at(""),
        bridge.key
    );
    std::fs::write(&ini, config).unwrap();
    std::fs::copy(data("tiny.gcode"), tmp.path().join("cli.gcode")).unwrap();
    let cli = |words: &[&str]| {
        let mut args = vec!["-c".to_string(), ini.to_str().unwrap().to_string()];
        args.extend(words.iter().map(|w| w.to_string()));
        run(
            client_program("octoprint-cli"),
            args,
            tmp.path().to_path_buf(),
        )
    };
    let out = cli(&["files", "upload", "cli.gcode"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("File uploaded to OctoPrint"),
        "{out:?}"
    );
    wait_state(&agent, &octo, "cli.gcode", &["uploaded"]).await;
    let out = cli(&["version"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OctoPrint v1.11.0"),
        "{out:?}"
    );
    let out = cli(&["files", "list"]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        listed.contains("cli.gcode") && listed.contains("Free space"),
        "{listed}"
    );
    let out = cli(&["print", "status"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Printer Operational"),
        "{out:?}"
    );

    // octorest drops any path prefix: the default agent at the root.
    std::fs::copy(data("tiny.gcode"), tmp.path().join("rest.gcode")).unwrap();
    let script = format!(
        "from octorest import OctoRest\n\
         c = OctoRest(url='{}', apikey='{}')\n\
         print(c.upload('rest.gcode')['files']['local']['name'])\n\
         print(c.job_info()['state'])\n\
         print(c.printer()['state']['text'])\n",
        bridge.url, bridge.key
    );
    let said = python(&script, tmp.path()).await;
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        ["rest.gcode", "Operational", "Operational"]
    );
    wait_state(&agent, &octo, "rest.gcode", &["uploaded"]).await;

    // PrusaLinkPy: PUT, then PUT again with Overwrite of a changed file.
    let link = tmp.path().join("link.gcode");
    std::fs::copy(data("tiny.gcode"), &link).unwrap();
    let script = format!(
        "import PrusaLinkPy\n\
         p = PrusaLinkPy.PrusaLinkPy('127.0.0.1', '{}', port='{port}/a/pi')\n\
         print(p.put_gcode('link.gcode', 'link.gcode').status_code)\n\
         open('link.gcode', 'a').write('; changed\\n')\n\
         print(p.put_gcode('link.gcode', 'link.gcode', overwrite=True).status_code)\n\
         print(p.exists_gcode('link.gcode'), p.exists_gcode('nothing.gcode'))\n",
        bridge.key
    );
    let said = python(&script, tmp.path()).await;
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        ["201", "204", "True False"]
    );
    wait_state(&agent, &octo, "link.gcode", &["uploaded"]).await;
    assert_eq!(
        octo.download("link.gcode").await.unwrap(),
        std::fs::read(&link).unwrap(),
        "OctoPrint holds the replaced file"
    );
    assert!(bridge.spooled().is_empty(), "{:?}", bridge.spooled());
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_nothing_and_leave_nothing() {
    let agent = Agent::start().await;
    let bridge = Bridged::start(&[("pi", &agent)], &[]).await;
    let tmp = tempfile::tempdir().unwrap();
    let tiny = tmp.path().join("tiny.gcode");
    std::fs::copy(data("tiny.gcode"), &tiny).unwrap();
    let file = format!("file=@{};filename=tiny.gcode", tiny.display());
    let upload = format!("{}/a/pi/api/files/local", bridge.url);
    let version = format!("{}/a/pi/api/version", bridge.url);
    let key = format!("X-Api-Key: {}", bridge.key);
    let mut replies = Vec::new();

    // No key, a wrong key: 403, before the body is read.
    let none = curl(&["-F", &file, &upload]).await;
    let wrong = curl(&["-H", "X-Api-Key: 0123", "-F", &file, &upload]).await;
    // A page elsewhere that made its name resolve to 127.0.0.1 (DNS
    // rebinding): its Host is not ours.
    let rebound = curl(&["-H", &key, "-H", "Host: evil.example:7342", &version]).await;
    let lookalike = curl(&["-H", &key, "-H", "Host: 127.0.0.1.evil.example", &version]).await;
    // A browser's cross-origin form post, and its CORS preflight.
    let cross = curl(&["-H", "Origin: http://evil.example", "-F", &file, &upload]).await;
    let keyed_cross = curl(&["-H", &key, "-H", "Origin: http://evil.example", &version]).await;
    let preflight = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        "Origin: http://evil.example",
        "-H",
        "Access-Control-Request-Method: POST",
        "-H",
        "Access-Control-Request-Headers: x-api-key",
        &upload,
    ])
    .await;
    for (reply, status) in [
        (&none, 403),
        (&wrong, 403),
        (&rebound, 421),
        (&lookalike, 421),
        (&cross, 403),
        (&keyed_cross, 403),
        (&preflight, 403),
    ] {
        assert_eq!(reply.status, status, "{reply:?}");
    }
    replies.extend([
        none,
        wrong,
        rebound,
        lookalike,
        cross,
        keyed_cross,
        preflight,
    ]);
    // Windows' PrusaSlicer drops the port: still ours.
    let portless = bridge.curl(&["-H", "Host: 127.0.0.1", &version]).await;
    assert_eq!(portless.status, 200);
    let localhost = bridge.curl(&["-H", "Host: localhost", &version]).await;
    assert_eq!(localhost.status, 200);

    // Forms that are not what they say: refused, nothing stored.
    let part = |name: &str, value: &str| {
        format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    };
    let file_part = "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"evil.gcode\"\r\n\r\nG28\r\n";
    let forms = [
        // A second print field (the first says no).
        (
            format!(
                "{}{file_part}{}--B--\r\n",
                part("print", "false"),
                part("print", "true")
            ),
            "twice",
        ),
        // A second file part.
        (format!("{file_part}{file_part}--B--\r\n"), "twice"),
        // A field fileagent does not take (OctoPrint's folder creation).
        (
            format!("{}{file_part}--B--\r\n", part("foldername", "x")),
            "does not take",
        ),
        // The body ends inside the file.
        (file_part.to_string(), "well-formed"),
        // A folder.
        (
            format!("{}{file_part}--B--\r\n", part("path", "../../etc")),
            "without folders",
        ),
    ];
    for (body, why) in forms {
        let body_file = tmp.path().join("body");
        std::fs::write(&body_file, &body).unwrap();
        let data = format!("@{}", body_file.display());
        let reply = bridge
            .curl(&[
                "-H",
                "Content-Type: multipart/form-data; boundary=B",
                "--data-binary",
                &data,
                &upload,
            ])
            .await;
        assert_eq!(reply.status, 400, "{why}: {reply:?}");
        assert!(reply.body.contains(why), "{why}: {reply:?}");
        replies.push(reply);
    }
    let json = bridge
        .curl(&["-H", "Content-Type: application/json", "-d", "{}", &upload])
        .await;
    assert_eq!(json.status, 400);
    // Unknown agents and routes say what exists.
    let unknown = bridge
        .curl(&[&format!("{}/a/nope/api/version", bridge.url)])
        .await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("paired agents: pi ("), "{unknown:?}");
    replies.extend([json, unknown]);

    assert!(agent.ready().is_empty() && agent.incoming().is_empty());
    assert!(bridge.spooled().is_empty(), "{:?}", bridge.spooled());
    for reply in &replies {
        assert!(
            !reply.body.contains(&bridge.key),
            "the key echoed: {reply:?}"
        );
        assert!(
            !reply
                .headers
                .to_ascii_lowercase()
                .contains("access-control"),
            "CORS headers: {reply:?}"
        );
    }
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_a_stopped_member_stores_on_the_others_and_says_so() {
    let pi1 = Agent::start().await;
    let pi2 = Agent::start().await;
    let mut pi3 = Agent::start().await;
    let bridge = Bridged::start(
        &[("pi1", &pi1), ("pi2", &pi2), ("pi3", &pi3)],
        &[("farm", &["pi1", "pi2", "pi3"])],
    )
    .await;
    pi3.stop().await;
    let tmp = tempfile::tempdir().unwrap();
    let cube = tmp.path().join("cube.gcode");
    std::fs::copy(data("cube-20mm.gcode"), &cube).unwrap();

    // The CLI: every member at once, one summary, a failing exit code.
    let send = |extra: &[&str]| {
        let mut command = crate::support::fileagent_command();
        command
            .args([
                "send",
                cube.to_str().unwrap(),
                "--agent",
                "farm",
                "--no-retry",
            ])
            .args(extra)
            .env("XDG_CONFIG_HOME", bridge.home.path())
            .env_remove("FILEAGENT_AGENT")
            .env_remove("RUST_LOG");
        command.output().unwrap()
    };
    let out = send(&["--print"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    for agent in ["pi1", "pi2"] {
        assert!(
            stdout.contains(&format!("{agent}: sent cube.gcode")),
            "{stdout}"
        );
    }
    let summary = stdout.lines().last().unwrap();
    assert!(
        summary.starts_with("2 of 3 stored, 0 started, 2 waiting (pi1: forwarding is off"),
        "{summary}"
    );
    assert!(summary.ends_with("; not stored on pi3"), "{summary}");
    assert!(
        stderr.contains("pi3: 1 of 3 agents did not store every file: nothing listens at"),
        "{stderr}"
    );
    assert_eq!(pi1.read_ready("cube.gcode"), std::fs::read(&cube).unwrap());
    assert_eq!(pi2.read_ready("cube.gcode"), std::fs::read(&cube).unwrap());
    // --json reports each agent's files.
    let out = send(&["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let agents: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["pi1", "pi2", "pi3"]);
    assert_eq!(json[0]["files"][0]["unchanged"], true);
    assert!(
        json[2]["files"][0]["error"]
            .as_str()
            .unwrap()
            .contains("nothing listens")
    );

    // The bridge's group URL: stored on two, and the slicer is told.
    let file = format!("file=@{};filename=plate.gcode", cube.display());
    let reply = bridge
        .curl(&[
            "-F",
            "print=false",
            "-F",
            &file,
            &format!("{}/g/farm/api/files/local", bridge.url),
        ])
        .await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(
        reply.body.starts_with("stored on pi1, pi2 only; pi3: "),
        "{reply:?}"
    );
    assert!(pi1.ready().contains(&"plate.gcode".to_string()));
    assert!(pi2.ready().contains(&"plate.gcode".to_string()));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_lost_mid_upload_is_a_clear_5xx_and_nothing_partial_lands() {
    let mut agent = Agent::start().await;
    let link = crate::support::SlowLink::start(agent.addr, 2 << 20).await;
    // The bridge reaches the agent through the slow link.
    let home = crate::bridged::workstation_home(&[("pi", &agent, link.addr.to_string())]);
    let bridge = Bridged::serve(home).await;
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.bgcode");
    std::fs::write(&big, crate::support::content(7, 8 << 20)).unwrap();

    let file = format!("file=@{};filename=big.bgcode", big.display());
    let url = format!("{}/a/pi/api/files/local", bridge.url);
    let args: Vec<String> = ["-F", "print=true", "-F", &file, &url]
        .map(String::from)
        .to_vec();
    let key = bridge.key.clone();
    let upload = tokio::spawn(async move {
        let mut all = vec!["-H".to_string(), format!("X-Api-Key: {key}")];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        curl(&all).await
    });
    // Once the agent is receiving, the link and the agent go away.
    let receiving = crate::support::poll(
        crate::support::GUARD,
        std::time::Duration::from_millis(20),
        async || (!agent.incoming().is_empty()).then_some(()),
    )
    .await;
    assert!(receiving.is_some(), "the upload never reached the agent");
    link.cut();
    agent.stop().await;
    let reply = upload.await.unwrap();
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(reply.body.starts_with("pi: "), "{reply:?}");
    assert!(reply.body.contains("nothing was stored"), "{reply:?}");
    assert!(agent.ready().is_empty(), "{:?}", agent.ready());
    assert!(bridge.spooled().is_empty(), "{:?}", bridge.spooled());
    bridge.stop().await;
}

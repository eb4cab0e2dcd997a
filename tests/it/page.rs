//! The web page's HTTP side (`/ui`), as a browser and a hostile page use
//! it, against real agents (one forwarding to the real OctoPrint Virtual
//! Printer): the launch link, the session cookie and CSRF token, requests
//! from other sites and other hosts, files sent to two printers with their
//! outcomes on the event stream, a transfer cancelled over a slow link
//! (nothing lands), and the waiting files' actions.

use std::time::Duration;

use fileagent::agent::config::AutoPrint;

use crate::bridged::{Bridged, Reply, curl};
use crate::forward::{forwarding, wait_state};
use crate::octoprint::OctoPrint;
use crate::support::{Agent, GUARD, SlowLink, content, data, poll};

/// A browser's session on the page: its cookie and CSRF token.
struct Browser {
    base: String,
    origin: String,
    cookie: String,
    csrf: String,
}

impl Browser {
    /// Opens the page the way `fileagent ui` does: a launch token asked of
    /// the running process with the bridge's key, then the launch link.
    async fn open(bridge: &Bridged) -> Browser {
        let token = bridge
            .curl(&["-X", "POST", &format!("{}/ui/launch-token", bridge.url)])
            .await;
        assert_eq!(token.status, 200, "{token:?}");
        let launch = format!("{}/ui/launch?token={}", bridge.url, token.body.trim());
        let landed = curl(&["-H", "Sec-Fetch-Site: none", &launch]).await;
        assert_eq!(landed.status, 303, "{landed:?}");
        assert_eq!(landed.header("location"), Some("/ui/"));
        let set = landed.header("set-cookie").unwrap().to_string();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
            assert!(set.contains(part), "{set}");
        }
        let cookie = set.split(';').next().unwrap().to_string();
        // The same link a second time lets nobody in.
        assert_eq!(curl(&[&launch]).await.status, 401);
        let origin = bridge.url.clone();
        let page = curl(&["-H", &format!("Cookie: {cookie}"), &format!("{origin}/ui/")]).await;
        assert_eq!(page.status, 200, "{page:?}");
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        let csrf = page
            .body
            .split("name=\"csrf\" content=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_string();
        assert_eq!(csrf.len(), 32);
        Browser {
            base: format!("{origin}/ui"),
            origin,
            cookie,
            csrf,
        }
    }

    /// A request as the page's own script makes it (cookie, CSRF token,
    /// same origin), with `args` before the URL `path`.
    async fn call(&self, args: &[&str], path: &str) -> Reply {
        let cookie = format!("Cookie: {}", self.cookie);
        let csrf = format!("X-CSRF-Token: {}", self.csrf);
        let origin = format!("Origin: {}", self.origin);
        let url = format!("{}/{path}", self.base);
        let mut all = vec![
            "-H",
            &cookie,
            "-H",
            &csrf,
            "-H",
            &origin,
            "-H",
            "Sec-Fetch-Site: same-origin",
        ];
        all.extend_from_slice(args);
        all.push(&url);
        curl(&all).await
    }

    /// `POST send` of the file at `path` as `name`.
    async fn send(&self, path: &std::path::Path, to: &str, name: &str, print: bool) -> Reply {
        let body = format!("@{}", path.display());
        let query = format!("send?to={to}&name={name}&print={print}");
        self.call(&["-X", "POST", "--data-binary", &body], &query)
            .await
    }

    /// The state the event stream gives first (as `EventSource` reads it).
    async fn state(&self) -> serde_json::Value {
        use futures_util::StreamExt;
        let answer = reqwest::Client::new()
            .get(format!("{}/events", self.base))
            .header("cookie", &self.cookie)
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let mut text = String::new();
        let mut body = answer.bytes_stream();
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if let Some(event) = text.split("\n\n").next().filter(|_| text.contains("\n\n")) {
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or_else(|| panic!("no state: {event}"));
                return serde_json::from_str(data).unwrap();
            }
        }
        panic!("the event stream ended: {text}");
    }

    /// Waits until the jobs satisfy `done`; the last state.
    async fn until(
        &self,
        what: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let found = poll(GUARD, Duration::from_millis(200), async || {
            last = self.state().await;
            done(last["jobs"].as_array().unwrap()).then_some(())
        })
        .await;
        assert!(found.is_some(), "{what}: {last:#}");
        last
    }
}

/// An agent "pi" that the bridge reaches through a link of
/// `bytes_per_sec`, and a browser on the page.
async fn behind_slow_link(bytes_per_sec: u64) -> (Agent, SlowLink, Bridged, Browser) {
    let agent = Agent::start().await;
    let link = SlowLink::start(agent.addr, bytes_per_sec).await;
    let home = crate::bridged::workstation_home(&[("pi", &agent, link.addr.to_string())]);
    let bridge = Bridged::serve(home).await;
    let browser = Browser::open(&bridge).await;
    (agent, link, bridge, browser)
}

fn job<'a>(state: &'a serde_json::Value, agent: &str, file: &str) -> &'a serde_json::Value {
    state["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["agent"] == agent && j["file"] == file)
        .unwrap_or_else(|| panic!("no job {file} to {agent}: {state:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_browser_with_the_launch_link_gets_in() {
    let agent = Agent::start().await;
    let bridge = Bridged::start(&[("pi", &agent)], &[]).await;
    let page = format!("{}/ui/", bridge.url);
    // No cookie: told how to get in.
    let none = curl(&[&page]).await;
    assert_eq!(none.status, 401);
    assert!(none.body.contains("fileagent ui"), "{none:?}");
    // DNS rebinding: a foreign name for this machine.
    let rebound = curl(&["-H", "Host: evil.example", &page]).await;
    assert_eq!(rebound.status, 421, "{rebound:?}");
    // A launch token needs the bridge's key; a made-up one is refused.
    let token = format!("{}/ui/launch-token", bridge.url);
    assert_eq!(curl(&["-X", "POST", &token]).await.status, 403);
    let guessed = format!(
        "{}/ui/launch?token=0123456789abcdef0123456789abcdef",
        bridge.url
    );
    assert_eq!(curl(&[&guessed]).await.status, 401);
    // A cookie that no launch made.
    let forged = curl(&["-H", "Cookie: fileagent_ui=0123", &page]).await;
    assert_eq!(forged.status, 401);

    let browser = Browser::open(&bridge).await;
    for asset in ["app.js", "style.css"] {
        let reply = browser.call(&[], asset).await;
        assert_eq!(reply.status, 200, "{asset}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    }
    // Never a key, a certificate or CORS.
    let page = browser.call(&[], "").await;
    assert!(!page.body.contains(&bridge.key));
    assert!(!page.body.contains("PRIVATE KEY"));
    assert!(page.header("access-control-allow-origin").is_none());
    let state = browser.state().await;
    assert_eq!(state["agents"][0]["name"], "pi");
    assert!(!state.to_string().contains(&bridge.key));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sites_cannot_send_or_listen() {
    let agent = Agent::start().await;
    let bridge = Bridged::start(&[("pi", &agent)], &[]).await;
    let browser = Browser::open(&bridge).await;
    let file = data("tiny.gcode");
    let url = format!("{}/send?to=a:pi&name=x.gcode", browser.base);
    let body = format!("@{}", file.display());
    let cookie = format!("Cookie: {}", browser.cookie);
    let csrf = format!("X-CSRF-Token: {}", browser.csrf);
    // The page's send, with these headers only.
    let posted = async |headers: &[&str]| {
        let mut args: Vec<&str> = headers.iter().flat_map(|h| ["-H", *h]).collect();
        args.extend_from_slice(&["-X", "POST", "--data-binary", body.as_str(), url.as_str()]);
        curl(&args).await
    };

    // A forged cross-site POST: the browser would add the cookie only for
    // SameSite=Lax, but even with it, no CSRF token.
    let forged = posted(&[&cookie, "Origin: http://evil.example"]).await;
    assert_eq!(forged.status, 403);
    // The token leaked somehow: still another site.
    let leaked = posted(&[&cookie, &csrf, "Origin: http://evil.example"]).await;
    assert_eq!(leaked.status, 403);
    assert!(leaked.body.contains("other sites"), "{leaked:?}");
    let fetched = posted(&[&cookie, &csrf, "Sec-Fetch-Site: cross-site"]).await;
    assert_eq!(fetched.status, 403);
    // Same cookie, but no token header at all.
    assert_eq!(posted(&[&cookie]).await.status, 403);
    // Another origin's page listening to the event stream.
    let events = format!("{}/events", browser.base);
    let listen = curl(&["-H", &cookie, "-H", "Origin: http://evil.example", &events]).await;
    assert_eq!(listen.status, 403);
    let listen = curl(&["-H", &cookie, "-H", "Sec-Fetch-Site: cross-site", &events]).await;
    assert_eq!(listen.status, 403);
    assert!(agent.ready().is_empty(), "{:?}", agent.ready());
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_sent_from_the_page_reach_each_printer_and_say_what_became_of_them() {
    let octo = OctoPrint::start().await;
    let pi1 = Agent::start_with(|c| {
        forwarding(octo.url(), octo.key.clone(), false)(c);
        c.octoprint.auto_print = AutoPrint::Never;
    })
    .await;
    let pi2 = Agent::start().await;
    let bridge = Bridged::start(
        &[("pi1", &pi1), ("pi2", &pi2)],
        &[("farm", &["pi1", "pi2"])],
    )
    .await;
    let browser = Browser::open(&bridge).await;
    let tmp = tempfile::tempdir().unwrap();
    // A file named to break a page that took text for HTML.
    let hostile = "<img src=x onerror=alert(1)>.gcode";
    let path = tmp.path().join("part.gcode");
    std::fs::copy(data("cube-20mm.gcode"), &path).unwrap();
    let name: String = url_encode(hostile);

    let sent = browser.send(&path, "g:farm", &name, true).await;
    assert_eq!(sent.status, 200, "{sent:?}");
    assert_eq!(sent.json()["jobs"].as_array().unwrap().len(), 2);
    let done = |jobs: &[serde_json::Value]| {
        jobs.len() == 2
            && jobs
                .iter()
                .all(|j| ["started", "waiting"].contains(&j["state"].as_str().unwrap()))
    };
    let state = browser.until("both stored", done).await;
    // pi1 prints it (idle printer, clear bed); pi2 has no printer to
    // forward to, and says so.
    assert_eq!(job(&state, "pi1", hostile)["state"], "started", "{state:#}");
    let waits = job(&state, "pi2", hostile);
    assert_eq!(waits["state"], "waiting");
    assert!(
        waits["text"]
            .as_str()
            .unwrap()
            .contains("forwarding is off"),
        "{waits}"
    );
    assert_eq!(waits["done"], waits["size"]);
    assert_eq!(pi2.read_ready(hostile), std::fs::read(&path).unwrap());
    // Stored everywhere: the local process keeps no copy.
    assert!(bridge.spooled().is_empty(), "{:?}", bridge.spooled());
    wait_state(&pi1, &octo, hostile, &["printing", "printed"]).await;

    // The board: pi1 printing, pi2 with the file waiting (the name is text
    // in JSON; the page puts it in as text).
    let board = poll(GUARD, Duration::from_millis(200), async || {
        let state = browser.state().await;
        let cards = state["agents"].as_array().unwrap().clone();
        let printing = cards[0]["printer"]["job"].is_string();
        let listed = cards[1]["files"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["name"] == hostile));
        (printing && listed).then_some(cards)
    })
    .await;
    assert!(
        board.is_some(),
        "the board never showed the print and the waiting file"
    );

    // Removing the waiting file from pi2's spool.
    let removed = browser
        .call(&["-X", "POST"], &format!("agents/pi2/remove?name={name}"))
        .await;
    assert_eq!(removed.status, 200, "{removed:?}");
    assert!(pi2.ready().is_empty());
    // An agent that is not paired.
    let nope = browser
        .call(&["-X", "POST"], "agents/nope/print?name=a.gcode")
        .await;
    assert_eq!(nope.status, 404, "{nope:?}");

    // Dismissing finished transfers.
    for j in state["jobs"].as_array().unwrap() {
        let id = j["id"].as_u64().unwrap();
        let reply = browser
            .call(&["-X", "POST"], &format!("jobs/{id}/dismiss"))
            .await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    assert!(browser.state().await["jobs"].as_array().unwrap().is_empty());
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_transfer_leaves_nothing_and_can_be_tried_again() {
    let (agent, _link, bridge, browser) = behind_slow_link(1 << 20).await;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.bgcode");
    std::fs::write(&path, content(3, 8 << 20)).unwrap();

    let sent = browser.send(&path, "a:pi", "big.bgcode", false).await;
    let id = sent.json()["jobs"][0].as_u64().unwrap();
    // Once bytes flow, the person cancels.
    browser
        .until("sending", |jobs| {
            jobs[0]["state"] == "sending" && jobs[0]["done"].as_u64() > Some(0)
        })
        .await;
    let cancel = browser
        .call(&["-X", "POST"], &format!("jobs/{id}/cancel"))
        .await;
    assert_eq!(cancel.status, 204, "{cancel:?}");
    let state = browser
        .until("cancelled", |jobs| jobs[0]["state"] == "cancelled")
        .await;
    assert!(
        job(&state, "pi", "big.bgcode")["text"]
            .as_str()
            .unwrap()
            .contains("nothing was stored")
    );
    assert!(agent.ready().is_empty(), "{:?}", agent.ready());
    // Cancelling twice is refused, trying again stores it.
    let again = browser
        .call(&["-X", "POST"], &format!("jobs/{id}/cancel"))
        .await;
    assert_eq!(again.status, 409);
    let retry = browser
        .call(&["-X", "POST"], &format!("jobs/{id}/retry"))
        .await;
    assert_eq!(retry.status, 204, "{retry:?}");
    browser
        .until("stored", |jobs| jobs[0]["state"] == "stored")
        .await;
    assert_eq!(
        agent.read_ready("big.bgcode"),
        std::fs::read(&path).unwrap()
    );

    // The same name, other bytes: not replaced unless asked.
    std::fs::write(&path, content(4, 1 << 20)).unwrap();
    let sent = browser.send(&path, "a:pi", "big.bgcode", false).await;
    let id = sent.json()["jobs"][0].as_u64().unwrap();
    let state = browser
        .until("refused", |jobs| {
            jobs.iter().any(|j| j["state"] == "exists")
        })
        .await;
    assert!(state.to_string().contains("big.bgcode"));
    let replace = browser
        .call(&["-X", "POST"], &format!("jobs/{id}/replace"))
        .await;
    assert_eq!(replace.status, 204);
    browser
        .until("replaced", |jobs| {
            jobs.iter().any(|j| j["id"] == id && j["state"] == "stored")
        })
        .await;
    assert_eq!(
        agent.read_ready("big.bgcode"),
        std::fs::read(&path).unwrap()
    );
    // Kept while a retry could need it, gone once each stored.
    assert!(bridge.spooled().is_empty(), "{:?}", bridge.spooled());
    bridge.stop().await;
}

/// Percent-encodes a query value.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fileagent_ui_starts_the_process_or_asks_the_running_one_for_a_link() {
    use std::io::{BufRead, BufReader};
    let agent = Agent::start().await;
    let home = crate::bridged::workstation_home(&[("pi", &agent, agent.agent_arg())]);
    let listen = format!("127.0.0.1:{}", crate::support::free_port());
    let ui = |home: &std::path::Path| {
        let mut command = crate::support::workstation_command();
        command
            .args(["ui", "--listen", &listen, "--no-open"])
            .env("XDG_CONFIG_HOME", home)
            .env_remove("RUST_LOG");
        command
    };
    let link_in = |text: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix("open "))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
    };
    // Nothing runs there yet: this one serves, and prints a link.
    let mut served = ui(home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(served.stdout.take().unwrap()).lines();
    let first =
        tokio::task::spawn_blocking(move || lines.find_map(|l| link_in(&l.unwrap())).unwrap())
            .await
            .unwrap();
    assert!(
        first.starts_with(&format!("http://{listen}/ui/launch?token=")),
        "{first}"
    );
    // Again: the running process gives a new link.
    let again = ui(home.path()).output().unwrap();
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{text}");
    assert!(text.contains("already running"), "{text}");
    let second = link_in(&text).unwrap();
    assert_ne!(first, second);
    for link in [&first, &second] {
        assert_eq!(curl(&[link]).await.status, 303, "{link}");
        assert_eq!(curl(&[link]).await.status, 401, "{link} twice");
    }
    // Another config folder (another key) is told whose process that is.
    let other = tempfile::tempdir().unwrap();
    let refused = ui(other.path()).output().unwrap();
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(text.contains("another key"), "{text}");
    served.kill().unwrap();
    served.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_breaks_off_while_it_goes_on_to_the_agent_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let agent = Agent::start().await;
    let bridge = Bridged::start(&[("pi", &agent)], &[]).await;
    let browser = Browser::open(&bridge).await;
    // The browser announces 8 MiB, hands over 3 MiB, and goes away (a tab
    // closed mid-upload): the agent has been getting the file meanwhile.
    let addr = bridge.url.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /ui/send?to=a:pi&name=half.bgcode HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\n\
         X-CSRF-Token: {}\r\nOrigin: {}\r\nContent-Length: {}\r\n\r\n",
        browser.cookie,
        browser.csrf,
        browser.origin,
        8 << 20
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&content(5, 3 << 20)).await.unwrap();
    let state = browser
        .until("the transfer under way", |jobs| {
            jobs.iter().any(|j| j["file"] == "half.bgcode")
        })
        .await;
    assert!(job(&state, "pi", "half.bgcode").is_object());
    drop(conn);
    let state = browser
        .until("the transfer failed", |jobs| jobs[0]["state"] == "failed")
        .await;
    let text = job(&state, "pi", "half.bgcode")["text"].as_str().unwrap();
    assert!(text.contains("broke off"), "{text}");
    assert!(agent.ready().is_empty(), "{:?}", agent.ready());
    assert!(bridge.spooled().is_empty(), "{:?}", bridge.spooled());
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_process_lets_the_transfers_from_the_page_finish() {
    let (agent, _link, bridge, browser) = behind_slow_link(2 << 20).await;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.bgcode");
    std::fs::write(&path, content(6, 6 << 20)).unwrap();
    let sent = browser.send(&path, "a:pi", "big.bgcode", false).await;
    assert_eq!(sent.status, 200, "{sent:?}");
    browser
        .until("sending", |jobs| jobs[0]["state"] == "sending")
        .await;
    // The first Ctrl-C: what is under way finishes, then the process stops.
    bridge.stop().await;
    assert_eq!(
        agent.read_ready("big.bgcode"),
        std::fs::read(&path).unwrap()
    );
}

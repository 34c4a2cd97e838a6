//! The README's getting-started walkthrough, run as written: its command
//! lines, in order, through bash, with this build's `wsgate` on the PATH,
//! for each language `wsgate new` knows. Between the lines a real client
//! checks what the README promises: the deployed listener answers, and
//! after the edit and the second build, new connections get the new reply
//! without a restart while an open one stays on the old build.
//!
//! Each language costs a cold build of a fresh project (cargo fetches and
//! compiles the SDK's dependencies; componentize-py and ComponentizeJS
//! run), so these are the slowest tests here: a minute or two apiece.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use wsgate_tests::tungstenite::Message;
use wsgate_tests::{Client, free_port, next_text, wsgate_bin};

const README: &str = include_str!("../../README.md");
const MARKER: &str = "<!-- walkthrough:";

/// The walkthrough's command lines, comments stripped.
fn walkthrough() -> Vec<String> {
    let after = &README[README.find(MARKER).expect("the README has the walkthrough")..];
    let block = after
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sh block follows the marker");
    block
        .lines()
        .map(|line| {
            line.split("  #")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .filter(|line| !line.is_empty())
        .collect()
}

/// A language's listener and test files, to put in place of Python's.
struct Lang {
    flag: &'static str,
    edited: &'static str,
}

const PYTHON_EDITED: &str = "hello/app.py hello/test_app.py";

/// The server started in the background, its process group killed on drop
/// (bash may run wsgate as a child rather than exec it).
struct Background {
    child: Child,
    log: PathBuf,
}

impl Drop for Background {
    fn drop(&mut self) {
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Background {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

struct Walk {
    dir: tempfile::TempDir,
    path: String,
    port: u16,
}

impl Walk {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(wsgate_bin(), bin.join("wsgate")).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Walk {
            dir,
            path,
            port: free_port(),
        }
    }

    fn work(&self) -> PathBuf {
        let work = self.dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        work
    }

    /// bash running `line` in the work folder, the server on a free port
    /// and without the admin API (the README's 8080 and 9090 may be taken).
    fn bash(&self, line: &str) -> Command {
        let mut bash = Command::new("bash");
        bash.arg("-c")
            .arg(line)
            .current_dir(self.work())
            .env("PATH", &self.path)
            .env("WSGATE_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("WSGATE_ADMIN__ENABLED", "false")
            .stdin(Stdio::null());
        // As a user runs it: none of this repository's build and test
        // settings (a shared target directory, clippy as the compiler).
        for var in [
            "WSGATE_BIN",
            "CARGO_TARGET_DIR",
            "RUSTC_WORKSPACE_WRAPPER",
            "CLIPPY_ARGS",
        ] {
            bash.env_remove(var);
        }
        bash
    }

    fn run(&self, line: &str) {
        let started = Instant::now();
        let out = self.bash(line).output().unwrap();
        let shown = format!(
            "$ {line}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "the walkthrough failed at:\n{shown}");
        println!("{:>6.1} s  $ {line}", started.elapsed().as_secs_f64());
    }

    fn spawn(&self, line: &str) -> Background {
        let log = self.dir.path().join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = self
            .bash(line)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap();
        println!("        $ {line} &");
        Background { child, log }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws/hello", self.port)
    }
}

/// Connects to the listener once it answers, skipping the greeting; `None`
/// while the route is not served yet.
async fn connect(url: &str) -> Option<Client> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
    assert_eq!(next_text(&mut ws).await, "welcome to hello");
    Some(ws)
}

async fn ask(ws: &mut Client, text: &str) -> String {
    ws.send(Message::text(text)).await.expect("send");
    next_text(ws).await
}

/// Waits until a new connection gets `reply` to "hi"; returns it.
async fn until_new_connections_get(walk: &Walk, server: &Background, reply: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(mut ws) = connect(&walk.url()).await
            && ask(&mut ws, "hi").await == reply
        {
            return ws;
        }
        assert!(
            Instant::now() < deadline,
            "new connections never got {reply:?}; the server's log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn walk(lang: Lang) {
    let walk = Walk::new();
    let mut server = None;
    let mut first: Option<Client> = None;
    let mut builds = 0;
    for line in walkthrough() {
        let line = line
            .replace("--lang python", lang.flag)
            .replace(PYTHON_EDITED, lang.edited);
        if let Some(background) = line.strip_suffix('&') {
            server = Some(walk.spawn(background.trim()));
            continue;
        }
        walk.run(&line);
        if !line.contains("wsgate build hello --out plugins") {
            continue;
        }
        let server = server
            .as_ref()
            .expect("the server started before the build");
        builds += 1;
        match builds {
            1 => first = Some(until_new_connections_get(&walk, server, "echo: hi").await),
            2 => {
                let mut new = until_new_connections_get(&walk, server, "you said: hi").await;
                assert_eq!(ask(&mut new, "again").await, "you said: again");
                let old = first.as_mut().expect("connected after the first build");
                assert_eq!(
                    ask(old, "still there?").await,
                    "echo: still there?",
                    "an open connection stays on the build it opened with"
                );
            }
            _ => panic!("the walkthrough builds twice"),
        }
    }
    assert_eq!(builds, 2, "the walkthrough deploys, edits and redeploys");
}

#[tokio::test]
async fn walkthrough_in_python() {
    walk(Lang {
        flag: "--lang python",
        edited: PYTHON_EDITED,
    })
    .await;
}

#[tokio::test]
async fn walkthrough_in_rust() {
    walk(Lang {
        flag: "--lang rust",
        edited: "hello/src/lib.rs hello/tests/serve.rs",
    })
    .await;
}

#[tokio::test]
async fn walkthrough_in_javascript() {
    walk(Lang {
        flag: "--lang js",
        edited: "hello/index.js hello/index.test.mjs",
    })
    .await;
}

#[test]
fn the_walkthrough_is_the_readme_s() {
    let lines = walkthrough();
    assert!(
        lines[0].starts_with("wsgate new hello --lang python"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains(PYTHON_EDITED)), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.ends_with('&')).count(), 1);
}

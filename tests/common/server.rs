//! A `kura serve` child process for end-to-end tests of the HTTP API, and a minimal
//! raw HTTP/1.0 client for what SDKs hide (streams read event by event,
//! disconnects, shutdown).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// A `kura serve` child process on a free port; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    data: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts `kura serve` with chat model `chat` over a fresh, empty data folder.
    pub fn start(chat: &str, extra: &[&str]) -> Server {
        Self::start_in(tempfile::tempdir().unwrap(), chat, extra)
    }

    /// Starts `kura serve` with chat model `chat` over the data folder `data` (e.g.
    /// with documents already ingested); the folder lives as long as the server.
    pub fn start_in(data: tempfile::TempDir, chat: &str, extra: &[&str]) -> Server {
        Self::start_with_models(data, &super::real_models_dir(), chat, extra)
    }

    /// Starts `kura serve` over the data folder `data` and the models folder `models`
    /// (e.g. one holding an imported fixture model).
    pub fn start_with_models(
        data: tempfile::TempDir,
        models: &std::path::Path,
        chat: &str,
        extra: &[&str],
    ) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kura"))
            .arg("--data-dir")
            .arg(data.path())
            .arg("--models-dir")
            .arg(models)
            .args(["serve", "--port", "0", "--model", chat])
            .args(extra)
            .env_remove("KURA_HOME")
            .env_remove("KURA_MODELS")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the kura binary starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                panic!("kura serve exited ({status}) before listening; see its stderr above");
            }
            if let Some(rest) = line.trim().strip_prefix("kura serve: listening on http://") {
                break rest.to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let server = Server {
            child,
            addr,
            data: Some(data),
        };
        let (status, health) = server.get("/api/health");
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["status"], "ok");
        server
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("connect to kura serve");
        s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
        s
    }

    /// Sends an HTTP/1.0 request (no chunked encoding: the body ends when the server
    /// closes the connection) and returns the connection positioned at the body.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, BufReader<TcpStream>) {
        let mut s = self.connect();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut status_line = String::new();
        r.read_line(&mut status_line).unwrap();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" || h.is_empty() {
                break;
            }
        }
        (status, r)
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, mut r) = self.send(method, path, body);
        let mut text = String::new();
        r.read_to_string(&mut text).unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text:?}"));
        (status, value)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }

    pub fn queue(&self) -> Value {
        let (status, h) = self.get("/api/health");
        assert_eq!(status, 200, "{h}");
        h["queue"].clone()
    }

    /// Starts a streamed chat completion; returns its event reader.
    pub fn stream(&self, body: Value) -> EventStream {
        let mut body = body;
        body["stream"] = json!(true);
        let (status, r) = self.send("POST", "/v1/chat/completions", Some(&body));
        assert_eq!(status, 200);
        EventStream { r }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The server's data folder.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.as_ref().expect("data folder").path()
    }

    /// Kills the server with SIGKILL (no shutdown of any kind) and hands back its
    /// data folder, to start another server over it.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data.take().expect("data folder")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Server-sent events of one streamed response.
pub struct EventStream {
    pub r: BufReader<TcpStream>,
}

impl EventStream {
    /// The next `data:` payload, or None at the end of the stream.
    pub fn next_data(&mut self) -> Option<String> {
        loop {
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                return Some(data.to_string());
            }
        }
    }

    /// The next named event (`event:` then `data:` lines) as (name, JSON), or None at
    /// the end of the stream. Comment lines (keep-alives) are skipped.
    pub fn next_event(&mut self) -> Option<(String, Value)> {
        let mut name = String::from("message");
        loop {
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let value = serde_json::from_str(data)
                    .unwrap_or_else(|e| panic!("event {name}: data is not JSON ({e}): {data}"));
                return Some((name, value));
            }
        }
    }

    /// The next chunk's content delta (skips role-only chunks); None when the stream
    /// ends or carries no more content.
    pub fn next_content(&mut self) -> Option<String> {
        while let Some(d) = self.next_data() {
            if d == "[DONE]" {
                return None;
            }
            let v: Value = serde_json::from_str(&d).unwrap();
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                if !c.is_empty() {
                    return Some(c.to_string());
                }
            }
        }
        None
    }

    /// Reads to the end; returns the text and the finish reason.
    pub fn collect(mut self) -> (String, String) {
        let mut text = String::new();
        let mut finish = String::new();
        while let Some(d) = self.next_data() {
            if d == "[DONE]" {
                break;
            }
            let v: Value = serde_json::from_str(&d).unwrap();
            assert!(v.get("error").is_none(), "error event: {v}");
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(c);
            }
            if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
        (text, finish)
    }

    /// Closes the connection, as a client that gives up does.
    pub fn disconnect(self) {
        let _ = self.r.get_ref().shutdown(Shutdown::Both);
    }
}

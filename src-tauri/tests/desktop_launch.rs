//! The desktop app, launched for real under a virtual X server (Xvfb).
//!
//! Starts `kura-desktop` with a fresh data folder and the real models, and checks
//! what a user and an administrator would notice: a window appears, the in-process
//! engine answers on loopback and refuses API calls without this launch's token,
//! the window shows the web UI (the navy sidebar where the start-up page is plain,
//! with no "token required" overlay over it), and SIGTERM closes the app and
//! removes the file that held the token. A screenshot goes to
//! `target/desktop-screenshots/desktop-ja.png` (the UI in Japanese: `LANG=ja_JP`);
//! `docs/screenshots/desktop-ja.png` is one of those.
//!
//! Needs what `installer/setup` installs: `Xvfb`, `xdotool`, ImageMagick's `import`
//! and `convert`, Japanese fonts, and the built UI (`ui/dist`). It fails, never
//! skips, when one is missing, and says what to run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The sidebar colour of the UI (`--navy` in ui/src/styles.css).
const NAVY: (u8, u8, u8) = (0x1f, 0x3a, 0x5f);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(program: &str, args: &[&str], display: Option<&str>) -> Output {
    let mut c = Command::new(program);
    c.args(args);
    if let Some(d) = display {
        c.env("DISPLAY", d);
    }
    c.output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn prerequisites() {
    for (tool, package) in [
        ("Xvfb", "xvfb"),
        ("xdotool", "xdotool"),
        ("import", "imagemagick"),
        ("convert", "imagemagick"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is missing: run installer/setup (it installs {package}), or \
             `apt-get install --no-install-recommends {package}`"
        );
    }
    assert!(
        repo().join("ui/dist/index.html").is_file(),
        "the web UI is not built (no ui/dist/index.html): run installer/setup \
         (or `cd ui && npm ci && npm run build`)"
    );
    let models = models_dir();
    assert!(
        models.join("models.toml").is_file(),
        "no models folder at {}: run installer/fetch-models (or set KURA_MODELS)",
        models.display()
    );
}

fn models_dir() -> PathBuf {
    std::env::var_os("KURA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models"))
}

/// Kills the processes it holds when the test ends, however it ends.
struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An X server on a free display number: `(":N", process)`.
fn start_xvfb() -> (String, Child) {
    for n in 90..200 {
        if Path::new(&format!("/tmp/.X{n}-lock")).exists()
            || Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        {
            continue;
        }
        let display = format!(":{n}");
        let mut child = Command::new("Xvfb")
            .args([
                display.as_str(),
                "-screen",
                "0",
                "1280x860x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                return (display, child);
            }
            if let Ok(Some(_)) = child.try_wait() {
                break; // lost a race for this display: try the next one
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no free X display between :90 and :199 for Xvfb");
}

/// `GET path` over HTTP/1.0: (status, body).
fn get(addr: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the engine");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// The colour of pixel (x, y) of a PNG, and its number of distinct colours.
fn inspect(png: &Path, x: u32, y: u32) -> ((u8, u8, u8), usize) {
    let out = run(
        "convert",
        &[
            png.to_str().unwrap(),
            "-format",
            &format!("%[fx:int(255*p{{{x},{y}}}.r)] %[fx:int(255*p{{{x},{y}}}.g)] %[fx:int(255*p{{{x},{y}}}.b)] %k"),
            "info:",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: Vec<usize> = text
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(
        v.len(),
        4,
        "convert said: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ((v[0] as u8, v[1] as u8, v[2] as u8), v[3])
}

fn close(a: (u8, u8, u8), b: (u8, u8, u8)) -> bool {
    a.0.abs_diff(b.0) <= 3 && a.1.abs_diff(b.1) <= 3 && a.2.abs_diff(b.2) <= 3
}

#[test]
fn the_desktop_app_opens_its_window_on_the_in_process_engine() {
    prerequisites();
    let (display, xvfb) = start_xvfb();
    let mut procs = Kill(vec![xvfb]);
    let data = tempfile::tempdir().unwrap();
    let home = data.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let kura_home = data.path().join("kura");

    let mut app = Command::new(env!("CARGO_BIN_EXE_kura-desktop"))
        .env("DISPLAY", &display)
        .env("KURA_HOME", &kura_home)
        .env("KURA_MODELS", models_dir())
        // A small chat model: this test is about the window, not the answers.
        .env("KURA_MODEL", "smollm2-135m-instruct")
        .env("KURA_UI_DIR", repo().join("ui/dist"))
        .env("LANG", "ja_JP.UTF-8")
        .env("LANGUAGE", "ja")
        // WebKit's caches and local storage in the temporary folder, not the user's.
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("KURA_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the kura-desktop binary starts");
    let stdout = app.stdout.take().unwrap();
    let pid = app.id();
    procs.0.push(app);

    // The engine prints its address once it listens (after verifying the models).
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let url = loop {
        match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(line) => {
                if let Some(u) = line
                    .trim()
                    .strip_prefix("kura-desktop: engine listening on ")
                {
                    break u.to_owned();
                }
            }
            Err(_) => {
                panic!("kura-desktop never said where its engine listens; see its stderr above")
            }
        }
    };
    eprintln!(
        "engine up after {:.1} s at {url}",
        started.elapsed().as_secs_f64()
    );
    let addr = url
        .strip_prefix("http://127.0.0.1:")
        .map(|p| format!("127.0.0.1:{p}"));
    let addr = addr.expect("the engine listens on 127.0.0.1 only");

    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(kura_home.join("desktop.json")).expect("desktop.json is written"),
    )
    .unwrap();
    assert_eq!(info["url"], url.as_str());
    let token = info["token"].as_str().expect("a token").to_owned();
    assert!(token.len() >= 32, "a long random token: {token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kura_home.join("desktop.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "desktop.json is readable by this user only"
        );
    }

    let (status, body) = get(&addr, "/api/health", None);
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["models"]["chat"][0]["name"], "smollm2-135m-instruct");
    let (status, body) = get(&addr, "/api/collections", None);
    assert_eq!(status, 401, "the API needs this launch's token: {body}");
    let (status, body) = get(&addr, "/api/collections", Some("not-the-token"));
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(&addr, "/api/collections", Some(&token));
    assert_eq!(status, 200, "{body}");

    // The window, showing the UI: the navy sidebar on the left edge.
    let window = {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = run(
                "xdotool",
                &["search", "--onlyvisible", "--pid", &pid.to_string()],
                Some(&display),
            );
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            if let Some(id) = ids.split_whitespace().next() {
                break id.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no visible window of kura-desktop after 120 s"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let title = run("xdotool", &["getwindowname", &window], Some(&display));
    assert_eq!(String::from_utf8_lossy(&title.stdout).trim(), "Kura 蔵");
    let shots = repo().join("target/desktop-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("desktop-ja.png");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (pixel, colours) = loop {
        let out = run(
            "import",
            &["-window", "root", shot.to_str().unwrap()],
            Some(&display),
        );
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (pixel, colours) = inspect(&shot, 8, 700);
        if close(pixel, NAVY) && colours > 200 {
            break (pixel, colours);
        }
        assert!(
            Instant::now() < deadline,
            "the window {window} did not show the UI within 120 s: pixel (8,700) is {pixel:?}, \
             {colours} colours; see {}",
            shot.display()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    // Settle (fonts, the first API answers), then keep the final picture.
    std::thread::sleep(Duration::from_secs(3));
    run(
        "import",
        &["-window", "root", shot.to_str().unwrap()],
        Some(&display),
    );
    let (after, colours_after) = inspect(&shot, 8, 700);
    assert!(
        close(after, NAVY),
        "the sidebar is covered (e.g. by the token prompt): pixel {after:?}, was {pixel:?}"
    );
    assert!(
        colours_after > 200,
        "a nearly blank screen: {colours} colours"
    );
    eprintln!("screenshot: {} ({colours_after} colours)", shot.display());

    // SIGTERM closes the app and takes the token file with it.
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let app = procs.0.last_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = app.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "kura-desktop did not exit within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        !kura_home.join("desktop.json").exists(),
        "desktop.json (the token) is removed on exit"
    );
}

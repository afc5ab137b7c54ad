//! The tutorials' message-and-file upload (seed 7) over the frame protocol.
//!
//! What it teaches: TCP is a byte stream, so a receiver cannot know where
//! one send ended ("sticky packets"). Each message here is two frames, a
//! 4-byte big-endian length then that many bytes (the format of
//! `echo-reactor --mode frame`, `src/protocol/frame.rs`):
//!
//! 1. a JSON header: `{"type":"message"}` or `{"type":"file","name":"a.txt"}`;
//! 2. the content: the message text or the file's bytes.
//!
//! The receiver answers each with a JSON frame, `{"ok":true}` or
//! `{"ok":false,"error":"..."}`. It stores files in the directory given on
//! its command line and refuses any name that could escape it: absolute
//! paths, `..`, and anything with a directory part (only a plain file
//! name is accepted). It also refuses frames over `MAX_FRAME` before
//! allocating them: the length header is attacker-controlled.
//!
//! Run the receiver: `cargo run --example framed_upload -- receive --listen 127.0.0.1:7014 --dir /tmp/uploads`
//! then send: `cargo run --example framed_upload -- send --to 127.0.0.1:7014 --file Cargo.toml`
//! or: `cargo run --example framed_upload -- send --to 127.0.0.1:7014 --message hello`

use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// Largest frame either side accepts.
const MAX_FRAME: u32 = 64 << 20;

/// Upload messages and files over length-prefixed frames.
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Accept uploads (one client at a time) and store files in DIR.
    Receive {
        #[arg(long, default_value = "127.0.0.1:7014")]
        listen: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Send one message or one file.
    Send {
        #[arg(long, default_value = "127.0.0.1:7014")]
        to: String,
        /// A text message.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        message: Option<String>,
        /// A file to upload.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The name to store the file under (default: the file's name).
        #[arg(long, requires = "file")]
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    let result = match Args::parse().command {
        Command::Receive { listen, dir } => receive(&listen, &dir).map(|()| true),
        Command::Send {
            to,
            message,
            file,
            name,
        } => send(&to, message, file, name),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("framed_upload: {e}");
            ExitCode::FAILURE
        }
    }
}

// ----- the frame format -----------------------------------------------------

fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame too large"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(body)
}

/// Reads one frame; `None` at a clean EOF before its header.
fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    // Read the header, then exactly that many bytes: never "whatever one
    // recv returned".
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(header);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes refused"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

// ----- receiving --------------------------------------------------------------

fn receive(listen: &str, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let listener = TcpListener::bind(listen)?;
    println!("listening on tcp://{}", listener.local_addr()?);
    for stream in listener.incoming() {
        let mut stream = stream?;
        if let Err(e) = serve(&mut stream, dir) {
            eprintln!("client: {e}");
        }
    }
    Ok(())
}

fn serve(stream: &mut TcpStream, dir: &Path) -> io::Result<()> {
    while let Some(header) = read_frame(stream)? {
        let content = read_frame(stream)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "header without content")
        })?;
        let answer = match store(&header, &content, dir) {
            Ok(()) => json!({ "ok": true }),
            Err(why) => json!({ "ok": false, "error": why }),
        };
        write_frame(stream, answer.to_string().as_bytes())?;
    }
    Ok(())
}

fn store(header: &[u8], content: &[u8], dir: &Path) -> Result<(), String> {
    let header: Value = serde_json::from_slice(header).map_err(|e| format!("bad header: {e}"))?;
    match header["type"].as_str() {
        Some("message") => {
            println!("message: {}", String::from_utf8_lossy(content));
            Ok(())
        }
        Some("file") => {
            let name = header["name"].as_str().ok_or("file without a name")?;
            let name = safe_name(name)?;
            fs::write(dir.join(name), content).map_err(|e| format!("cannot store {name}: {e}"))?;
            println!("stored {name} ({} bytes)", content.len());
            Ok(())
        }
        _ => Err("unknown type".into()),
    }
}

/// The name itself if it is one plain path component: no `/`, no `..`,
/// not absolute, not empty. Anything else could land outside the directory.
fn safe_name(name: &str) -> Result<&str, String> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('\\') => Ok(name),
        _ => Err(format!("refused name {name:?}: must be a plain file name")),
    }
}

// ----- sending ----------------------------------------------------------------

fn send(
    to: &str,
    message: Option<String>,
    file: Option<PathBuf>,
    name: Option<String>,
) -> io::Result<bool> {
    let (header, content) = match (message, file) {
        (Some(text), _) => (json!({ "type": "message" }), text.into_bytes()),
        (None, Some(path)) => {
            let name = match name {
                Some(n) => n,
                None => path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| io::Error::other("path has no file name"))?,
            };
            (json!({ "type": "file", "name": name }), fs::read(&path)?)
        }
        (None, None) => return Err(io::Error::other("nothing to send")),
    };
    let mut stream = TcpStream::connect(to)?;
    write_frame(&mut stream, header.to_string().as_bytes())?;
    write_frame(&mut stream, &content)?;
    let answer = read_frame(&mut stream)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"))?;
    let answer: Value = serde_json::from_slice(&answer).map_err(io::Error::other)?;
    println!("{answer}");
    Ok(answer["ok"] == json!(true))
}

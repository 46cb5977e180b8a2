//! Container logs in the CRI format the kubelet writes: one line per record,
//! `<RFC3339Nano> <stdout|stderr> <F|P> <text>`, `P` marking a line split because it was too long.
//! Files are rotated by size, keeping one previous file (`<path>.1`).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Longest line written as one record; longer lines become several `P` records.
const MAX_LINE: usize = 16 * 1024;

/// A container's log file, shared by its stdout and stderr.
#[derive(Clone)]
pub(crate) struct LogFile {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    path: PathBuf,
    /// Opened at the first record: a container that prints nothing costs no file operations
    /// when it starts.
    file: Option<File>,
    size: u64,
    max_size: u64,
}

impl LogFile {
    /// A log at `path`, appended to (a restarted run keeps earlier records).
    pub(crate) fn new(path: &Path, max_size: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                path: path.to_path_buf(),
                file: None,
                size: 0,
                max_size,
            })),
        }
    }

    /// A writer for one stream (`stdout` or `stderr`).
    pub(crate) fn stream(&self, name: &'static str) -> StreamWriter {
        StreamWriter {
            log: self.clone(),
            stream: name,
            partial: Vec::new(),
        }
    }

    pub(crate) fn record(&self, stream: &str, tag: char, text: &[u8]) {
        let ts = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.9fZ")
            .to_string();
        let mut line = Vec::with_capacity(ts.len() + stream.len() + text.len() + 5);
        line.extend_from_slice(ts.as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_bytes());
        line.push(b' ');
        line.push(tag as u8);
        line.push(b' ');
        line.extend_from_slice(text);
        line.push(b'\n');
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.file.is_none() {
            inner.open();
        }
        if inner.size + line.len() as u64 > inner.max_size && inner.size > 0 {
            inner.rotate();
        }
        // Log write failures must not kill the guest; the record is lost.
        if let Some(file) = &mut inner.file
            && file.write_all(&line).is_ok()
        {
            inner.size += line.len() as u64;
        }
    }
}

impl Inner {
    fn open(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(file) => {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(file);
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "cannot open the container log: {e}")
            }
        }
    }

    fn rotate(&mut self) {
        let old = self.path.with_extension(format!(
            "{}.1",
            self.path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("log")
        ));
        if std::fs::rename(&self.path, &old).is_ok()
            && let Ok(f) = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
        {
            self.file = Some(f);
            self.size = 0;
        }
    }
}

/// One stream of a container, writing complete lines as records.
pub(crate) struct StreamWriter {
    log: LogFile,
    stream: &'static str,
    partial: Vec<u8>,
}

impl StreamWriter {
    fn push(&mut self, buf: &[u8]) {
        self.partial.extend_from_slice(buf);
        let mut start = 0;
        while let Some(nl) = self.partial[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl;
            self.log.record(self.stream, 'F', &self.partial[start..end]);
            start = end + 1;
        }
        self.partial.drain(..start);
        while self.partial.len() > MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            self.log.record(self.stream, 'P', &self.partial);
            self.partial = rest;
        }
    }

    fn finish(&mut self) {
        if !self.partial.is_empty() {
            let text = std::mem::take(&mut self.partial);
            self.log.record(self.stream, 'F', &text);
        }
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A guest's stdout or stderr. Writes go straight to the log file: no buffer or helper task per
/// container, and a guest's output costs it no extra trip through the scheduler.
pub(crate) struct GuestOutput {
    log: LogFile,
    stream: &'static str,
}

impl GuestOutput {
    pub(crate) fn new(log: &LogFile, stream: &'static str) -> Self {
        Self {
            log: log.clone(),
            stream,
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.log.stream(self.stream))
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.log.stream(self.stream))
    }
}

impl wasmtime_wasi::p2::Pollable for StreamWriter {
    fn ready<'a, 'f>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'f>>
    where
        'a: 'f,
    {
        Box::pin(std::future::ready(()))
    }
}

impl wasmtime_wasi::p2::OutputStream for StreamWriter {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_cri_records_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let log = LogFile::new(&path, 200);
        let mut out = log.stream("stdout");
        out.push(b"hello\nwor");
        out.push(b"ld\npartial");
        drop(out);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for (line, want) in lines.iter().zip(["hello", "world", "partial"]) {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            assert!(jiff::Timestamp::from_str_rfc3339(parts[0]), "{line}");
            assert_eq!(&parts[1..], ["stdout", "F", want]);
        }
        let mut err = log.stream("stderr");
        for _ in 0..10 {
            err.push(b"0123456789012345678901234567890123456789\n");
        }
        assert!(path.with_extension("log.1").exists(), "the log rotated");
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
    }

    trait Rfc3339 {
        fn from_str_rfc3339(s: &str) -> bool;
    }

    impl Rfc3339 for jiff::Timestamp {
        fn from_str_rfc3339(s: &str) -> bool {
            s.ends_with('Z') && s.len() == 30 && s.parse::<jiff::Timestamp>().is_ok()
        }
    }
}

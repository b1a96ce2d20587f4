//! The query log: one JSON line per statement, written by a thread of its own so a slow
//! disk never slows a session. Lines hold the digest text, never the statement's values,
//! so passwords in `IDENTIFIED BY '…'` or `PASSWORD('…')` cannot reach the file. When the
//! writer falls behind, lines are dropped and counted rather than queued without bound.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use crate::config::QueryLog as Settings;

/// Lines waiting for the writer, at most.
const QUEUE: usize = 16 * 1024;

/// A handle to the query log's writer thread; the thread ends when the last handle goes.
#[derive(Debug)]
pub struct QueryLog {
    settings: Settings,
    lines: SyncSender<String>,
    /// Lines dropped because the writer was behind.
    pub dropped: AtomicU64,
}

impl QueryLog {
    /// Opens (appends to) the log file and starts its writer.
    pub fn open(settings: &Settings) -> std::io::Result<QueryLog> {
        let file = append(&settings.path)?;
        let size = file.metadata()?.len();
        let (lines, queue) = sync_channel(QUEUE);
        let writer = Writer {
            path: settings.path.clone(),
            max_bytes: settings.max_bytes,
            keep: settings.keep,
            file: BufWriter::new(file),
            size,
        };
        std::thread::Builder::new()
            .name("query-log".into())
            .spawn(move || writer.run(queue))?;
        Ok(QueryLog {
            settings: settings.clone(),
            lines,
            dropped: AtomicU64::new(0),
        })
    }

    /// The settings it was opened with (a reload with the same settings keeps it).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Queues one line (a JSON object, without the newline).
    pub fn write(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.lines.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: BufWriter<File>,
    size: u64,
}

impl Writer {
    fn run(mut self, queue: Receiver<String>) {
        while let Ok(line) = queue.recv() {
            self.line(&line);
            while let Ok(more) = queue.try_recv() {
                self.line(&more);
            }
            if let Err(e) = self.file.flush() {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the query log");
            }
        }
    }

    fn line(&mut self, line: &str) {
        if self.size + line.len() as u64 + 1 > self.max_bytes && self.size > 0 {
            if let Err(e) = self.rotate() {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot rotate the query log");
            }
        }
        if writeln!(self.file, "{line}").is_ok() {
            self.size += line.len() as u64 + 1;
        }
    }

    /// `log` → `log.1` → `log.2` … up to `keep`; the oldest falls off.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let numbered = |n: u32| {
            let mut p = self.path.as_os_str().to_owned();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, numbered(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = BufWriter::new(append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueryLogMode;

    #[test]
    fn lines_are_written_and_the_file_rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("sluice-qlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.log");
        let settings = Settings {
            mode: QueryLogMode::All,
            path: path.clone(),
            max_bytes: 1000,
            keep: 2,
        };
        let log = QueryLog::open(&settings).unwrap();
        for i in 0..100 {
            log.write(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(80)));
        }
        drop(log);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let last = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains("\"n\":99") || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(last.contains("\"n\":99"), "{last}");
        assert!(last.len() <= 1000);
        assert!(path.with_extension("log.1").exists() && path.with_extension("log.2").exists());
        assert!(
            !path.with_extension("log.3").exists(),
            "only `keep` files are kept"
        );
    }
}

//! The session's file services: `FileSync` sends a context to the builder, `FileSend` takes
//! the exporter's output from it.
//!
//! # FileSync (fsutil's DiffCopy, lkpkg as the sender)
//! The builder calls `DiffCopy` with gRPC metadata naming the directory (`dir-name`: the
//! dockerfile frontend asks for `context` and `dockerfile`) and the patterns to apply
//! (`include-patterns`, `exclude-patterns`, each value URL-encoded when `<key>-encoded` is
//! true), and `followpaths`, which count as include patterns. lkpkg answers with one `STAT` packet per entry, in walk order, then an empty
//! `STAT`; the builder then asks for file contents with `REQ` packets carrying the index of the
//! file's `STAT`, and each file goes back as `DATA` packets (32 KiB each) ended by an empty one.
//! The builder's `FIN` is answered with a `FIN`, which ends the call. Owners are sent as root
//! (what the docker CLI's file sync does). Only the entries the filter lets through are sent;
//! a directory that is not itself sent but holds something that is, is sent with it.
//!
//! # FileSend (the exporter's output)
//! An exporter without a destination on the builder's side (`oci`, `docker`, `tar`) streams
//! its archive to the session: `BytesMessage`s in one `DiffCopy` call. lkpkg forwards each
//! chunk to the solve's sink (a bounded channel: the ingest on the other end sets the pace)
//! and finishes the call once the builder has closed its side.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bollard_buildkit_proto::fsutil::types::packet::PacketType;
use bollard_buildkit_proto::fsutil::types::{Packet, Stat};
use bollard_buildkit_proto::moby::filesync::v1::BytesMessage;
use bollard_buildkit_proto::moby::filesync::v1::file_send_server::FileSend;
use bollard_buildkit_proto::moby::filesync::v1::file_sync_server::FileSync;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::context_tree::{ContextTree, Kind, Source};
use super::patterns::{Filter, Verdict};

/// Bytes of file content per `DATA` packet (fsutil's own size).
const CHUNK: usize = 32 * 1024;

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send>>;

/// The directories a session offers, by `dir-name`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SyncedDirs {
    pub dirs: HashMap<String, Arc<ContextTree>>,
}

/// The metadata values of `key`, decoded.
fn metadata_values(metadata: &tonic::metadata::MetadataMap, key: &str) -> Vec<String> {
    let encoded = metadata
        .get(format!("{key}-encoded"))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"));
    metadata
        .get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            if encoded {
                query_unescape(v)
            } else {
                v.to_owned()
            }
        })
        .collect()
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte.
fn query_unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn packet(kind: PacketType) -> Packet {
    Packet {
        r#type: kind as i32,
        stat: None,
        id: 0,
        data: Vec::new(),
    }
}

/// The entries of `tree` the filter lets through, in order, with the parents they need.
pub(crate) fn selected(tree: &ContextTree, filter: &Filter) -> Vec<usize> {
    let entries: Vec<_> = tree.entries().collect();
    let mut out = Vec::new();
    // Directories walked but not sent yet, outermost first: sent when something below is.
    let mut pending: Vec<(usize, String)> = Vec::new();
    let mut skipped: Option<String> = None;
    for (i, entry) in entries.iter().enumerate() {
        let path = entry.path.as_str();
        if let Some(prefix) = &skipped {
            if path.starts_with(prefix.as_str()) && path.as_bytes().get(prefix.len()) == Some(&b'/')
            {
                continue;
            }
            skipped = None;
        }
        while let Some((_, dir)) = pending.last() {
            if path.starts_with(dir.as_str()) && path.as_bytes().get(dir.len()) == Some(&b'/') {
                break;
            }
            pending.pop();
        }
        let is_dir = entry.kind == Kind::Dir;
        match filter.verdict(path, is_dir) {
            Verdict::Send => {
                out.extend(pending.drain(..).map(|(j, _)| j));
                out.push(i);
            }
            Verdict::Descend if is_dir => pending.push((i, path.to_owned())),
            Verdict::Descend | Verdict::Skip => {
                if is_dir {
                    skipped = Some(path.to_owned());
                }
            }
        }
    }
    // A directory sent after its parents were popped keeps walk order: indices rise.
    out.sort_unstable();
    out.dedup();
    out
}

fn stat_of(entry: &super::context_tree::Entry) -> Stat {
    Stat {
        path: entry.path.clone(),
        mode: entry.go_mode(),
        uid: 0,
        gid: 0,
        size: entry.size as i64,
        mod_time: entry.mtime_ns,
        linkname: match &entry.kind {
            Kind::Symlink(target) => target.clone(),
            _ => String::new(),
        },
        devmajor: 0,
        devminor: 0,
        xattrs: HashMap::new(),
    }
}

#[tonic::async_trait]
impl FileSync for SyncedDirs {
    type DiffCopyStream = PacketStream;
    type TarStreamStream = PacketStream;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        let metadata = request.metadata();
        let name = metadata_values(metadata, "dir-name")
            .into_iter()
            .next()
            .unwrap_or_default();
        let tree =
            self.dirs.get(&name).cloned().ok_or_else(|| {
                Status::not_found(format!("no directory `{name}` in this session"))
            })?;
        // fsutil adds `followpaths` to the include patterns (lkpkg's contexts hold no links
        // to follow out of them: links are sent as links).
        let mut include = metadata_values(metadata, "include-patterns");
        include.extend(metadata_values(metadata, "followpaths"));
        let filter = Filter::new(&include, &metadata_values(metadata, "exclude-patterns"));
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<Packet, Status>>(64);
        tokio::spawn(async move {
            let chosen = selected(&tree, &filter);
            let entries: Vec<_> = tree.entries().collect();
            let mut files: Vec<Option<&super::context_tree::Entry>> = Vec::new();
            for &i in &chosen {
                let entry = entries[i];
                let mut p = packet(PacketType::PacketStat);
                p.stat = Some(stat_of(entry));
                files.push((entry.kind == Kind::File).then_some(entry));
                if tx.send(Ok(p)).await.is_err() {
                    return;
                }
            }
            if tx.send(Ok(packet(PacketType::PacketStat))).await.is_err() {
                return;
            }
            while let Some(message) = incoming.next().await {
                let Ok(message) = message else { return };
                match PacketType::try_from(message.r#type) {
                    Ok(PacketType::PacketReq) => {
                        let Some(Some(entry)) = files.get(message.id as usize) else {
                            let mut p = packet(PacketType::PacketErr);
                            p.data = format!("no file with id {}", message.id).into_bytes();
                            let _ = tx.send(Ok(p)).await;
                            return;
                        };
                        if let Err(e) = send_file(&tx, message.id, &entry.source).await {
                            let mut p = packet(PacketType::PacketErr);
                            p.data = format!("{}: {e}", entry.path).into_bytes();
                            let _ = tx.send(Ok(p)).await;
                            return;
                        }
                    }
                    Ok(PacketType::PacketFin) => {
                        let _ = tx.send(Ok(packet(PacketType::PacketFin))).await;
                        return;
                    }
                    Ok(PacketType::PacketErr) => {
                        let text = String::from_utf8_lossy(&message.data).into_owned();
                        let _ = tx.send(Err(Status::aborted(text))).await;
                        return;
                    }
                    _ => {}
                }
            }
        });
        Ok(Response::new(Box::pin(super::receiver_stream(rx))))
    }

    async fn tar_stream(
        &self,
        _request: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        Err(Status::unimplemented("lkpkg sends contexts with DiffCopy"))
    }
}

/// One file's content as `DATA` packets, ended by an empty one.
async fn send_file(
    tx: &mpsc::Sender<Result<Packet, Status>>,
    id: u32,
    source: &Source,
) -> std::io::Result<()> {
    let data = |bytes: Vec<u8>| Packet {
        r#type: PacketType::PacketData as i32,
        stat: None,
        id,
        data: bytes,
    };
    let closed = || std::io::Error::other("the builder closed the stream");
    match source {
        Source::Disk(path) => {
            let mut file = tokio::fs::File::open(path).await?;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                tx.send(Ok(data(buf))).await.map_err(|_| closed())?;
            }
        }
        Source::Bytes(bytes) => {
            for chunk in bytes.chunks(CHUNK) {
                tx.send(Ok(data(chunk.to_vec())))
                    .await
                    .map_err(|_| closed())?;
            }
        }
        Source::None => {}
    }
    tx.send(Ok(data(Vec::new()))).await.map_err(|_| closed())
}

/// Where the exporter's archive goes: taken by the first `DiffCopy`.
#[derive(Debug, Default)]
pub(crate) struct ExportSink {
    pub sink: Mutex<Option<mpsc::Sender<bytes::Bytes>>>,
}

#[tonic::async_trait]
impl FileSend for ExportSink {
    type DiffCopyStream = Pin<Box<dyn Stream<Item = Result<BytesMessage, Status>> + Send>>;

    async fn diff_copy(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let sink = self
            .sink
            .lock()
            .map_err(|_| Status::internal("export sink poisoned"))?
            .take()
            .ok_or_else(|| Status::failed_precondition("this session takes one export"))?;
        let mut incoming = request.into_inner();
        while let Some(message) = incoming.next().await {
            let message = message?;
            if message.data.is_empty() {
                continue;
            }
            if sink.send(bytes::Bytes::from(message.data)).await.is_err() {
                return Err(Status::aborted("lkpkg stopped reading the export"));
            }
        }
        drop(sink);
        Ok(Response::new(Box::pin(futures_util::stream::empty())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_unescape_is_gos() {
        assert_eq!(query_unescape("a%2Fb+c"), "a/b c");
        assert_eq!(query_unescape("%21keep"), "!keep");
        assert_eq!(query_unescape("100%"), "100%");
    }

    #[test]
    fn selection_sends_the_parents_of_what_it_sends() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["vendor/keep", "vendor/drop", "src/a.c", "a.log"] {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, f).unwrap();
        }
        let mut tree = ContextTree::new();
        tree.add_dir(dir.path(), "", &[]).unwrap();
        let filter = Filter::new(
            &[],
            &["vendor".into(), "!vendor/keep".into(), "*.log".into()],
        );
        let entries: Vec<_> = tree.entries().collect();
        let sent: Vec<&str> = selected(&tree, &filter)
            .into_iter()
            .map(|i| entries[i].path.as_str())
            .collect();
        assert_eq!(sent, ["src", "src/a.c", "vendor", "vendor/keep"]);
    }
}

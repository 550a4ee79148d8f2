//! The local-directory backend: one file per object under a root directory.
//!
//! Writes go to a temporary file under `root/.partial/`, are synced, then
//! renamed into place (or hard-linked, for create-if-absent), so a reader or
//! a crash never exposes half an object.
//!
//! Multipart uploads are emulated: the parts of upload `U` of `dir/name` are
//! files `dir/.multipart/name.U/NNNNN`; completing concatenates them in
//! part-number order into a partial file renamed onto the key, aborting
//! removes the directory. Names starting with `.` are never object keys and
//! are left out of listings.

use std::io::{ErrorKind, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cascade_schemas::ObjectKey;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::fs;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::{ByteRange, ObjectBody, ObjectMeta, PutOutcome, StorageError};

const PARTIAL_DIR: &str = ".partial";
/// Directory, next to a key, holding the parts of its multipart uploads.
const MULTIPART_DIR: &str = ".multipart";

/// Objects in a directory.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: Arc<PathBuf>,
    /// Age at which [`Self::remove_abandoned_now`] takes leftovers.
    abandoned_after: Duration,
}

fn io_error(key: &str, e: std::io::Error) -> StorageError {
    match e.kind() {
        ErrorKind::NotFound => StorageError::NotFound {
            key: key.to_owned(),
        },
        ErrorKind::Interrupted | ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            StorageError::Transient(format!("{key}: {e}"))
        }
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            StorageError::Full(format!("{key}: {e}"))
        }
        _ => StorageError::Permanent(format!("{key}: {e}")),
    }
}

impl LocalStore {
    /// Opens (creating) the root directory.
    pub async fn open(root: &Path) -> Result<Self, StorageError> {
        fs::create_dir_all(root.join(PARTIAL_DIR))
            .await
            .map_err(|e| io_error(&root.display().to_string(), e))?;
        Ok(Self {
            root: Arc::new(root.to_owned()),
            abandoned_after: crate::config::StorageConfig::default().local_abandoned_after,
        })
    }

    /// Sets the age at which leftovers count as abandoned.
    pub fn abandoning_after(mut self, age: Duration) -> Self {
        self.abandoned_after = age;
        self
    }

    /// [`Self::remove_abandoned`] with the configured age.
    pub async fn remove_abandoned_now(&self) -> Result<usize, StorageError> {
        self.remove_abandoned(self.abandoned_after).await
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps a key to its file, refusing anything that is not a plain relative path.
    fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        let relative = Path::new(key);
        // Names starting with '.' are the store's own (.partial, .multipart).
        let plain = !key.is_empty()
            && relative.components().all(|c| match c {
                Component::Normal(name) => !name.to_string_lossy().starts_with('.'),
                _ => false,
            });
        if !plain {
            return Err(StorageError::Permanent(format!(
                "invalid object key {key:?}"
            )));
        }
        Ok(self.root.join(relative))
    }

    fn partial_path(&self) -> PathBuf {
        self.root
            .join(PARTIAL_DIR)
            .join(uuid::Uuid::new_v4().to_string())
    }

    /// Writes `body` to a synced temporary file and returns it with its size.
    async fn write_partial(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(PathBuf, u64), StorageError> {
        let partial = self.partial_path();
        let result = async {
            let mut file = fs::File::create(&partial)
                .await
                .map_err(|e| io_error(key, e))?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut written = 0u64;
            loop {
                let n = body.read(&mut buf).await.map_err(StorageError::BodyRead)?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n])
                    .await
                    .map_err(|e| io_error(key, e))?;
                written += n as u64;
            }
            // tokio's File writes in the background and reports a write's
            // error on the next operation: flush returns it, sync_all does
            // not. Without this a full disk kept the first 64 KiB of an
            // upload and reported it stored whole.
            file.flush().await.map_err(|e| io_error(key, e))?;
            file.sync_all().await.map_err(|e| io_error(key, e))?;
            let stored = file.metadata().await.map_err(|e| io_error(key, e))?.len();
            if stored != written {
                return Err(StorageError::Transient(format!(
                    "{key}: {stored} of {written} bytes reached the disk"
                )));
            }
            Ok(written)
        }
        .await;
        match result {
            Ok(written) => Ok((partial, written)),
            Err(e) => {
                let _ = fs::remove_file(&partial).await;
                Err(e)
            }
        }
    }

    async fn ensure_parent(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .await
                .map_err(|e| io_error(key, e))?;
        }
        Ok(())
    }

    /// See [`super::ObjectStore::put`].
    pub async fn put(
        &self,
        key: &ObjectKey,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<u64, StorageError> {
        let path = self.path_of(key.as_str())?;
        let (partial, written) = self.write_partial(key.as_str(), body).await?;
        self.ensure_parent(key.as_str(), &path).await?;
        if let Err(e) = fs::rename(&partial, &path).await {
            let _ = fs::remove_file(&partial).await;
            return Err(io_error(key.as_str(), e));
        }
        Ok(written)
    }

    /// See [`super::ObjectStore::put_if_absent`].
    pub async fn put_if_absent(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
    ) -> Result<PutOutcome, StorageError> {
        let path = self.path_of(key.as_str())?;
        let (partial, _) = self
            .write_partial(key.as_str(), &mut bytes.as_ref())
            .await?;
        self.ensure_parent(key.as_str(), &path).await?;
        // link(2) fails if the target exists: an atomic create-if-absent.
        let linked = fs::hard_link(&partial, &path).await;
        let _ = fs::remove_file(&partial).await;
        match linked {
            Ok(()) => Ok(PutOutcome::Created),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(io_error(key.as_str(), e)),
        }
    }

    fn meta_of(key: &str, metadata: &std::fs::Metadata) -> ObjectMeta {
        let modified = metadata.modified().ok().map(DateTime::<Utc>::from);
        let nanos = modified.and_then(|m| m.timestamp_nanos_opt()).unwrap_or(0);
        ObjectMeta {
            key: key.to_owned(),
            size: metadata.len(),
            // Objects are replaced by rename, never edited in place, so size
            // and write time identify the content.
            etag: Some(format!("\"{:x}-{:x}\"", metadata.len(), nanos)),
            last_modified: modified,
            storage_class: None,
        }
    }

    /// The directory of multipart upload `upload_id` of `key`.
    fn multipart_dir(&self, key: &str, upload_id: &str) -> Result<PathBuf, StorageError> {
        let path = self.path_of(key)?;
        // Ids are ours (uuids); anything else names no upload (like S3's NoSuchUpload).
        let id = uuid::Uuid::try_parse(upload_id).map_err(|_| StorageError::NotFound {
            key: key.to_owned(),
        })?;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(StorageError::Permanent(format!(
                "invalid object key {key:?}"
            )));
        };
        Ok(parent
            .join(MULTIPART_DIR)
            .join(format!("{}.{}", name.to_string_lossy(), id.simple())))
    }

    /// Etag of a stored part: its size and write time (parts are replaced by
    /// rename, never edited in place).
    fn part_etag(metadata: &std::fs::Metadata) -> String {
        let nanos = metadata
            .modified()
            .ok()
            .map(DateTime::<Utc>::from)
            .and_then(|m| m.timestamp_nanos_opt())
            .unwrap_or(0);
        format!("\"{:x}-{:x}\"", metadata.len(), nanos)
    }

    /// Removes `dir` if empty, then its parents while empty, up to the root.
    async fn remove_empty_dirs(&self, dir: &Path) {
        let mut current = Some(dir);
        while let Some(d) = current {
            if d == self.root.as_path() || !d.starts_with(self.root.as_path()) {
                break;
            }
            if fs::remove_dir(d).await.is_err() {
                break;
            }
            current = d.parent();
        }
    }

    /// See [`super::ObjectStore::create_multipart`].
    pub async fn create_multipart(&self, key: &ObjectKey) -> Result<String, StorageError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.multipart_dir(key.as_str(), &id)?;
        fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_error(key.as_str(), e))?;
        Ok(id)
    }

    /// See [`super::ObjectStore::upload_part`].
    pub async fn upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        length: u64,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<String, StorageError> {
        let dir = self.multipart_dir(key.as_str(), upload_id)?;
        if !fs::try_exists(&dir).await.unwrap_or(false) {
            return Err(StorageError::NotFound {
                key: key.to_string(),
            });
        }
        let mut limited = (&mut *body).take(length);
        let (partial, written) = self.write_partial(key.as_str(), &mut limited).await?;
        if written != length {
            let _ = fs::remove_file(&partial).await;
            return Err(StorageError::BodyRead(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("the part's body ended after {written} of {length} bytes"),
            )));
        }
        let target = dir.join(format!("{part_number:05}"));
        if let Err(e) = fs::rename(&partial, &target).await {
            let _ = fs::remove_file(&partial).await;
            // The directory went away: the upload was aborted or completed.
            return Err(io_error(key.as_str(), e));
        }
        let metadata = fs::metadata(&target)
            .await
            .map_err(|e| io_error(key.as_str(), e))?;
        Ok(Self::part_etag(&metadata))
    }

    /// See [`super::ObjectStore::complete_multipart`]. Checks what S3 checks:
    /// every listed part exists with its ETag, and all but the last are at
    /// least [`super::MIN_PART_SIZE`].
    pub async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), StorageError> {
        let path = self.path_of(key.as_str())?;
        let dir = self.multipart_dir(key.as_str(), upload_id)?;
        let mut files = Vec::with_capacity(parts.len());
        for (i, (number, etag)) in parts.iter().enumerate() {
            let file = dir.join(format!("{number:05}"));
            let metadata = match fs::metadata(&file).await {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound && i == 0 => {
                    // No such upload (completed or aborted), or no such part.
                    return Err(if fs::try_exists(&dir).await.unwrap_or(false) {
                        StorageError::Permanent(format!("{key}: part {number} was never uploaded"))
                    } else {
                        StorageError::NotFound {
                            key: key.to_string(),
                        }
                    });
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(StorageError::Permanent(format!(
                        "{key}: part {number} was never uploaded"
                    )))
                }
                Err(e) => return Err(io_error(key.as_str(), e)),
            };
            if Self::part_etag(&metadata) != *etag {
                return Err(StorageError::Permanent(format!(
                    "{key}: part {number} has another ETag than {etag}"
                )));
            }
            if i + 1 < parts.len() && metadata.len() < super::MIN_PART_SIZE {
                return Err(StorageError::Permanent(format!(
                    "{key}: part {number} is smaller than the minimum part size"
                )));
            }
            files.push(file);
        }
        let partial = self.partial_path();
        let concatenated = {
            let partial = partial.clone();
            let key = key.to_string();
            tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
                // std::io::copy between files uses copy_file_range on Linux.
                let mut out = std::fs::File::create(&partial).map_err(|e| io_error(&key, e))?;
                for file in &files {
                    let mut part = std::fs::File::open(file).map_err(|e| io_error(&key, e))?;
                    std::io::copy(&mut part, &mut out).map_err(|e| io_error(&key, e))?;
                }
                out.sync_all().map_err(|e| io_error(&key, e))
            })
            .await
            .map_err(|e| StorageError::Permanent(format!("concatenation task failed: {e}")))?
        };
        let placed = match concatenated {
            Ok(()) => {
                self.ensure_parent(key.as_str(), &path).await?;
                fs::rename(&partial, &path)
                    .await
                    .map_err(|e| io_error(key.as_str(), e))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = placed {
            let _ = fs::remove_file(&partial).await;
            return Err(e);
        }
        let _ = fs::remove_dir_all(&dir).await;
        if let Some(multipart) = dir.parent() {
            self.remove_empty_dirs(multipart).await;
        }
        Ok(())
    }

    /// See [`super::ObjectStore::upload_part_copy`]: the source streamed
    /// into the part, as a store would copy it.
    pub async fn upload_part_copy(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        source: &ObjectKey,
        length: u64,
    ) -> Result<String, StorageError> {
        let body = self.get(source, None).await?;
        if body.meta.size != length {
            return Err(StorageError::Permanent(format!(
                "{source} holds {} bytes, not {length}",
                body.meta.size
            )));
        }
        let mut reader = tokio_util::io::StreamReader::new(
            body.stream
                .map(|chunk| chunk.map_err(std::io::Error::other)),
        );
        self.upload_part(key, upload_id, part_number, length, &mut reader)
            .await
    }

    /// See [`super::ObjectStore::abort_multipart`].
    pub async fn abort_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        let dir = match self.multipart_dir(key.as_str(), upload_id) {
            Ok(dir) => dir,
            Err(StorageError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        match fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(key.as_str(), e)),
        }
        if let Some(multipart) = dir.parent() {
            self.remove_empty_dirs(multipart).await;
        }
        Ok(())
    }

    /// See [`super::ObjectStore::get`].
    pub async fn get(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<ObjectBody, StorageError> {
        let path = self.path_of(key.as_str())?;
        let mut file = fs::File::open(&path)
            .await
            .map_err(|e| io_error(key.as_str(), e))?;
        let metadata = file
            .metadata()
            .await
            .map_err(|e| io_error(key.as_str(), e))?;
        if !metadata.is_file() {
            return Err(StorageError::NotFound {
                key: key.to_string(),
            });
        }
        let meta = Self::meta_of(key.as_str(), &metadata);
        let resolved = range.map(|r| r.resolve(meta.size)).transpose()?;
        let (start, len) = match resolved {
            Some((first, last)) => (first, last - first + 1),
            None => (0, meta.size),
        };
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| io_error(key.as_str(), e))?;
        }
        let owned_key = key.to_string();
        let stream = ReaderStream::with_capacity(file.take(len), 64 * 1024)
            .map(move |chunk| chunk.map_err(|e| io_error(&owned_key, e)))
            .boxed();
        Ok(ObjectBody {
            meta,
            range: resolved,
            stream,
        })
    }

    /// See [`super::ObjectStore::head`].
    pub async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        let path = self.path_of(key.as_str())?;
        let metadata = fs::metadata(&path)
            .await
            .map_err(|e| io_error(key.as_str(), e))?;
        if !metadata.is_file() {
            return Err(StorageError::NotFound {
                key: key.to_string(),
            });
        }
        Ok(Self::meta_of(key.as_str(), &metadata))
    }

    /// See [`super::ObjectStore::list`].
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || list_blocking(&root, &prefix))
            .await
            .map_err(|e| StorageError::Permanent(format!("listing task failed: {e}")))?
    }

    /// See [`super::ObjectStore::delete`].
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let path = self.path_of(key.as_str())?;
        match fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(key.as_str(), e)),
        }
    }

    /// See [`super::ObjectStore::delete_prefix`].
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        let objects = self.list(prefix).await?;
        for object in &objects {
            self.delete(&ObjectKey::from_stored(object.key.clone()))
                .await?;
        }
        // Remove directories left empty, deepest first; non-empty ones stay.
        let mut dirs: Vec<PathBuf> = objects
            .iter()
            .filter_map(|o| self.path_of(&o.key).ok()?.parent().map(Path::to_owned))
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        dirs.dedup();
        for dir in dirs {
            self.remove_empty_dirs(&dir).await;
        }
        // The prefix's own directory, emptied earlier by single deletes.
        if let Some(dir) = prefix.strip_suffix('/') {
            if let Ok(dir) = self.path_of(dir) {
                self.remove_empty_dirs(&dir).await;
            }
        }
        Ok(objects.len() as u64)
    }

    /// Removes what a process that died left behind: multipart uploads
    /// (their `.multipart/*` directories) and temporary files (`.partial/`)
    /// not modified for `older_than`; returns how many. A live multipart
    /// upload is touched by every part, so only abandoned ones are this old.
    pub async fn remove_abandoned(&self, older_than: Duration) -> Result<usize, StorageError> {
        let root = self.root.as_ref().clone();
        let stale = tokio::task::spawn_blocking(move || abandoned_blocking(&root, older_than))
            .await
            .map_err(|e| StorageError::Permanent(format!("sweep task: {e}")))??;
        for path in &stale {
            let removed = if path.is_dir() {
                fs::remove_dir_all(path).await
            } else {
                fs::remove_file(path).await
            };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path.display().to_string(), e)),
            }
            if let Some(parent) = path.parent().filter(|p| p.ends_with(MULTIPART_DIR)) {
                self.remove_empty_dirs(parent).await;
            }
        }
        Ok(stale.len())
    }

    /// See [`super::ObjectStore::ping`].
    pub async fn ping(&self) -> Result<(), StorageError> {
        let metadata = fs::metadata(self.root.join(PARTIAL_DIR))
            .await
            .map_err(|e| io_error(&self.root.display().to_string(), e))?;
        if metadata.is_dir() {
            Ok(())
        } else {
            Err(StorageError::Permanent(format!(
                "{} is not a directory",
                self.root.display()
            )))
        }
    }
}

/// The multipart upload directories and temporary files under `root` not
/// modified for `older_than`.
fn abandoned_blocking(root: &Path, older_than: Duration) -> Result<Vec<PathBuf>, StorageError> {
    let now = std::time::SystemTime::now();
    let stale = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|modified| now.duration_since(modified).unwrap_or_default() >= older_than)
    };
    let children = |dir: &Path| -> Result<Vec<std::fs::DirEntry>, StorageError> {
        match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| io_error(&dir.display().to_string(), e)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_error(&dir.display().to_string(), e)),
        }
    };
    let mut out: Vec<PathBuf> = children(&root.join(PARTIAL_DIR))?
        .into_iter()
        .map(|e| e.path())
        .filter(|p| stale(p))
        .collect();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in children(&dir)? {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            if name == MULTIPART_DIR {
                out.extend(
                    children(&entry.path())?
                        .into_iter()
                        .map(|e| e.path())
                        .filter(|p| stale(p)),
                );
            } else if !name.to_string_lossy().starts_with('.') {
                stack.push(entry.path());
            }
        }
    }
    Ok(out)
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
    // Start at the deepest directory the prefix names, not at the root.
    let dir_part = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    if Path::new(dir_part)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(StorageError::Permanent(format!(
            "invalid prefix {prefix:?}"
        )));
    }
    let start = root.join(dir_part);
    let mut out = Vec::new();
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&dir.display().to_string(), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&dir.display().to_string(), e))?;
            let path = entry.path();
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            let Some(key) = relative
                .to_str()
                .map(|s| s.replace(std::path::MAIN_SEPARATOR, "/"))
            else {
                continue;
            };
            // The store's own files (.partial, .multipart), never objects.
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let file_type = entry.file_type().map_err(|e| io_error(&key, e))?;
            if file_type.is_dir() {
                if format!("{key}/").starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                    stack.push(path);
                }
            } else if file_type.is_file() && key.starts_with(prefix) {
                let metadata = entry.metadata().map_err(|e| io_error(&key, e))?;
                out.push(LocalStore::meta_of(&key, &metadata));
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_schemas::AssetId;

    #[tokio::test]
    async fn abandoned_multipart_uploads_and_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).await.unwrap();
        let kept = ObjectKey::source(AssetId::new());
        store.put(&kept, &mut &b"an object"[..]).await.unwrap();
        let key = ObjectKey::source(AssetId::new());
        let upload = store.create_multipart(&key).await.unwrap();
        let etag = store
            .upload_part(&key, &upload, 1, 3, &mut &b"abc"[..])
            .await
            .unwrap();
        let temporary = dir.path().join(PARTIAL_DIR).join("left-by-a-crash");
        std::fs::write(&temporary, b"half an object").unwrap();

        // Recent ones may still be in use: kept.
        assert_eq!(
            store
                .remove_abandoned(Duration::from_secs(3600))
                .await
                .unwrap(),
            0
        );
        assert!(temporary.exists());
        // Old enough (here: any age): the upload and the file go.
        assert_eq!(store.remove_abandoned(Duration::ZERO).await.unwrap(), 2);
        assert!(!temporary.exists());
        let parent = store.path_of(key.as_str()).unwrap();
        assert!(
            !parent.parent().unwrap().join(MULTIPART_DIR).exists(),
            "the emptied .multipart directory is removed too"
        );
        assert!(matches!(
            store.complete_multipart(&key, &upload, &[(1, etag)]).await,
            Err(StorageError::NotFound { .. })
        ));
        // Objects are never touched.
        assert_eq!(
            store
                .get(&kept, None)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap(),
            Bytes::from_static(b"an object")
        );
    }
}

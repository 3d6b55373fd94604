//! Image archives written directly, without a container engine.
//!
//! An image of this project is one layer: a root filesystem assembled on the host (a static or
//! `ldd`-complete binary, `/etc/passwd`, CA certificates, `/tmp`, a data directory). Nothing of
//! it needs a build engine, so this module writes the archive itself: an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…`) with a docker-archive `manifest.json` beside
//! it, the same shape `docker save` writes. `ctr images import`, `kind load image-archive`,
//! `podman load` and `docker load` all read it.
//!
//! The OCI documents come from the `oci-spec` crate; the tar streams from `tar`. What is left
//! here is the layout itself: which files, in which order, with which owners. Every entry has
//! mtime 0 and entries are sorted, so the same root filesystem always gives the same digests.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest,
};
use sha2::{Digest as _, Sha256};

/// The annotation containerd reads for the image's full name.
const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

/// What goes into an image besides its root filesystem.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// `name:tag`, as users write it (`scan-engine:0.1.0`).
    pub reference: String,
    /// The configured entrypoint.
    pub entrypoint: Vec<String>,
    /// The configured user, `uid:gid`.
    pub user: String,
    /// Environment of every container of the image.
    pub env: Vec<String>,
    /// Directories (relative to the root) owned by `owner` with everything under them; the
    /// rest belongs to root.
    pub owned: Vec<PathBuf>,
    /// The owner of `owned`, as `(uid, gid)`.
    pub owner: (u64, u64),
    /// `org.opencontainers.image.*` labels.
    pub labels: BTreeMap<String, String>,
}

/// One image read back from an archive.
#[derive(Debug)]
pub struct ArchivedImage {
    /// The `name:tag` the archive gives it.
    pub reference: String,
    /// Its configuration.
    pub config: ImageConfiguration,
    /// The layer, an uncompressed tar stream.
    pub layer: Vec<u8>,
}

/// The hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_digest(bytes: &[u8]) -> Result<Sha256Digest> {
    sha256_hex(bytes)
        .parse()
        .map_err(|e| anyhow::anyhow!("sha256 digest: {e}"))
}

/// A tar header for an entry with a fixed mtime and the given owner and mode.
fn header(kind: tar::EntryType, size: u64, mode: u32, owner: (u64, u64)) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(owner.0);
    header.set_gid(owner.1);
    header.set_mtime(0);
    header
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(meta: &fs::Metadata) -> u32 {
    if meta.is_dir() { 0o755 } else { 0o644 }
}

/// Every path under `dir` (relative to `root`), directories before their contents, sorted.
fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort();
    for path in entries {
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        let relative = path
            .strip_prefix(root)
            .with_context(|| format!("{} is outside {}", path.display(), root.display()))?;
        out.push(relative.to_path_buf());
        if meta.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

/// The image's one layer: `rootfs` as an uncompressed tar stream, root-owned except
/// `spec.owned`.
pub fn layer(rootfs: &Path, spec: &ImageSpec) -> Result<Vec<u8>> {
    let mut paths = Vec::new();
    walk(rootfs, rootfs, &mut paths)?;
    let mut tar = tar::Builder::new(Vec::new());
    for relative in paths {
        let path = rootfs.join(&relative);
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        let owner = if spec.owned.iter().any(|o| relative.starts_with(o)) {
            spec.owner
        } else {
            (0, 0)
        };
        let mode = mode_of(&meta);
        if meta.is_dir() {
            let mut h = header(tar::EntryType::Directory, 0, mode, owner);
            tar.append_data(&mut h, &relative, std::io::empty())?;
        } else if meta.file_type().is_symlink() {
            let target =
                fs::read_link(&path).with_context(|| format!("reading {}", path.display()))?;
            let mut h = header(tar::EntryType::Symlink, 0, 0o777, owner);
            tar.append_link(&mut h, &relative, &target)?;
        } else if meta.is_file() {
            let file =
                fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let mut h = header(tar::EntryType::Regular, meta.len(), mode, owner);
            tar.append_data(&mut h, &relative, file)?;
        } else {
            bail!(
                "{}: neither a file, a directory nor a symlink",
                path.display()
            );
        }
    }
    tar.into_inner().context("finishing the layer")
}

/// The registry-qualified name containerd and the kubelet use for `reference`.
pub fn full_name(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or_default();
    let has_registry = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_registry, reference.contains('/')) {
        (true, _) => reference.to_owned(),
        (false, true) => format!("docker.io/{reference}"),
        (false, false) => format!("docker.io/library/{reference}"),
    }
}

/// Writes the image of `rootfs` to `out` (atomically: a temporary file, then a rename) and
/// returns the manifest's digest.
pub fn write(rootfs: &Path, spec: &ImageSpec, out: &Path) -> Result<String> {
    let layer = layer(rootfs, spec)?;
    let layer_digest = sha256_digest(&layer)?;

    let config = ImageConfigurationBuilder::default()
        .created("1970-01-01T00:00:00Z")
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .user(spec.user.clone())
                .entrypoint(spec.entrypoint.clone())
                .env(spec.env.clone())
                .working_dir("/")
                .labels(spec.labels.clone().into_iter().collect::<HashMap<_, _>>())
                .build()?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![format!("sha256:{layer_digest}")])
                .build()?,
        )
        .history(vec![
            HistoryBuilder::default()
                .created("1970-01-01T00:00:00Z")
                .created_by("cargo xtask images")
                .build()?,
        ])
        .build()?;
    let config_json = serde_json::to_vec(&config)?;
    let config_digest = sha256_digest(&config_json)?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_json.len() as u64,
            config_digest.clone(),
        ))
        .layers(vec![Descriptor::new(
            MediaType::ImageLayer,
            layer.len() as u64,
            layer_digest.clone(),
        )])
        .build()?;
    let manifest_json = serde_json::to_vec(&manifest)?;
    let manifest_digest = sha256_digest(&manifest_json)?;

    let tag = spec
        .reference
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let mut descriptor = Descriptor::new(
        MediaType::ImageManifest,
        manifest_json.len() as u64,
        manifest_digest.clone(),
    );
    descriptor.set_annotations(Some(HashMap::from([
        (CONTAINERD_IMAGE_NAME.to_owned(), full_name(&spec.reference)),
        (ANNOTATION_REF_NAME.to_owned(), tag.to_owned()),
    ])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor])
        .build()?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;
    // docker-archive's manifest: what `docker load` and tools without OCI support read.
    let docker_manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": [spec.reference],
        "Layers": [format!("blobs/sha256/{layer_digest}")],
    }]);

    let mut files: Vec<(String, Vec<u8>)> = vec![
        (format!("blobs/sha256/{config_digest}"), config_json),
        (format!("blobs/sha256/{layer_digest}"), layer),
        (format!("blobs/sha256/{manifest_digest}"), manifest_json),
        ("index.json".into(), serde_json::to_vec(&index)?),
        (
            "manifest.json".into(),
            serde_json::to_vec(&docker_manifest)?,
        ),
        ("oci-layout".into(), serde_json::to_vec(&layout)?),
    ];
    files.sort_by(|a, b| a.0.cmp(&b.0));

    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(tar::EntryType::Directory, 0, 0o755, (0, 0));
        tar.append_data(&mut h, dir, std::io::empty())?;
    }
    for (name, bytes) in &files {
        let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o644, (0, 0));
        tar.append_data(&mut h, name, bytes.as_slice())?;
    }
    let archive = tar.into_inner().context("finishing the archive")?;

    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = out.with_extension("tar.tmp");
    fs::write(&tmp, &archive).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(format!("sha256:{manifest_digest}"))
}

/// Reads an archive written by [`write`] (or `docker save`) back, checking every blob it uses
/// against its digest.
pub fn read(path: &Path) -> Result<ArchivedImage> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut files = HashMap::new();
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        files.insert(name, bytes);
    }
    let blob = |digest: &str| -> Result<&Vec<u8>> {
        let hex = digest
            .strip_prefix("sha256:")
            .with_context(|| format!("{digest}: not a sha256 digest"))?;
        let bytes = files
            .get(&format!("blobs/sha256/{hex}"))
            .with_context(|| format!("{}: blob {digest} is missing", path.display()))?;
        if sha256_hex(bytes) != hex {
            bail!(
                "{}: blob {digest} does not match its digest",
                path.display()
            );
        }
        Ok(bytes)
    };
    let index: ImageIndex = serde_json::from_slice(
        files
            .get("index.json")
            .with_context(|| format!("{}: no index.json", path.display()))?,
    )
    .with_context(|| format!("{}: index.json", path.display()))?;
    let [descriptor] = index.manifests().as_slice() else {
        bail!("{}: expected exactly one image", path.display());
    };
    let reference = descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINERD_IMAGE_NAME))
        .cloned()
        .unwrap_or_default();
    let manifest: ImageManifest = serde_json::from_slice(blob(descriptor.digest().as_ref())?)
        .with_context(|| format!("{}: manifest", path.display()))?;
    let config: ImageConfiguration =
        serde_json::from_slice(blob(manifest.config().digest().as_ref())?)
            .with_context(|| format!("{}: config", path.display()))?;
    let [layer] = manifest.layers().as_slice() else {
        bail!("{}: expected exactly one layer", path.display());
    };
    let layer = blob(layer.digest().as_ref())?.clone();
    if config.rootfs().diff_ids() != &[format!("sha256:{}", sha256_hex(&layer))] {
        bail!(
            "{}: the config's diff_ids do not name the layer",
            path.display()
        );
    }
    Ok(ArchivedImage {
        reference,
        config,
        layer,
    })
}

/// Unpacks a layer into `dir`, keeping modes (and owners, when run as root).
pub fn unpack(layer: &[u8], dir: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(layer);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive
        .unpack(dir)
        .with_context(|| format!("unpacking a layer into {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use oci_spec::image::ANNOTATION_VERSION;

    use super::*;

    fn spec() -> ImageSpec {
        ImageSpec {
            reference: "scan-engine:0.1.0".into(),
            entrypoint: vec!["/usr/local/bin/scan-engine".into()],
            user: "65532:65532".into(),
            env: vec!["PATH=/usr/local/bin".into()],
            owned: vec![PathBuf::from("var/lib/scan-engine")],
            owner: (65532, 65532),
            labels: BTreeMap::from([(ANNOTATION_VERSION.to_owned(), "0.1.0".to_owned())]),
        }
    }

    fn rootfs(dir: &Path) {
        fs::create_dir_all(dir.join("usr/local/bin")).unwrap();
        fs::write(dir.join("usr/local/bin/scan-engine"), b"#!binary").unwrap();
        fs::create_dir_all(dir.join("var/lib/scan-engine")).unwrap();
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(
            dir.join("etc/passwd"),
            b"nonroot:x:65532:65532::/:/sbin/nologin\n",
        )
        .unwrap();
    }

    #[test]
    fn an_archive_reads_back_with_its_name_user_and_files() {
        let tmp = tempdir();
        let dir = tmp.path();
        rootfs(&dir.join("rootfs"));
        let out = dir.join("scan-engine.tar");
        write(&dir.join("rootfs"), &spec(), &out).unwrap();

        let image = read(&out).unwrap();
        assert_eq!(image.reference, "docker.io/library/scan-engine:0.1.0");
        let config = image.config.config().as_ref().unwrap();
        assert_eq!(config.user().as_deref(), Some("65532:65532"));
        assert_eq!(
            config.entrypoint().as_deref(),
            Some(&["/usr/local/bin/scan-engine".to_owned()][..])
        );

        let mut owners = BTreeMap::new();
        for entry in tar::Archive::new(image.layer.as_slice()).entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            owners.insert(
                entry
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_owned(),
                (h.uid().unwrap(), h.mtime().unwrap()),
            );
        }
        assert_eq!(owners["usr/local/bin/scan-engine"], (0, 0));
        assert_eq!(owners["var/lib/scan-engine"], (65532, 0));
        assert_eq!(owners["etc/passwd"], (0, 0));
    }

    #[test]
    fn the_same_root_filesystem_gives_the_same_digest() {
        let tmp = tempdir();
        let dir = tmp.path();
        rootfs(&dir.join("rootfs"));
        let a = write(&dir.join("rootfs"), &spec(), &dir.join("a.tar")).unwrap();
        let b = write(&dir.join("rootfs"), &spec(), &dir.join("b.tar")).unwrap();
        assert_eq!(a, b);
        fs::write(dir.join("rootfs/usr/local/bin/scan-engine"), b"#!other").unwrap();
        let c = write(&dir.join("rootfs"), &spec(), &dir.join("c.tar")).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn a_tampered_blob_is_refused() {
        let tmp = tempdir();
        let dir = tmp.path();
        rootfs(&dir.join("rootfs"));
        let out = dir.join("x.tar");
        write(&dir.join("rootfs"), &spec(), &out).unwrap();
        let mut bytes = fs::read(&out).unwrap();
        let at = bytes
            .windows(8)
            .position(|w| w == b"#!binary")
            .expect("the binary is in the archive");
        bytes[at + 2] = b'B';
        fs::write(&out, &bytes).unwrap();
        let err = read(&out).unwrap_err().to_string();
        assert!(err.contains("does not match its digest"), "{err}");
    }

    #[test]
    fn names_are_qualified_like_the_kubelet_does() {
        assert_eq!(
            full_name("scan-engine:0.1.0"),
            "docker.io/library/scan-engine:0.1.0"
        );
        assert_eq!(
            full_name("acme/scan-engine:1"),
            "docker.io/acme/scan-engine:1"
        );
        assert_eq!(
            full_name("registry.example:5000/x:1"),
            "registry.example:5000/x:1"
        );
        assert_eq!(full_name("localhost/x:1"), "localhost/x:1");
    }

    /// A fresh directory, removed when the test ends.
    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }
}

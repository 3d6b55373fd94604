//! `cargo xtask images`: the project's three container images, built without pulling anything
//! and without a container engine.
//!
//! Each image is a static or `ldd`-complete binary on an empty base, so nothing needs a build
//! engine: this command compiles the release binaries on the host, assembles for each image a
//! root filesystem with the binary and exactly the shared libraries it links (from `ldd`), plus
//! `/etc/passwd` with the non-root user 65532, CA certificates, an empty `/tmp` and the data
//! directory owned by 65532, and writes it as an image archive (`crate::oci`) to
//! `target/images/<name>.tar`, tagged `<name>:<workspace version>`. A cluster imports it with
//! `ctr -n k8s.io images import`, `kind load image-archive`, or `docker load`.
//!
//! The Dockerfiles (`Dockerfile`, `engine-image/Dockerfile`, `console/Dockerfile`) stay for
//! users who build with Docker: their default stage compiles the binary in a Rust builder
//! image (`RUST_IMAGE`) and copies it onto distroless `cc` (`RUNTIME_IMAGE`); their `prebuilt`
//! stage copies `target/images/context/<name>/rootfs`, as this command assembles it, onto
//! `RUNTIME_IMAGE` (`docker build --target prebuilt --build-arg RUNTIME_IMAGE=scratch`).
//!
//! `cargo xtask images --check` inspects the archives instead of building them: each image must
//! be configured to run as the non-root user, and its binary must start (`--version`) from the
//! unpacked image as that user, on a read-only root filesystem, in a network namespace of its
//! own, with no capabilities and no way to gain privileges (root needed: chroot and mounts).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::oci;

/// The user every image runs as (distroless `nonroot`).
pub const NONROOT: &str = "65532:65532";

/// One image of the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    /// Image name (tagged with the workspace version).
    pub name: &'static str,
    /// Cargo package that builds the binary.
    pub package: &'static str,
    /// Binary name (installed as `/usr/local/bin/<binary>`).
    pub binary: &'static str,
    /// Dockerfile, relative to the workspace root.
    pub dockerfile: &'static str,
    /// Directory the binary writes to (a volume in pods), owned by the non-root user.
    pub data_dir: Option<&'static str>,
}

/// The three images.
pub const IMAGES: [Image; 3] = [
    Image {
        name: "scan-engine-operator",
        package: "scan-engine-operator",
        binary: "scan-engine-operator",
        dockerfile: "Dockerfile",
        data_dir: None,
    },
    Image {
        name: "scan-engine",
        package: "scan-engine",
        binary: "scan-engine",
        dockerfile: "engine-image/Dockerfile",
        data_dir: Some("var/lib/scan-engine"),
    },
    Image {
        name: "security-console",
        package: "security-console",
        binary: "security-console",
        dockerfile: "console/Dockerfile",
        data_dir: Some("var/lib/security-console"),
    },
];

/// Arguments of `cargo xtask images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Check the built images (non-root user, binary starts on a read-only root) instead of
    /// building them.
    #[arg(long)]
    pub check: bool,
    /// Only these images (by name; default: all three).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Only assemble the root filesystems (target/images/context/<name>/rootfs, for
    /// `docker build --target prebuilt`); write no archives.
    #[arg(long)]
    pub no_save: bool,
    /// Use binaries already in target/release instead of running `cargo build --release`.
    #[arg(long)]
    pub no_cargo_build: bool,
}

/// `<name>:<version>`.
pub fn tag(image: &Image) -> String {
    format!("{}:{}", image.name, env!("CARGO_PKG_VERSION"))
}

fn selected(args: &ImagesArgs) -> Result<Vec<Image>> {
    if args.only.is_empty() {
        return Ok(IMAGES.to_vec());
    }
    args.only
        .iter()
        .map(|n| {
            IMAGES
                .iter()
                .copied()
                .find(|i| i.name == n)
                .with_context(|| {
                    format!(
                        "unknown image {n}; known: {}",
                        IMAGES.map(|i| i.name).join(", ")
                    )
                })
        })
        .collect()
}

/// `cargo xtask images [--check]`.
pub fn images(root: &Path, args: &ImagesArgs) -> Result<()> {
    let images = selected(args)?;
    let out = root.join("target/images");
    if args.check {
        return check(&out, &images);
    }
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    if !args.no_cargo_build {
        let start = Instant::now();
        let mut cargo = crate::cargo();
        cargo.args(["build", "--release"]).current_dir(root);
        for image in &images {
            cargo.args(["-p", image.package, "--bin", image.binary]);
        }
        eprintln!("xtask: {}", crate::describe(&cargo));
        let status = cargo.status().context("running cargo build --release")?;
        if !status.success() {
            bail!("cargo build --release failed ({status})");
        }
        eprintln!(
            "xtask: release binaries built in {:.0}s",
            start.elapsed().as_secs_f64()
        );
    }

    for image in &images {
        let start = Instant::now();
        let context = out.join("context").join(image.name);
        assemble_rootfs(root, image, &context)?;
        let dockerfile = root.join(image.dockerfile);
        let text = fs::read_to_string(&dockerfile)
            .with_context(|| format!("reading {}", dockerfile.display()))?;
        let meta = prebuilt_metadata(&text)
            .with_context(|| format!("{}: the prebuilt stage", image.dockerfile))?;
        let spec = oci::ImageSpec {
            reference: tag(image),
            entrypoint: vec![format!("/usr/local/bin/{}", image.binary)],
            user: NONROOT.to_owned(),
            env: std::iter::once("PATH=/usr/local/bin".to_owned())
                .chain(meta.env.iter().map(|(k, v)| format!("{k}={v}")))
                .collect(),
            owned: image.data_dir.iter().map(PathBuf::from).collect(),
            owner: (65532, 65532),
            labels: meta
                .labels
                .into_iter()
                .chain([(
                    "org.opencontainers.image.version".to_owned(),
                    env!("CARGO_PKG_VERSION").to_owned(),
                )])
                .collect(),
        };
        let archive = out.join(format!("{}.tar", image.name));
        if args.no_save {
            // Only the root filesystem (for `docker build --target prebuilt`).
            eprintln!(
                "xtask: {} assembled in {}",
                spec.reference,
                context.display()
            );
            continue;
        }
        let digest = oci::write(&context.join("rootfs"), &spec, &archive)?;
        let size = fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "xtask: {} ({digest}, {:.1} MB) written to {} in {:.1}s",
            spec.reference,
            size as f64 / 1e6,
            archive.display(),
            start.elapsed().as_secs_f64()
        );
    }
    if args.no_save {
        return Ok(());
    }
    check(&out, &images)
}

/// What the `prebuilt` stage of a Dockerfile sets besides its files: `LABEL` and `ENV` pairs.
/// The archives carry the same, so an image is the same whichever way it is built.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StageMetadata {
    /// `LABEL key="value"` pairs.
    pub labels: Vec<(String, String)>,
    /// `ENV key=value` pairs.
    pub env: Vec<(String, String)>,
}

/// Reads the `LABEL` and `ENV` instructions of the stage `… AS prebuilt` (continuation lines
/// joined; `key=value` and `key="value"` pairs).
pub fn prebuilt_metadata(dockerfile: &str) -> Result<StageMetadata> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut meta = StageMetadata::default();
    let mut in_stage = false;
    let mut seen = false;
    for instruction in instructions {
        let (keyword, rest) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((instruction.as_str(), ""));
        match keyword.to_ascii_uppercase().as_str() {
            "FROM" => {
                in_stage = rest
                    .trim_end()
                    .to_ascii_lowercase()
                    .ends_with(" as prebuilt");
                seen |= in_stage;
            }
            "LABEL" if in_stage => meta.labels.extend(pairs(rest)?),
            "ENV" if in_stage => meta.env.extend(pairs(rest)?),
            _ => {}
        }
    }
    if !seen {
        bail!("no stage named prebuilt");
    }
    Ok(meta)
}

/// `a="x y" b=z` → `[(a, "x y"), (b, z)]`.
fn pairs(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .with_context(|| format!("`{rest}`: expected key=value"))?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted
                    .find('"')
                    .with_context(|| format!("`{rest}`: unterminated quote"))?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(char::is_whitespace).unwrap_or((after, "")),
        };
        out.push((key.trim().to_owned(), value.to_owned()));
        rest = after.trim_start();
    }
    Ok(out)
}

/// Builds `<context>/rootfs`: the binary, the shared libraries it links, the non-root user,
/// CA certificates, `/tmp` and the data directory.
pub fn assemble_rootfs(root: &Path, image: &Image, context: &Path) -> Result<()> {
    if context.exists() {
        fs::remove_dir_all(context).with_context(|| format!("clearing {}", context.display()))?;
    }
    let rootfs = context.join("rootfs");
    let binary = root.join("target/release").join(image.binary);
    if !binary.is_file() {
        bail!(
            "{} does not exist; build it with `cargo build --release -p {}`",
            binary.display(),
            image.package
        );
    }
    copy_into(
        &binary,
        &rootfs,
        Path::new("/usr/local/bin").join(image.binary).as_path(),
    )?;

    let out = Command::new("ldd")
        .arg(&binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for lib in shared_libraries(&text)? {
        copy_into(Path::new(&lib), &rootfs, Path::new(&lib))?;
    }

    let etc = rootfs.join("etc");
    fs::create_dir_all(&etc)?;
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )?;
    fs::write(etc.join("group"), "root:x:0:\nnonroot:x:65532:\n")?;
    fs::write(etc.join("nsswitch.conf"), "hosts: files dns\n")?;
    let certs = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if certs.is_file() {
        copy_into(certs, &rootfs, certs)?;
    }
    let tmp = rootfs.join("tmp");
    fs::create_dir_all(&tmp)?;
    set_mode(&tmp, 0o1777)?;
    // Owned by 65532 in the archive; for a Docker build, `data/` is copied there with
    // --chown=65532:65532 (empty: only the ownership matters).
    if let Some(data) = image.data_dir {
        fs::create_dir_all(rootfs.join(data))?;
    }
    fs::create_dir_all(context.join("data"))?;
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> Result<()> {
    Ok(())
}

/// Copies `src` (following symlinks) to `rootfs` + absolute `dest`.
fn copy_into(src: &Path, rootfs: &Path, dest: &Path) -> Result<()> {
    let target: PathBuf = rootfs.join(dest.strip_prefix("/").unwrap_or(dest));
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(src, &target)
        .with_context(|| format!("copying {} to {}", src.display(), target.display()))?;
    Ok(())
}

/// The absolute paths of the shared libraries (and the loader) in `ldd` output. A library
/// that is "not found" is an error; a static binary has none.
pub fn shared_libraries(ldd: &str) -> Result<Vec<String>> {
    let mut libs = Vec::new();
    for line in ldd.lines().map(str::trim) {
        if line.is_empty()
            || line.contains("statically linked")
            || line.contains("not a dynamic executable")
        {
            continue;
        }
        if line.contains("not found") {
            bail!("ldd: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next().unwrap_or_default(),
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        // linux-vdso.so.1 has no file; everything real is an absolute path.
        if path.starts_with('/') && !libs.iter().any(|l| l == path) {
            libs.push(path.to_owned());
        }
    }
    Ok(libs)
}

/// Whether an image's configured user is non-root: set, and neither `0`/`root` as user.
pub fn user_is_nonroot(user: &str) -> bool {
    let name = user.trim().split(':').next().unwrap_or_default();
    !name.is_empty() && name != "0" && name != "root"
}

/// `cargo xtask images --check`: for each archive in `dir`, the configured user must be the
/// non-root user, and the binary must start from the unpacked image as that user on a
/// read-only root, with no network and no capabilities.
pub fn check(dir: &Path, images: &[Image]) -> Result<()> {
    let mut failures = Vec::new();
    for image in images {
        let tag = tag(image);
        let archive = dir.join(format!("{}.tar", image.name));
        let read = match oci::read(&archive) {
            Ok(read) => read,
            Err(e) => {
                failures.push(format!("{tag}: {e:#} (build it with `cargo xtask images`)"));
                continue;
            }
        };
        let config = read.config.config().clone().unwrap_or_default();
        let user = config.user().clone().unwrap_or_default();
        let entrypoint = config.entrypoint().clone().unwrap_or_default();
        if read.reference != oci::full_name(&tag) {
            failures.push(format!("{tag}: the archive names it `{}`", read.reference));
            continue;
        }
        if !user_is_nonroot(&user) || user != NONROOT {
            failures.push(format!(
                "{tag}: runs as `{user}`, not as the non-root user {NONROOT}"
            ));
            continue;
        }
        match run_confined(dir, image, &read.layer, &entrypoint) {
            Ok(version) => println!(
                "{tag}: user {user}, entrypoint {entrypoint:?}, {:.1} MB, read-only root, no \
                 network, no capabilities: {version}",
                read.layer.len() as f64 / 1e6
            ),
            Err(e) => failures.push(format!("{tag}: {e:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("image check failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// Unpacks the layer and runs `<entrypoint> --version` in it: a mount and network namespace of
/// its own (`unshare`), the root bind-mounted read-only, `chroot` to it as the image's user
/// (which leaves no capabilities), no new privileges (`setpriv`). The tools are util-linux's
/// and coreutils'.
fn run_confined(dir: &Path, image: &Image, layer: &[u8], entrypoint: &[String]) -> Result<String> {
    if !crate::cluster::is_root() {
        bail!("checking an image runs its binary in a chroot: run as root");
    }
    let Some(binary) = entrypoint.first() else {
        bail!("no entrypoint");
    };
    let rootfs = dir.join("check").join(image.name);
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs).with_context(|| format!("clearing {}", rootfs.display()))?;
    }
    fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    oci::unpack(layer, &rootfs)?;
    let script = r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec setpriv --no-new-privs chroot --userspec="$2" "$1" "$3" --version"#;
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--fork", "--", "sh", "-c", script, "sh"])
        .arg(&rootfs)
        .args([NONROOT, binary.as_str()])
        .stdin(Stdio::null())
        .output()
        .context("running unshare (util-linux)")?;
    let _ = fs::remove_dir_all(&rootfs);
    if !out.status.success() {
        bail!(
            "`{binary} --version` failed on a read-only root: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let libs = shared_libraries(ldd).unwrap_or_default();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(shared_libraries("\tnot a dynamic executable\n").is_ok_and(|l| l.is_empty()));
        assert!(shared_libraries("\tlibfoo.so => not found\n").is_err());
    }

    #[test]
    fn nonroot_users() {
        assert!(user_is_nonroot("65532:65532"));
        assert!(user_is_nonroot("nonroot"));
        assert!(!user_is_nonroot(""));
        assert!(!user_is_nonroot("0"));
        assert!(!user_is_nonroot("root:root"));
        assert!(!user_is_nonroot("0:65532"));
    }

    /// The archives carry what each Dockerfile's prebuilt stage sets: its title, and the data
    /// directory its binary is told about.
    #[test]
    fn archives_take_labels_and_environment_from_the_dockerfiles() {
        let root = crate::workspace_root();
        for image in IMAGES {
            let text = fs::read_to_string(root.join(image.dockerfile)).unwrap_or_default();
            let meta = prebuilt_metadata(&text).unwrap_or_default();
            assert!(
                meta.labels
                    .iter()
                    .any(|(k, v)| k == "org.opencontainers.image.title" && v == image.name),
                "{}: {meta:?}",
                image.dockerfile
            );
            if let Some(data) = image.data_dir {
                assert!(
                    meta.env.iter().any(|(_, v)| v == &format!("/{data}")),
                    "{}: no variable names /{data}: {meta:?}",
                    image.dockerfile
                );
            }
        }
        let two = "FROM scratch AS prebuilt\nENV A=/x \\\n    B=\"y z\"\nLABEL t=\"q\"\nFROM other\nENV C=1\n";
        assert_eq!(
            prebuilt_metadata(two).ok(),
            Some(StageMetadata {
                labels: vec![("t".into(), "q".into())],
                env: vec![("A".into(), "/x".into()), ("B".into(), "y z".into())],
            })
        );
        assert!(prebuilt_metadata("FROM scratch\n").is_err());
        assert!(prebuilt_metadata("FROM scratch AS prebuilt\nENV A=\"open\n").is_err());
    }

    /// Every Dockerfile has both ways in and ends as the non-root user.
    #[test]
    fn dockerfiles_are_consistent() {
        let root = crate::workspace_root();
        for image in IMAGES {
            let text = fs::read_to_string(root.join(image.dockerfile)).unwrap_or_default();
            assert!(
                text.contains("ARG RUST_IMAGE=rust:1-bookworm"),
                "{}",
                image.dockerfile
            );
            assert!(
                text.contains(" AS prebuilt"),
                "{}: no prebuilt stage",
                image.dockerfile
            );
            assert!(
                text.contains(" AS builder"),
                "{}: no builder stage",
                image.dockerfile
            );
            assert_eq!(
                text.matches(&format!("USER {NONROOT}")).count(),
                2,
                "{}",
                image.dockerfile
            );
            assert!(
                text.contains(&format!("/usr/local/bin/{}", image.binary)),
                "{}",
                image.dockerfile
            );
        }
    }
}

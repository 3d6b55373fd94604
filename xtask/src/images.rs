//! `cargo xtask images`: the project's three container images, built without pulling anything.
//!
//! The Dockerfiles (`Dockerfile`, `engine-image/Dockerfile`, `console/Dockerfile`) have two
//! ways in:
//!
//! - the default (last) stage compiles the binary in a Rust builder image (`RUST_IMAGE`) and
//!   copies it onto a minimal runtime image (`RUNTIME_IMAGE`, distroless `cc`); that is what a
//!   machine with a registry builds with a plain `docker build`;
//! - the `prebuilt` stage copies a root filesystem from the build context onto `RUNTIME_IMAGE`.
//!   This command compiles the release binaries on the host, assembles for each image a root
//!   filesystem with the binary and exactly the shared libraries it links (from `ldd`), plus
//!   `/etc/passwd` with the non-root user 65532, CA certificates and an empty `/tmp`, and
//!   builds `--target prebuilt` with `RUNTIME_IMAGE=scratch`. Nothing is pulled.
//!
//! Every image is tagged `<name>:<workspace version>` and saved with `docker save` to
//! `target/images/<name>.tar`, an archive a cluster can import (`ctr -n k8s.io images import`,
//! `kind load image-archive`).
//!
//! When the Docker daemon is not reachable and `dockerd` is installed, the command starts it in
//! the background (log: `target/images/dockerd.log`); it keeps running afterwards.
//!
//! `cargo xtask images --check` inspects the images instead of building them: each must run as a
//! non-root user, and its binary must start (`--version`) with a read-only root filesystem, no
//! network and every capability dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

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
    /// Do not `docker save` the images into target/images/*.tar.
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
    ensure_docker(root)?;
    if args.check {
        return check(&images);
    }
    let out = root.join("target/images");
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
        let tag = tag(image);
        let mut build = docker();
        build
            .args([
                "build",
                "--target",
                "prebuilt",
                "--build-arg",
                "RUNTIME_IMAGE=scratch",
                "--tag",
                &tag,
                "--file",
            ])
            .arg(root.join(image.dockerfile))
            .arg(&context);
        eprintln!("xtask: {}", crate::describe(&build));
        let status = build.status().context("running docker build")?;
        if !status.success() {
            bail!("docker build of {tag} failed ({status})");
        }
        if !args.no_save {
            let archive = out.join(format!("{}.tar", image.name));
            let status = docker()
                .args(["save", "--output"])
                .arg(&archive)
                .arg(&tag)
                .status()
                .context("running docker save")?;
            if !status.success() {
                bail!("docker save of {tag} failed ({status})");
            }
            eprintln!("xtask: saved {tag} to {}", archive.display());
        }
        eprintln!(
            "xtask: {tag} built in {:.1}s",
            start.elapsed().as_secs_f64()
        );
    }
    check(&images)
}

fn docker() -> Command {
    Command::new(std::env::var_os("DOCKER").unwrap_or_else(|| "docker".into()))
}

fn docker_reachable() -> bool {
    docker()
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure a Docker daemon answers; starts `dockerd` in the background when it does not.
pub fn ensure_docker(root: &Path) -> Result<()> {
    if docker_reachable() {
        return Ok(());
    }
    if !crate::on_path("dockerd") {
        bail!(
            "the Docker daemon is not reachable and dockerd is not installed; install Docker \
             (e.g. `apt-get install docker.io`) or point DOCKER_HOST at a daemon"
        );
    }
    let dir = root.join("target/images");
    fs::create_dir_all(&dir)?;
    // overlay2 first; vfs works where overlay mounts are not allowed (nested containers).
    for driver in [None, Some("vfs")] {
        let log_path = dir.join("dockerd.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new("dockerd");
        // Its own process group: a Ctrl-C of this command does not stop the daemon.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if let Some(driver) = driver {
            cmd.args(["--storage-driver", driver]);
        }
        eprintln!(
            "xtask: the Docker daemon is not running; starting `{}` (log: {})",
            crate::describe(&cmd),
            log_path.display()
        );
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if docker_reachable() {
                eprintln!(
                    "xtask: dockerd is up (pid {}; it keeps running)",
                    child.id()
                );
                return Ok(());
            }
            if child.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("xtask: dockerd did not come up; see {}", log_path.display());
    }
    bail!("could not start dockerd (log: target/images/dockerd.log)")
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
    // Copied with --chown=65532:65532 by the Dockerfile (empty: only the ownership matters).
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

/// `cargo xtask images --check`: for each image, the configured user must be non-root, and the
/// binary must start as that user on a read-only root filesystem.
pub fn check(images: &[Image]) -> Result<()> {
    let mut failures = Vec::new();
    for image in images {
        let tag = tag(image);
        let out = docker()
            .args([
                "image",
                "inspect",
                "--format",
                "{{.Config.User}}|{{json .Config.Entrypoint}}|{{.Size}}",
                &tag,
            ])
            .output()
            .context("running docker image inspect")?;
        if !out.status.success() {
            failures.push(format!(
                "{tag}: not found ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut parts = text.splitn(3, '|');
        let user = parts.next().unwrap_or_default();
        let entrypoint = parts.next().unwrap_or_default();
        let size: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if !user_is_nonroot(user) || user != NONROOT {
            failures.push(format!(
                "{tag}: runs as `{user}`, not as the non-root user {NONROOT}"
            ));
            continue;
        }
        let run = docker()
            .args([
                "run",
                "--rm",
                "--read-only",
                "--network",
                "none",
                "--cap-drop",
                "ALL",
            ])
            .args(["--security-opt", "no-new-privileges", &tag, "--version"])
            .output()
            .context("running docker run")?;
        let version = String::from_utf8_lossy(&run.stdout).trim().to_owned();
        if !run.status.success() {
            failures.push(format!(
                "{tag}: `{} --version` failed on a read-only root: {}",
                image.binary,
                String::from_utf8_lossy(&run.stderr).trim()
            ));
            continue;
        }
        println!(
            "{tag}: user {user}, entrypoint {entrypoint}, {:.1} MB, read-only root ok: {version}",
            size as f64 / 1e6
        );
    }
    if !failures.is_empty() {
        bail!("image check failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
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

//! Prints the operator's CRDs as YAML, or writes one file per CRD with `--out-dir DIR`;
//! `--reference FILE` also writes the Markdown CRD reference generated from the same schemas.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let mut out_dir: Option<PathBuf> = None;
    let mut reference: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--out-dir" => &mut out_dir,
            "--reference" => &mut reference,
            _ => return usage(&format!("unknown argument {flag:?}")),
        };
        match args.next() {
            Some(value) => *slot = Some(PathBuf::from(value)),
            None => return usage(&format!("{flag} needs a value")),
        }
    }
    let crds = scan_engine_operator::crd::all();
    for (file, crd) in &crds {
        let yaml = match scan_engine_operator::crd::render_yaml(crd) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("cannot render {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match &out_dir {
            Some(dir) => {
                if let Err(code) = write(&dir.join(file), &yaml) {
                    return code;
                }
            }
            None if reference.is_none() => print!("---\n{yaml}"),
            None => {}
        }
    }
    if let Some(path) = reference {
        let crds: Vec<_> = crds.into_iter().map(|(_, crd)| crd).collect();
        let markdown = scan_engine_operator::crd::reference::render_markdown(&crds);
        if let Err(code) = write(&path, &markdown) {
            return code;
        }
    }
    ExitCode::SUCCESS
}

fn write(path: &std::path::Path, text: &str) -> Result<(), ExitCode> {
    std::fs::write(path, text).map_err(|e| {
        eprintln!("cannot write {}: {e}", path.display());
        ExitCode::FAILURE
    })?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("crdgen: {problem}\nusage: crdgen [--out-dir DIR] [--reference FILE]");
    ExitCode::from(2)
}

//! Prints the operator's CRDs as YAML, or writes one file per CRD with `--out-dir DIR`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out_dir = match args.as_slice() {
        [] => None,
        [flag, dir] if flag == "--out-dir" => Some(std::path::PathBuf::from(dir)),
        _ => {
            eprintln!("usage: crdgen [--out-dir DIR]");
            return ExitCode::from(2);
        }
    };
    for (file, crd) in scan_engine_operator::crd::all() {
        let yaml = match scan_engine_operator::crd::render_yaml(&crd) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("cannot render {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match &out_dir {
            Some(dir) => {
                let path = dir.join(file);
                if let Err(e) = std::fs::write(&path, yaml) {
                    eprintln!("cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("wrote {}", path.display());
            }
            None => print!("---\n{yaml}"),
        }
    }
    ExitCode::SUCCESS
}

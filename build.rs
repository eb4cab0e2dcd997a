//! Records the target triple, which `fileagent --version` prints (so an arm
//! build can be told from an x86_64 one at a glance).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=FILEAGENT_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}

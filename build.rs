//! Compiles the etcd v3 API and Phoenix's peer protocol with a vendored protoc, so a fresh
//! machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Services and methods not written yet answer Unimplemented instead of failing to compile.
        .generate_default_stubs(true)
        .compile_protos(
            &["proto/etcd/rpc.proto", "proto/etcd/v3lock.proto", "proto/etcd/v3election.proto", "proto/peer.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

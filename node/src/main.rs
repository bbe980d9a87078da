use clap::Parser;

/// jemalloc, not the C library's allocator, for the node's own (Rust) allocations: under load
/// a validator allocates and frees at a high rate from many threads (bodies, frames, maps), and
/// with glibc's allocator `malloc` and `free` were ≈ 10% of the executor's CPU and of the
/// blocking threads'. Measured in `docs/architecture.md` ("Decisions"). RocksDB's C++ keeps
/// the C library's allocator, which `memory::spawn_trimmer` still trims.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = tally_node::cli::Cli::parse();
    if let Err(e) = tally_node::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

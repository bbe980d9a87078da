use clap::Parser;

// Many small, short-lived allocations (transactions, messages, futures) from several threads:
// glibc's allocator spent ≈8% of a node's CPU under load, mimalloc a fraction of it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = tally_node::cli::Cli::parse();
    if let Err(e) = tally_node::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

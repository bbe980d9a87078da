use clap::Parser;

fn main() {
    let cli = tally_node::cli::Cli::parse();
    if let Err(e) = tally_node::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

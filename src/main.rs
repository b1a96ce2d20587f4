//! The `sluice` command line: parse arguments, load the configuration, start the server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// See `sluice::allocator` for why jemalloc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    about = "A MySQL-protocol proxy for MariaDB Galera clusters and their replicas"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file and exit: 0 when it is valid, 1 with the problem otherwise.
    CheckConfig {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Read a password from stdin (its first line) and print the verifier to put in a
    /// user's `password`: the proxy stores verifiers, never passwords.
    Verifier {
        /// The method the user logs in with.
        #[arg(long, value_enum, default_value_t = Method::CachingSha2Password)]
        method: Method,
    },
    /// Print the version.
    Version,
}

#[derive(Clone, Copy, clap::ValueEnum)]
#[clap(rename_all = "snake_case")]
enum Method {
    MysqlNativePassword,
    CachingSha2Password,
    Ed25519,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Verifier { method } => print_verifier(method),
        Command::CheckConfig { config } => match sluice::config::Config::load(&config) {
            Ok(_) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config: path } => {
            init_logging();
            // the runtime is sized by the configuration, so it is read before the runtime
            let config = match sluice::config::Config::load(&path) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("sluice: {e}");
                    return ExitCode::FAILURE;
                }
            };
            sluice::allocator::purge_in_background();
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if config.proxy.worker_threads > 0 {
                builder.worker_threads(config.proxy.worker_threads);
            }
            let runtime = match builder
                .thread_stack_size(sluice::allocator::WORKER_STACK_BYTES)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(sluice::server::run(&path, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("sluice: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs go to stderr; `RUST_LOG` (e.g. `sluice=debug`) picks the level, `info` by default.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // colours only for a terminal: files and journald get plain text
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// `sluice verifier`: the verifier of the password on stdin's first line (without its
/// line ending).
fn print_verifier(method: Method) -> ExitCode {
    use sluice::protocol::auth::{caching_sha2::Sha2Verifier, ed25519::Ed25519Key, PasswordHash};
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("no password on stdin (a user without password has password = \"\")");
        return ExitCode::FAILURE;
    }
    match method {
        Method::MysqlNativePassword => {
            println!("{}", PasswordHash::of_password(password.as_bytes()))
        }
        Method::CachingSha2Password => {
            println!("{}", Sha2Verifier::of_password(password.as_bytes()))
        }
        Method::Ed25519 => println!("{}", Ed25519Key::of_password(password.as_bytes())),
    }
    ExitCode::SUCCESS
}

//! The `tracer` binary: parse flags, set up logging, run one subcommand.
//! Exit codes: 0 success, 1 runtime error, 2 usage error (from clap).

use std::{ffi::OsString, io::Write as _, process::ExitCode, sync::Arc};

use tracer::{
    cli::{self, Cli, CliError, Command},
    daemon,
    shutdown::Shutdown,
    top, trace,
};

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match cli::parse_args(&argv) {
        Ok(cli) => cli,
        // Usage errors: clap prints its own message (and --help, --version).
        Err(CliError::Clap(e)) => e.exit(),
        Err(e @ CliError::Config(_)) => {
            eprintln!("tracer: error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_level);
    match run(cli, argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, outermost first.
            eprintln!("tracer: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, argv: Vec<OsString>) -> anyhow::Result<()> {
    match cli.command {
        // A terminal program: no async runtime and no signal handlers (the
        // terminal is in raw mode; q and Ctrl-C arrive as keys).
        Command::Top(args) => top::run(args.options()),
        // One task: the current thread is enough.
        Command::Trace(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async { trace::run(args.options(), Shutdown::install()?).await }),
        Command::Daemon(args) if args.check_config => {
            // The web config file is part of the configuration.
            daemon::reload::load_web_security(&args.options())?;
            print!("{}", args.effective.describe(&args.config));
            Ok(())
        }
        // Serves HTTP while it applies events: a second worker.
        Command::Daemon(args) => {
            let reload: daemon::reload::Reload = Arc::new(move || match cli::parse_args(&argv) {
                Ok(Cli {
                    command: Command::Daemon(a),
                    log_level,
                }) => Ok((a.options(), log_level)),
                Ok(_) => Err("the command line changed".to_owned()),
                Err(e) => Err(e.to_string()),
            });
            let options = args.options();
            let web = daemon::reload::load_web_security(&options)?;
            // Before any other thread: capabilities are per thread.
            let attached = daemon::startup::load_and_drop_privileges(&options)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let result = runtime.block_on(async {
                daemon::run(options, attached, web, Shutdown::install()?, Some(reload)).await
            });
            // Do not wait for blocking work still running (the /proc owner
            // scan takes seconds with a million sockets): a stop is prompt.
            runtime.shutdown_background();
            result
        }
    }
}

/// Logs go to stderr as `tracer: LEVEL message`; RUST_LOG, when set, wins.
/// The level is applied as the global maximum, so SIGHUP can change it.
fn init_logging(level: log::LevelFilter) {
    let mut builder = env_logger::Builder::new();
    let rust_log = std::env::var("RUST_LOG").ok();
    match &rust_log {
        Some(spec) => builder.parse_filters(spec),
        None => builder.filter_level(log::LevelFilter::Trace),
    };
    builder
        .format(|buf, record| {
            writeln!(
                buf,
                "tracer: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            )
        })
        .init();
    if rust_log.is_none() {
        log::set_max_level(level);
    }
}

use clap::Parser;

fn main() -> std::process::ExitCode {
    // `weftd install-cni ...` is its own small command; everything else is the daemon.
    if std::env::args_os().nth(1).is_some_and(|a| a == "install-cni") {
        return weft_agent::install_cni::main(std::env::args_os().skip(1));
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).format_timestamp_millis().init();
    // Before any thread exists: let flanneld's FLANNELD_* names stand in for ours.
    for (k, v) in weft_agent::cli::flanneld_env_fallbacks(|k| std::env::var(k).ok()) {
        std::env::set_var(k, v);
    }
    // Still one thread: out of a mount namespace that hides the host's
    // bpffs (`ip netns exec`), so pins outlive weftd and `status` sees them.
    match weft_agent::dataplane::bpffs::join_host_mount_ns() {
        Some(Ok(what)) => log::info!("{what}"),
        Some(Err(e)) => log::warn!("{e:#}"),
        None => {}
    }
    // Subcommands that act on a running node, then exit.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("log-level") {
        let a = weft_agent::log_level::LogLevelArgs::parse_from(&argv[1..]);
        return match weft_agent::log_level::run(&a) {
            Ok(msg) => {
                println!("{msg}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weftd log-level: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if argv.get(1).map(String::as_str) == Some("status") {
        let a = weft_agent::status::StatusArgs::parse_from(&argv[1..]);
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("weftd status: starting the runtime: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        return match rt.block_on(weft_agent::status::run(&a)) {
            Ok(out) => {
                println!("{out}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weftd status: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let args = weft_agent::cli::Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(weft_agent::agent::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

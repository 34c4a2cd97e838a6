use clap::Parser;
use tracing_subscriber::EnvFilter;
use wsgate::config::{Cli, LogFormat};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    let config = match cli.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wsgate: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(command) = cli.command.take() {
        return wsgate::commands::run(command, &config).await;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match config.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    match wsgate::serve(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! The `scriptbox` binary: parse arguments, wire Ctrl-C and SIGTERM to cancellation, run the CLI.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SCRIPTBOX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = scriptbox::cli::Cli::parse();
    if let Some(host) = scriptbox::cli::docker_host(&cli) {
        // SAFETY: no other thread exists yet (the runtime is built below), so nothing can
        // read the environment while it changes.
        unsafe { std::env::set_var("DOCKER_HOST", host) };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            // Ctrl-C or SIGTERM cancels the running execution (its container is killed and
            // removed); for `serve`, it starts the graceful shutdown.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminated = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminated => {}
            }
            on_signal.cancel();
        });
        scriptbox::cli::run(cli, shutdown).await
    })
}

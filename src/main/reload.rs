//! `switchyard reload`: asks a running proxy to re-read its config file; `switchyard
//! hold` and `release`: an operator's hold of a pool.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use switchyard::admin::client;

use super::EX_UNAVAILABLE;

/// `switchyard reload`.
pub fn reload(admin: SocketAddr, token: Option<&str>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    match runtime.block_on(client::post(admin, "/config/reload", token, Duration::from_secs(65))) {
        Ok((200, body)) => {
            let summary = serde_json::from_str::<serde_json::Value>(&body)
                .map(|report| client::render_reload(&report))
                .unwrap_or(body);
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            eprint!("switchyard reload: refused ({code}): {body}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("switchyard reload: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// `switchyard hold` / `release` / `switchover`: posts `path` and prints the answer.
pub fn pool_verb(admin: SocketAddr, token: Option<&str>, path: &str) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    // A hold with a drain answers once the drain is over: up to the longest hold.
    let limit = if path.contains("drain=") || path.contains("/switchover") {
        switchyard::admin::serve::LONG_REQUEST_TIMEOUT + Duration::from_secs(5)
    } else {
        switchyard::admin::serve::REQUEST_TIMEOUT + Duration::from_secs(5)
    };
    match runtime.block_on(client::post(admin, path, token, limit)) {
        Ok((200, body)) => {
            println!("{}", body.trim_end());
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            eprint!("switchyard: refused ({code}): {body}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

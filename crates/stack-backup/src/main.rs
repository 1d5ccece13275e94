//! `stack-backup`: the command line. Parses arguments, calls the library,
//! renders results for people (tables, progress) or scripts (`--json`).

mod cli;
mod commands;
mod output;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let out = output::Output::new(&cli);
    out.init_logging();
    match commands::run(&cli, &out) {
        Ok(code) => std::process::ExitCode::from(code.code()),
        Err(err) => {
            let code = commands::exit_code_of(&err);
            out.error(&err, code);
            std::process::ExitCode::from(code.code())
        }
    }
}

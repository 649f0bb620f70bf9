use std::process::ExitCode;

fn main() -> ExitCode {
    tfconv::cli::main()
}

fn main() -> std::process::ExitCode {
    ravenwatch::cli::main()
}

fn main() -> std::process::ExitCode {
    fb_openchannel::cli::main()
}

use fb_openchannel::allocator::Allocator;

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

fn main() -> std::process::ExitCode {
    Allocator::tune();
    fb_openchannel::cli::main()
}

/// mimalloc: the run allocates and frees many small buffers per batch, on
/// several threads; glibc's malloc spent a third of the run's time there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ravenwatch::cli::main()
}

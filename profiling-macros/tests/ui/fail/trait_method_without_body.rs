use profiling_core::profiled;

trait Service {
    #[profiled]
    fn call(&self) -> u8;
}

fn main() {}

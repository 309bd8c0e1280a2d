//! The `broadcast` benchmark.

pub fn main() -> anyhow::Result<()> {
    anyhow::bail!("the broadcast benchmark is not written yet")
}
